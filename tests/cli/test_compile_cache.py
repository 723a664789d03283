"""The command line keeps compiled programs on disk: a second run of a command compiles nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.long  # a quarter of a minute or more: scheduled first (tests/conftest.py)

COUNT = (
    "import json, sys, jax\n"
    "from stablebptt.cli import main\n"
    "seen = {'hits': 0, 'misses': 0}\n"
    "def listen(event, **kwargs):\n"
    "    if event == '/jax/compilation_cache/cache_hits': seen['hits'] += 1\n"
    "    if event == '/jax/compilation_cache/cache_misses': seen['misses'] += 1\n"
    "jax.monitoring.register_event_listener(listen)\n"
    "code = main(sys.argv[1:])\n"
    "print(json.dumps({'code': code, **seen}))\n"
)


def run(tmp_path, out: str, *options: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}  # the tests' own cache is not the CLI's
    env.update(STABLEBPTT_COMPILE_CACHE=str(tmp_path / "cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    argv = [*options, "train", "cartpole", "--poles", "1", "--steps", "10", "--epochs", "1", "--n-train", "8", "--n-test", "8"]
    done = subprocess.run([sys.executable, "-c", COUNT, *argv, "--quiet", "--out", str(tmp_path / out)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_run_compiles_nothing(tmp_path):
    first = run(tmp_path, "first")
    assert first["code"] == 0 and first["hits"] == 0 and first["misses"] > 0
    assert any((tmp_path / "cache").iterdir())
    second = run(tmp_path, "second")
    assert second["code"] == 0 and second["misses"] == 0 and second["hits"] == first["misses"]
    off = run(tmp_path, "off", "--no-compile-cache")
    assert off["code"] == 0 and off["hits"] == off["misses"] == 0  # the cache is not consulted at all
