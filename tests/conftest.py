"""Shared fixtures: reference data (the authors' TensorFlow outputs) and a float64 switch."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

DATA = Path(__file__).parent / "data"


def reference(name: str) -> dict:
    """Arrays of ``tests/data/<name>.npz`` (copied from the project's shared reference vectors)."""
    with np.load(DATA / f"{name}.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture
def x64():
    """Run one test in float64; restores the previous setting."""
    before = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)
