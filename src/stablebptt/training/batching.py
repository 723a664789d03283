"""Mini-batches in a fixed order (the paper does not shuffle)."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import validate
from ..engine.host import array_module

__all__ = ["batch_count", "sample_count", "split_batches"]


def batch_count(n_samples: int, batch_size: int) -> int:
    """Number of mini-batches; raises a one-line ValueError for impossible sizes."""
    validate.positive_int("batch_size", batch_size)
    if n_samples < 1:
        raise ValueError("the training set is empty; give at least one training sample")
    if batch_size > n_samples:
        raise ValueError(
            f"batch size {batch_size} is larger than the training set ({n_samples} samples); "
            "use a smaller batch size or more training samples"
        )
    if n_samples % batch_size:
        raise ValueError(
            f"the training set ({n_samples} samples) does not split into batches of {batch_size}; "
            "choose sizes where the batch size divides the number of training samples"
        )
    return n_samples // batch_size


def sample_count(x: Any, batched: Sequence[bool] | None = None, name: str = "set") -> int:
    """The number of samples of the states ``x``: the common length of axis 0 of every leaf that has a
    sample axis (``batched``: a flag per leaf, as :func:`stablebptt.engine.problem.sample_axes` gives; None: every leaf).

    A one-line ValueError names the first leaf (its path, shape and dtype) that has no axis 0 or
    another length, and the fix.
    """
    paths = jax.tree_util.tree_flatten_with_path(x)[0]
    flags = [True] * len(paths) if batched is None else list(batched)
    leaves = [(jax.tree_util.keystr(path) or "the state", leaf) for (path, leaf), flag in zip(paths, flags, strict=True) if flag]
    if not leaves:
        raise ValueError(f"no leaf of the {name} has a sample axis; at least one leaf must be (samples, ...)")
    fix = "declare leaves shared by every sample with ControlProblem(state_axes=...) or sb.PerSample(module, in_axes=...)"
    n = None
    for path, leaf in leaves:
        shape = tuple(jnp.shape(leaf))
        if not shape or (n is not None and shape[0] != n):
            dtype = getattr(leaf, "dtype", type(leaf).__name__)
            expected = "a sample axis" if not shape else f"{n} samples on axis 0"
            raise ValueError(f"leaf {path} of the {name} has shape {shape} and dtype {dtype}, not {expected}; {fix}")
        n = shape[0] if n is None else n
    return int(n)


def split_batches(x: Any, batch_size: int, batched: Sequence[bool] | None = None) -> Any:
    """``(n, ...)`` → ``(n // batch_size, batch_size, ...)`` for every leaf with a sample axis, order kept;
    a leaf without one (its ``batched`` flag False) is repeated for each batch, ``(n // batch_size, ...)``.

    NumPy leaves stay NumPy (laid out on the host, no program compiled); others are JAX operations.
    """
    k = batch_count(sample_count(x, batched), batch_size)
    leaves, treedef = jax.tree.flatten(x)
    flags = [True] * len(leaves) if batched is None else list(batched)

    def split(a, flag):
        xp = array_module(a)
        return xp.reshape(a, (k, batch_size) + tuple(a.shape[1:])) if flag else xp.broadcast_to(a, (k, *np.shape(a)))

    return jax.tree.unflatten(treedef, [split(a, flag) for a, flag in zip(leaves, flags, strict=True)])
