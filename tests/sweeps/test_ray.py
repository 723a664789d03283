"""Sweeps on Ray: the same runs and numbers as locally, resuming, dying workers, Ray missing.

A Ray head runs in a subprocess for the whole module. The command line
connects to it by its address from another process, as a driver on another
machine would; the other tests drive it from this process.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import stablebptt.sweeps.groups as groups_module
import stablebptt.sweeps.run as sweep_module
from stablebptt.cli import main
from stablebptt.sweeps.ray_backend import RayBackend
from stablebptt.runs.rundir import read_summary, trained_numbers
from stablebptt.sweeps.groups import GroupsFailedError
from stablebptt.sweeps.spec import SweepSpec, finished_runs
from stablebptt.sweeps.run import run_sweep

pytestmark = pytest.mark.long  # minutes of compiling: scheduled first (tests/conftest.py)

# two groups (R, C) of two runs, grouped by method (GROUPS); float64, so that the workers must switch it on
SPEC = SweepSpec(
    experiment="cartpole", preset="quick", epochs=2, seeds=(42,), n_train=16, n_test=8,
    levels=(1,), methods=("R", "C"), clips=("none", "norm"), task_options={"n_steps": 10}, dtype="float64",
)  # fmt: skip

GROUPS = {"group_by": "method"}

HEAD = (
    "import sys, ray\n"
    "ray.init(num_cpus=2, include_dashboard=False, logging_level='WARNING')\n"
    "print(ray.get_runtime_context().gcs_address, flush=True)\n"
    "sys.stdin.read()\n"  # until the tests close stdin
    "ray.shutdown()\n"
)


CLI_WITH_SPEC = (
    "import json, sys\n"
    "import ray\n"
    "from stablebptt.cli import main\n"
    "from stablebptt.sweeps.run import SweepSpec\n"
    "spec = SweepSpec.from_dict(json.loads(sys.argv[1]))\n"
    "SweepSpec.from_preset = classmethod(lambda cls, experiment, preset='quick', **sizes: spec)  # the tiny grid\n"
    "init = ray.init\n"
    "ray.init = lambda **kwargs: print('address', kwargs['address']) or init(**kwargs)\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


class Head:
    """A Ray head in a subprocess; its address is read when first needed (it starts meanwhile)."""

    def __init__(self, process: subprocess.Popen, env: dict):
        self.process, self.env = process, env

    @functools.cached_property
    def address(self) -> str:
        line = self.process.stdout.readline().strip()
        assert line, "the Ray head did not start"
        return line


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A local Ray cluster of 2 CPUs. Its processes and the command lines below share a JAX
    compilation cache in ``env``, only to save time."""
    import ray  # noqa: F401  (the test extra installs it: a missing Ray fails here, it is not skipped)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    env.update(
        JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax-cache")),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
    )
    process = subprocess.Popen([sys.executable, "-c", HEAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        yield Head(process, env)
    finally:
        process.stdin.close()  # the head shuts its Ray instance down and exits
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def connected(head):
    """This process as a driver of the head's cluster (its workers stay warm between tests)."""
    import ray

    ray.init(address=head.address, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()


def reproduce(env: dict, out: Path, *options: str) -> subprocess.CompletedProcess:
    """``stablebptt reproduce cartpole --out OUT --x64 --quiet --group-by method OPTIONS`` on SPEC, in a new process."""
    argv = [sys.executable, "-c", CLI_WITH_SPEC, json.dumps(SPEC.to_dict()), "reproduce", "cartpole", "--out", str(out), "--x64", "--quiet", "--group-by", "method", *options]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def reference(head, tmp_path_factory):
    """The local sweep of SPEC from the command line (trained while the head starts)."""
    out = tmp_path_factory.mktemp("local") / "sweep"
    done = reproduce(head.env, out)
    assert done.returncode == 0, done.stderr
    assert "address" not in done.stdout  # no Ray
    return out


def metrics(run_dir: Path) -> list[dict]:
    """A run's metrics without the wall times (NaN as None, so that equal means equal)."""
    return trained_numbers(run_dir / "metrics.csv")


def results(out: Path, runs=None) -> dict:
    """Per run: status, metrics and the weights' bytes."""
    runs = SPEC.grid() if runs is None else runs
    return {run.path: (read_summary(out / run.path)["status"], metrics(out / run.path), (out / run.path / "params.eqx").read_bytes()) for run in runs}


def run_dirs(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in (out / "runs").glob("*/*"))


def leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*") if p.name.endswith((".partial", ".tmp"))]


def dying(method: str, log: Path, times: int | None):
    """A ``before_group`` hook that kills the worker of ``method``'s group ``times`` times (None: always)."""

    def before_group(group):
        deaths = log.read_text().count("died") if log.exists() else 0
        if group[0].method == method and (times is None or deaths < times):
            with open(log, "a") as f:
                f.write("died\n")
            os._exit(1)

    return before_group


def test_ray_sweep_from_the_cli_equals_the_local_sweep(head, reference, tmp_path):
    out = tmp_path / "ray"
    done = reproduce(head.env, out, "--backend", "ray", "--address", head.address)
    assert done.returncode == 0, done.stderr
    assert f"address {head.address}\n" in done.stdout  # a driver of the running cluster, not a new local instance
    assert run_dirs(out) == run_dirs(reference) == sorted(run.path for run in SPEC.grid())
    assert results(out) == results(reference)
    for name in ("sweep.json", "table.csv"):
        assert (out / name).read_text() == (reference / name).read_text()
    assert (out / "figure.png").is_file()
    assert leftovers(out) == []
    summary = json.loads((out / SPEC.grid()[0].path / "summary.json").read_text())
    assert summary["batch_runs"] == 2


def with_r_finished(reference: Path, out: Path) -> Path:
    """``out`` as a sweep of SPEC that has finished the R group (copied from the local sweep)."""
    out.mkdir()
    shutil.copy(reference / "sweep.json", out / "sweep.json")
    for run in SPEC.grid():
        if run.method == "R":
            shutil.copytree(reference / run.path, out / run.path)
    return out


def test_an_interrupted_sweep_resumes_on_ray_without_retraining(connected, reference, tmp_path, monkeypatch, x64):
    out = with_r_finished(reference, tmp_path / "resumed")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt  # as Ctrl-C when the C group starts

    monkeypatch.setattr(groups_module, "train_batched", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(SPEC, out, progress=False, **GROUPS)
    monkeypatch.undo()
    finished = finished_runs(SPEC, out)
    assert [run.method for run in finished] == ["R", "R"] and len(leftovers(out)) == 2
    files = [p for run in finished for p in (out / run.path).iterdir()]
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}

    trained = run_sweep(SPEC, out, progress=False, **GROUPS, backend=RayBackend())
    assert [run.method for run in trained] == ["C", "C"]  # the finished group is not trained again
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files} == stamps  # nor rewritten
    assert run_dirs(out) == run_dirs(reference) and leftovers(out) == []
    assert results(out) == results(reference)


def test_diverged_runs_are_recorded_as_locally(connected, tmp_path, x64):
    # before the tests that kill workers: it reuses the warm ones (19 s after them, 4 s before)
    spec = dataclasses.replace(SPEC, methods=("R",), learning_rate=1e30)  # one group; the loss blows up
    run_sweep(spec, tmp_path / "local", progress=False, **GROUPS)
    run_sweep(spec, tmp_path / "ray", progress=False, **GROUPS, backend=RayBackend())
    for run in spec.grid():
        local, remote = tmp_path / "local" / run.path, tmp_path / "ray" / run.path
        assert read_summary(remote)["status"] == read_summary(local)["status"] == "diverged"
        assert read_summary(remote)["diverged_at_epoch"] == read_summary(local)["diverged_at_epoch"]
        assert sorted(p.name for p in remote.iterdir()) == sorted(p.name for p in local.iterdir())  # no params.eqx
        assert metrics(remote) == metrics(local)


def test_a_group_whose_worker_dies_is_retried(connected, reference, tmp_path):
    out, log = with_r_finished(reference, tmp_path / "retried"), tmp_path / "deaths.log"
    backend = RayBackend(max_retries=1, before_group=dying("C", log, times=1))
    trained = run_sweep(SPEC, out, progress=False, **GROUPS, backend=backend)
    assert log.read_text() == "died\n"  # the first attempt at C's group died
    assert [run.method for run in trained] == ["C", "C"]
    assert run_dirs(out) == run_dirs(reference) and leftovers(out) == []
    assert results(out) == results(reference)


def test_a_group_whose_worker_always_dies_is_reported_after_the_others_are_written(connected, reference, tmp_path):
    out, log = tmp_path / "failed", tmp_path / "deaths.log"
    backend = RayBackend(max_retries=1, before_group=dying("C", log, times=None))
    with pytest.raises(GroupsFailedError) as failed:
        run_sweep(SPEC, out, progress=False, **GROUPS, backend=backend)
    assert failed.value.failures == [("poles1 C", "its worker died on each of 2 attempts")]
    assert "poles1 C: its worker died on each of 2 attempts" in str(failed.value)
    assert log.read_text() == "died\n" * 2  # the first attempt and one retry
    r_runs = [run for run in SPEC.grid() if run.method == "R"]
    assert finished_runs(SPEC, out) == r_runs
    assert run_dirs(out) == sorted(run.path for run in r_runs) and leftovers(out) == []
    assert results(out, r_runs) == results(reference, r_runs)


def test_the_cli_reports_failed_groups_in_one_line(tmp_path, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise GroupsFailedError([("poles1 C", "its worker died on each of 4 attempts")])

    monkeypatch.setattr(sweep_module, "run_sweep", fail)
    code = main(["reproduce", "cartpole", "--out", str(tmp_path / "x"), "--quiet"])
    assert code == 1
    assert capsys.readouterr().err == (
        "stablebptt: error: 1 group(s) of runs failed and were not written (poles1 C: its worker died on each of 4 attempts); "
        "the other groups' runs are in place: run the same command again to retry the failed ones\n"
    )


def test_ray_backend_without_ray_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    out = tmp_path / "sweep"
    code = main(["reproduce", "cartpole", "--out", str(out), "--backend", "ray", "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == "stablebptt: error: the ray backend needs Ray, which is not installed: pip install '.[ray]'\n"
    assert not out.exists()
    with pytest.raises(ImportError, match=r"pip install '\.\[ray\]'"):
        run_sweep(SPEC, tmp_path / "library", progress=False, **GROUPS, backend="ray")


def test_address_needs_the_ray_backend(tmp_path, capsys):
    code = main(["reproduce", "cartpole", "--out", str(tmp_path / "x"), "--address", "auto", "--quiet"])
    assert code == 2
    assert capsys.readouterr().err == "stablebptt: error: --address names a Ray cluster; add --backend ray\n"
    code = main(["reproduce", "toy", "--out", str(tmp_path / "toy"), "--backend", "ray"])
    assert code == 2
    assert "reproduce toy takes no --backend" in capsys.readouterr().err
