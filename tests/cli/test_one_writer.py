"""Two identical train commands on one folder: exactly one trains, the other exits 2 in one line, and the run equals a lone run's."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from stablebptt.runs import lock, rundir

pytestmark = pytest.mark.long  # a quarter of a minute or more: scheduled first (tests/conftest.py)

TRAIN = ["train", "cartpole", "--poles", "1", "--method", "R", "--steps", "10", "--epochs", "40", "--n-train", "32", "--n-test", "16", "--quiet"]


MAIN = "import sys; from stablebptt.cli import main; sys.exit(main(sys.argv[1:]))"
# The first writer pauses after its second epoch until the test lets it go, so that the second surely meets it.
PAUSE = """
import os, time
import stablebptt.runs.single as single
original = single.RunWriter.epoch
def epoch(self, row):
    original(self, row)
    while row["epoch"] == 2 and not os.path.exists(os.environ["GO"]):
        time.sleep(0.05)
single.RunWriter.epoch = epoch
"""


def command(out, code=MAIN):
    return [sys.executable, "-c", code, *TRAIN, "--out", str(out)]


def test_two_concurrent_writers_one_trains_the_other_is_refused(tmp_path):
    lone = tmp_path / "lone"
    assert subprocess.run(command(lone), capture_output=True, timeout=600).returncode == 0
    out = tmp_path / "run"
    go = tmp_path / "go"
    first = subprocess.Popen(command(out, PAUSE + MAIN), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "GO": str(go)})
    deadline = time.monotonic() + 300
    while not (rundir.partial_path(out) / rundir.METRICS).exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None and lock.lock_path(out).exists(), "the first writer is to be training"
    second = subprocess.run(command(out), capture_output=True, text=True, timeout=600)
    go.touch()
    first_err = first.communicate(timeout=600)[1]
    assert first.returncode == 0, first_err
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 2 and len(lines) == 1, second.stderr
    assert f"pid {first.pid}" in lines[0] and "another stablebptt process" in lines[0]
    assert rundir.run_gaps(out) == []
    assert (out / rundir.PARAMS).read_bytes() == (lone / rundir.PARAMS).read_bytes()
    assert rundir.trained_numbers(out / rundir.METRICS) == rundir.trained_numbers(lone / rundir.METRICS)  # wall times aside
    assert not lock.lock_path(out).exists()
