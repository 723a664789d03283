"""NumPy or JAX for laying out arrays: NumPy when every operand is already on the host, so that stacking,
splitting or joining inputs compiles no program; JAX otherwise (device arrays, tracers, typed PRNG keys)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["array_module", "to_host"]


def array_module(*arrays: Any) -> ModuleType:
    """``numpy`` if every one of ``arrays`` is a NumPy array or a Python or NumPy scalar, else ``jax.numpy``."""
    return np if all(isinstance(a, (np.ndarray, np.generic, bool, int, float)) for a in arrays) else jnp


def to_host(a: Any) -> Any:
    """``a`` as a NumPy array; typed PRNG keys, which have no NumPy form, stay JAX arrays."""
    if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
        return a
    return np.asarray(a)
