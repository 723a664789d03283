"""``bench --out``, ``reproduce toy --out`` and ``reproduce lq --out`` write only where they wrote before or where nothing is:
another command's folder or file, a user's file and a FIFO are refused in one line before any work, and stay byte for byte."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import stat
from pathlib import Path

import pytest

from stablebptt.cli import main


class Reached(Exception):
    """The command got past its output check to the work (stubbed here)."""


# The first expensive call of each command, after its output is claimed.
WORK = [("stablebptt.tools.bench", "run_bench"), ("stablebptt.paper.toy", "figure1_data"), ("stablebptt.paper.lq", "optimum")]


@pytest.fixture
def place(monkeypatch, tmp_path) -> Path:
    """A working folder holding a sweep, a run, a comparison, toy figures, an LQ table, a user's notes, a bench table,
    a link to it and a FIFO; the work stubbed."""

    def reached(*args, **kwargs):
        raise Reached

    for module, name in WORK:
        monkeypatch.setattr(importlib.import_module(module), name, reached)
    monkeypatch.chdir(tmp_path)
    files = {
        "notes.txt": "a user's notes\n",
        "bench.md": "# stablebptt bench\n\ndevice: cpu\n",
        "sweep/sweep.json": json.dumps({"experiment": "cartpole", "epochs": 2}),
        "sweep/table.csv": "level,method\n1,R\n",
        "sweep/table.md": "| level | method |\n",
        "sweep/runs/level1-R-none-seed42/config.json": "{}",
        "run/config.json": json.dumps({"task": "cartpole", "epochs": 2}),
        "run/metrics.csv": "epoch,test_loss\n1,0.5\n",
        "run/summary.json": json.dumps({"status": "finished", "epochs_run": 1}),
        "run/params.eqx": "\x00\x01",
        "compare/compare.json": json.dumps({"base": {}, "methods": ["R"]}),
        "compare/table.md": "| method |\n",
        "toy/figure1_fields.png": "\x89PNG old",
        "lq/lq.json": json.dumps({"epochs": 4000}),
        "lq/table.csv": "control_cost\n0\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link.md").symlink_to(tmp_path / "bench.md")
    return tmp_path


def checksums(root: Path) -> dict:
    """sha256 of every regular file under ``root``; other entries by their kind (a FIFO is never opened)."""
    sums = {}
    for p in sorted(root.rglob("*")):
        mode = p.lstat().st_mode
        sums[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(mode) else stat.S_IFMT(mode)
    return sums


BENCH = ["bench", "--tasks", "cartpole", "--methods", "R", "--epochs", "1"]
REFUSED = [
    ("bench onto a user's file", [*BENCH, "--out", "notes.txt"], "not a table written by 'stablebptt bench'"),
    ("bench onto a run's config.json", [*BENCH, "--out", "run/config.json"], "folder of a run"),
    ("bench onto a sweep's table.md", [*BENCH, "--out", "sweep/table.md"], "folder of a sweep"),
    ("bench into a comparison's folder", [*BENCH, "--out", "compare/bench.md"], "folder of a comparison"),
    ("bench into a run's folder", [*BENCH, "--out", "run/bench.md"], "folder of a run"),
    ("bench onto a FIFO", [*BENCH, "--out", "fifo"], "not a regular file"),
    ("bench onto a link to its own table", [*BENCH, "--out", "link.md"], "not a regular file"),
    ("toy onto a sweep", ["reproduce", "toy", "--out", "sweep"], "holds no set of toy figures"),
    ("toy onto a run", ["reproduce", "toy", "--out", "run"], "holds no set of toy figures"),
    ("toy onto a comparison", ["reproduce", "toy", "--out", "compare"], "holds no set of toy figures"),
    ("toy onto an LQ table", ["reproduce", "toy", "--out", "lq"], "holds no set of toy figures"),
    ("toy onto a file", ["reproduce", "toy", "--out", "notes.txt"], "is a file"),
    ("lq onto a sweep", ["reproduce", "lq", "--epochs", "1", "--out", "sweep"], "holds no LQ table"),
    ("lq onto a run", ["reproduce", "lq", "--epochs", "1", "--out", "run"], "holds no LQ table"),
    ("lq onto a comparison", ["reproduce", "lq", "--epochs", "1", "--out", "compare"], "holds no LQ table"),
    ("lq onto the toy figures", ["reproduce", "lq", "--epochs", "1", "--out", "toy"], "holds no LQ table"),
    ("lq onto a FIFO", ["reproduce", "lq", "--epochs", "1", "--out", "fifo"], "is a file, not a directory"),
]


@pytest.mark.parametrize("argv, message", [(a, m) for _, a, m in REFUSED], ids=[n for n, _, _ in REFUSED])
def test_foreign_output_is_refused_before_work_and_left_unchanged(argv, message, place, capsys):
    before = checksums(place)
    capsys.readouterr()
    code = main(argv)  # Reached would mean the refusal came too late
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("stablebptt: error: --out"), err
    assert message in lines[0] and "Traceback" not in err
    assert checksums(place) == before


@pytest.mark.parametrize(
    "argv, marker",
    [
        ([*BENCH, "--out", "bench.md"], None),  # its own earlier table
        ([*BENCH, "--out", "new/bench.md"], None),
        (["reproduce", "toy", "--out", "toy"], "toy.json"),  # figures from before the marker was kept
        (["reproduce", "toy", "--out", "fresh"], "toy.json"),
        (["reproduce", "lq", "--epochs", "7", "--out", "lq"], "lq.json"),  # its own folder, other settings: replaced
    ],
    ids=["bench table", "bench new file", "toy figures", "toy new folder", "lq table"],
)
def test_own_output_is_written_again(argv, marker, place):
    with pytest.raises(Reached):
        main(argv)
    if marker:
        out = place / argv[-1]
        written = json.loads((out / marker).read_text())
        assert written.get("epochs", 7) == 7 and (marker != "toy.json" or written["figure2"]["steps"] == 200)


def test_a_marked_toy_folder_takes_an_lq_table_nowhere_but_its_own(place, capsys):
    """The marker written by one command makes its folder foreign to the other."""
    with pytest.raises(Reached):
        main(["reproduce", "toy", "--out", "both"])
    before = checksums(place)
    assert main(["reproduce", "lq", "--out", "both"]) == 2
    assert "holds no LQ table" in capsys.readouterr().err
    assert checksums(place) == before
