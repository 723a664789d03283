"""Shared fixtures: reference data (the authors' TensorFlow outputs), float64 switches, precision-aware tolerances."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import stablebptt as sb

DATA = Path(__file__).parent / "data"


def reference(name: str) -> dict:
    """Arrays of ``tests/data/<name>.npz`` (copied from the project's shared reference vectors)."""
    with np.load(DATA / f"{name}.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture
def x64():
    """Run one test with 64-bit JAX; restores the previous setting."""
    with sb.float64():
        yield


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Run a numerical test in each precision (float64 with 64-bit JAX turned on); yields the dtype."""
    with sb.float64(request.param == "float64"):
        yield jnp.dtype(request.param)


def tol(dtype, float32: float, float64: float) -> float:
    """The tolerance for ``dtype``: float64 results are held to a far tighter bound."""
    return float64 if jnp.dtype(dtype) == jnp.float64 else float32
