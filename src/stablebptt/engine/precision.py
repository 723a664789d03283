"""The float64 switch: 64-bit JAX for the whole library (float32 stays the default).

JAX decides process-wide whether 64-bit arrays exist; everything in
stablebptt then follows the dtype of the data and networks it is given
(``RunConfig(dtype="float64")``, ``make_policy(key, jnp.float64)``, ...).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import jax

__all__ = ["set_float64", "float64"]


def set_float64(enabled: bool = True) -> None:
    """Turn 64-bit JAX on (or off) for the rest of the process."""
    jax.config.update("jax_enable_x64", bool(enabled))


@contextlib.contextmanager
def float64(enabled: bool = True) -> Iterator[None]:
    """Inside the block, 64-bit JAX is on (or off); the previous setting comes back afterwards."""
    before = jax.config.read("jax_enable_x64")
    set_float64(enabled)
    try:
        yield
    finally:
        set_float64(before)
