"""Every CLI command against bad places and damaged files: exit 2, one line, no traceback, nothing changed."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from stablebptt.cli import main

FAST = ["--epochs", "1", "--n-train", "8", "--n-test", "8", "--steps", "5", "--quiet"]
SWEEP = ["--epochs", "1", "--seeds", "1", "--levels", "1", "--methods", "R", "--clips", "none", "--quiet"]
BENCH = ["bench", "--tasks", "cartpole", "--methods", "R", "--epochs", "1"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("good") / "run"
    assert main(["train", "cartpole", "--poles", "1", *FAST, "--out", str(out)]) == 0
    return out


def denied_folder(root: Path) -> Path:
    """An existing folder that cannot be written: read-only by mode, or (as root, whom modes do not stop) /sys."""
    if os.geteuid() != 0:
        locked = root / "locked"
        locked.mkdir(exist_ok=True)
        locked.chmod(0o500)
        return locked
    with pytest.raises(OSError):
        (Path("/sys") / "stablebptt-probe").mkdir()
    return Path("/sys")


def denied_place(root: Path) -> str:
    return str(denied_folder(root) / "stablebptt-out")


def damage(how: str):
    def apply(run: Path) -> None:
        params = run / "params.eqx"
        data = params.read_bytes()
        if how == "truncated":
            params.write_bytes(data[: len(data) // 2])
        elif how == "empty":
            params.write_bytes(b"")
        elif how == "random":
            params.write_bytes(os.urandom(len(data)))
        elif how == "extra bytes":
            params.write_bytes(data + b"\0\0")
        elif how == "other shape":  # the params.eqx of a 2-pole controller (other input size)
            other = run.parent / "other"
            assert main(["train", "cartpole", "--poles", "2", *FAST, "--out", str(other)]) == 0
            shutil.copy(other / "params.eqx", params)
            shutil.rmtree(other)
        elif how == "params is a folder":
            params.unlink()
            params.mkdir()
        elif how == "config damaged":
            (run / "config.json").write_text("{")
        elif how == "config missing":
            (run / "config.json").unlink()
        elif how == "metrics damaged":
            (run / "metrics.csv").write_text("epoch,test_loss\n1")
        elif how == "metrics missing":
            (run / "metrics.csv").unlink()

    return apply


DAMAGES = ["truncated", "empty", "random", "extra bytes", "other shape", "params is a folder",
           "config damaged", "config missing", "metrics damaged", "metrics missing"]  # fmt: skip

# (name, argv builder) — {file}: an existing text file, {dir}: an existing folder, {denied}: an unwritable place,
# {run}: a damaged copy of a finished run, {gif}: a GIF path
PLACES = [
    ("train --out under a file", ["train", "cartpole", *FAST, "--out", "{file}/run"]),
    ("train --out is a file", ["train", "cartpole", *FAST, "--out", "{file}"]),
    ("train --out not writable", ["train", "cartpole", *FAST, "--out", "{denied}"]),
    ("compare --out under a file", ["compare", "cartpole", *FAST, "--methods", "R", "--out", "{file}/cmp"]),
    ("compare --out not writable", ["compare", "cartpole", *FAST, "--methods", "R", "--out", "{denied}"]),
    ("reproduce toy --out is a file", ["reproduce", "toy", "--out", "{file}"]),
    ("reproduce toy --out not writable", ["reproduce", "toy", "--out", "{denied}"]),
    ("reproduce lq --out under a file", ["reproduce", "lq", "--epochs", "1", "--out", "{file}/lq"]),
    ("reproduce sweep --out under a file", ["reproduce", "cartpole", *SWEEP, "--out", "{file}/sweep"]),
    ("reproduce sweep --out not writable", ["reproduce", "cartpole", *SWEEP, "--out", "{denied}"]),
    ("reproduce sweep --out holds other files", ["reproduce", "cartpole", *SWEEP, "--out", "{dir}"]),
    ("bench --out under a file", [*BENCH, "--out", "{file}/bench.md"]),
    ("bench --out is a folder", [*BENCH, "--out", "{dir}"]),
    ("bench --out not writable", [*BENCH, "--out", "{denied}"]),
    ("animate --out is a folder", ["animate", "{good}", "--out", "{dir}"]),
    ("animate --out is not a GIF", ["animate", "{good}", "--out", "{file}"]),
    ("animate --out under a file", ["animate", "{good}", "--out", "{file}/a.gif"]),
    ("evaluate a file", ["evaluate", "{file}"]),
    ("evaluate a missing folder", ["evaluate", "{dir}/missing"]),
    ("report a folder without settings", ["report", "{dir}"]),
    *[(f"evaluate, {how}", ["evaluate", "{run:" + how + "}"]) for how in DAMAGES],
    *[(f"animate, {how}", ["animate", "{run:" + how + "}", "--out", "{dir}/a.gif"]) for how in DAMAGES[:6]],
]


def snapshot(root: Path) -> dict:
    """Every file's bytes and every folder under ``root``."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else "dir") for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("argv", [a for _, a in PLACES], ids=[n for n, _ in PLACES])
def test_bad_place_or_damaged_file_is_one_line_and_changes_nothing(argv, finished_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("a user's file\n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "keep.txt").write_text("keep me\n")
    values = {"file": str(tmp_path / "notes.txt"), "dir": str(tmp_path / "folder"), "good": str(finished_run)}
    resolved = []
    for arg in argv:
        if arg == "{denied}":
            arg = denied_place(tmp_path)
        elif arg.startswith("{run:"):
            run = tmp_path / "run"
            shutil.copytree(finished_run, run)
            damage(arg[5:-1])(run)
            arg = str(run)
        resolved.append(arg.format(**values))
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = main(resolved)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("stablebptt: error:"), err
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_an_existing_gif_is_replaced_and_a_default_out_in_an_unwritable_folder_is_one_line(finished_run, tmp_path, capsys, monkeypatch):
    gif = tmp_path / "old.gif"
    gif.write_bytes(b"GIF89a old")
    assert main(["animate", str(finished_run), "--out", str(gif)]) == 0
    assert gif.read_bytes()[:6] == b"GIF89a" and gif.stat().st_size > 100
    monkeypatch.chdir(denied_folder(tmp_path))
    capsys.readouterr()
    assert main(["train", "cartpole", *FAST]) == 2  # the default --out is runs/... under the working folder
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot be written" in err


BIG = "1000000000000"  # 1e12 as an integer: the command line reads "1e12" as no integer at all (a row below)
OUT = ["--quiet", "--out", "{out}"]
# (name, argv, what the one line must name) — {out}: a path that must not exist afterwards, {config}: a config.json
SIZES = [
    ("--seed beyond 64 bits", ["train", "cartpole", "--seed", "99999999999999999999", *OUT], "argument --seed: 99999999999999999999"),
    ("--seed beyond 64 bits, diagnose", ["diagnose", "cartpole", "--seed", "99999999999999999999", "--out", "{out}"], "argument --seed"),
    ("--epochs 2**70", ["train", "cartpole", "--epochs", str(2**70), *OUT], "argument --epochs"),
    ("--n-train 1e12 as written", ["train", "cartpole", "--n-train", "1e12", *OUT], "argument --n-train: '1e12' is not an integer"),
    ("--n-train 1e12", ["train", "cartpole", "--n-train", BIG, *OUT], "n_train=1000000000000"),
    ("--n-test 1e12", ["train", "cartpole", "--n-test", BIG, *OUT], "n_test=1000000000000"),
    ("--poles 1e12", ["train", "cartpole", "--poles", BIG, *OUT], "--poles"),
    ("--drivers 1e12", ["train", "repulsion", "--drivers", BIG, *OUT], "--drivers"),
    ("--evaders 1e6", ["compare", "repulsion", "--evaders", "1000000", *OUT], "--evaders"),
    ("--steps 1e12", ["train", "cartpole", "--steps", BIG, *OUT], "--steps"),
    ("--steps 1e12, Brax", ["reproduce", "brax", "--steps", BIG, *OUT], "--steps"),
    ("--epochs 1e12", ["train", "quantum", "--epochs", BIG, *OUT], "--epochs"),
    ("--warmup 1e12", ["diagnose", "cartpole", "--warmup", BIG, "--out", "{out}"], "--warmup"),
    ("reproduce --seeds 1e12", ["reproduce", "cartpole", "--seeds", BIG, *OUT], "--seeds"),
    ("reproduce brax --seeds 1e12", ["reproduce", "brax", "--seeds", BIG, *OUT], "--seeds"),
    ("reproduce lq --epochs 1e12", ["reproduce", "lq", "--epochs", BIG, "--out", "{out}"], "--epochs"),
    ("bench --runs 1e12", ["bench", "--tasks", "cartpole", "--methods", "R", "--runs", BIG, "--out", "{out}"], "--runs"),
    ("config.json seed beyond 64 bits", ["train", "--config", "{config:seed=99999999999999999999}", *OUT], "seed=99999999999999999999"),
    ("config.json steps 1e12", ["train", "--config", "{config:n_steps=1000000000000}", *OUT], "--steps"),
    ("config.json n_train 1e12", ["compare", "--config", "{config:n_train=1000000000000}", *OUT], "--n-train"),
]


def recorded_config(setting: str, folder: Path) -> str:
    """A run's config.json (the defaults, resolved) with one setting of ``name=value`` changed (task options by their own name)."""
    import json

    from stablebptt.runs.config import RunConfig

    name, value = setting.split("=")
    data = RunConfig().to_dict()
    if name in data["task_options"]:
        data["task_options"][name] = int(value)
    else:
        data[name] = int(value)
    path = folder / "recorded" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize("argv, named", [(a, n) for _, a, n in SIZES], ids=[n for n, _, _ in SIZES])
def test_a_size_beyond_the_machine_is_one_line_before_anything_is_built(argv, named, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    resolved = [recorded_config(a[8:-1], tmp_path) if a.startswith("{config:") else a.format(out=tmp_path / "out") for a in argv]
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = main(resolved)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured.err
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in captured.err, captured.err
    assert named in lines[0], lines[0]
    if "needs about" in lines[0]:  # the memory estimate: it and the machine's memory named, and a fix
        assert re.search(r"needs about [\d.e+]+ [KMGTPE]?i?B", lines[0]) and "more than this machine's" in lines[0] and "give a smaller" in lines[0]
    assert not (tmp_path / "out").exists() and snapshot(tmp_path) == before
