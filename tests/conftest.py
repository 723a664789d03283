"""Shared fixtures: reference data (the authors' TensorFlow outputs), float64 switches, precision-aware tolerances."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# One disk cache of compiled programs for the whole test run (every xdist worker and every CLI
# subprocess inherits it): many tests build the same small programs from fresh closures, which
# JAX's in-memory cache cannot share. Set before JAX is imported; the run's own folder, removed at its end.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="stablebptt-test-jax-cache-")
    os.environ["STABLEBPTT_TEST_OWNS_JAX_CACHE"] = str(os.getpid())
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
# The tests' programs are small and run briefly, so compiling dominates. LLVM's lowest optimisation
# level (XLA's graph optimisations, fusion included, still run) compiles them ~25 % faster; XLA's
# older loop emitters instead of its MLIR fusion emitters, about 30 % faster again on the test files.
for flag in ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false"):
    if flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()

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


def pytest_collection_modifyitems(config, items):
    """Modules marked ``long`` first (stable otherwise), so that the two workers do not end on them."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


def pytest_unconfigure(config):
    if os.environ.get("STABLEBPTT_TEST_OWNS_JAX_CACHE") == str(os.getpid()):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
