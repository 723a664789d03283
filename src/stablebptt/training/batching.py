"""Mini-batches in a fixed order (the paper does not shuffle)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["batch_count", "split_batches"]


def batch_count(n_samples: int, batch_size: int) -> int:
    """Number of mini-batches; raises a one-line ValueError for impossible sizes."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size {batch_size!r} must be a positive integer")
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


def split_batches(x: Any, batch_size: int) -> Any:
    """``(n, ...)`` → ``(n // batch_size, batch_size, ...)`` for every leaf, order kept."""
    n = int(jax.tree.leaves(x)[0].shape[0])
    k = batch_count(n, batch_size)
    return jax.tree.map(lambda a: jnp.reshape(a, (k, batch_size) + tuple(a.shape[1:])), x)
