"""Helpers shared by tests."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np


def dense_leaves(net):
    """Kernels and biases of a DenseNet in the reference order (k0, b0, k1, b1, ...)."""
    return [a for layer in net.layers for a in (layer.kernel, layer.bias)]


def with_reference_weights(net, ref: dict, prefix: str = "w0_"):
    """``net`` with its weights replaced by ``ref[prefix + '0'] ...`` (Keras layout)."""
    arrays = [jnp.asarray(ref[f"{prefix}{i}"]) for i in range(len(dense_leaves(net)))]
    return eqx.tree_at(dense_leaves, net, arrays)


def max_rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))
