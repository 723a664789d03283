"""Run directories: the unit of results.

A run is written into a hidden sibling ``.NAME.partial`` and renamed to
``NAME`` when it ends (finished or diverged), so a killed run never looks
finished and never damages the run that ``NAME`` held before.

Files: ``config.json`` (resolved configuration), ``metrics.csv`` (one row per
epoch, header = :data:`stablebptt.training.METRIC_COLUMNS`), ``params.eqx``
(the trained controller, :func:`equinox.tree_serialise_leaves`), with
``keep="best"`` also ``best_params.eqx`` (the controller of the lowest test
loss, :func:`stablebptt.training.best_epoch`), ``learning_curve.png`` and ``summary.json`` (status, initial and final losses).
While it trains, the partial folder also holds ``checkpoint.eqx`` (see
:mod:`stablebptt.runs.resume`): a killed run continues from there.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .. import validate
from ..atomic import atomic_write_text
from ..training import METRIC_COLUMNS
from .config import RunConfig

log = logging.getLogger(__name__)

__all__ = [
    "trained_numbers",
    "CONFIG",
    "METRICS",
    "PARAMS",
    "BEST_PARAMS",
    "CURVE",
    "SUMMARY",
    "CHECKPOINT",
    "RunDirError",
    "claim_output",
    "output_kind",
    "partial_path",
    "check_movable",
    "csv_text",
    "MetricsWriter",
    "read_metrics",
    "read_config",
    "read_summary",
    "claimed_by",
    "run_gaps",
    "existing_run_state",
    "finalize",
]

CONFIG = "config.json"
METRICS = "metrics.csv"
PARAMS = "params.eqx"
BEST_PARAMS = "best_params.eqx"
CHECKPOINT = "checkpoint.eqx"
CURVE = "learning_curve.png"
SUMMARY = "summary.json"


class RunDirError(ValueError):
    """A run directory cannot be used as asked."""


def _check_place(path: Path, kind: str, flag: str) -> None:
    """Raise :class:`RunDirError` unless ``path`` can be written as ``kind`` (``"directory"`` or ``"file"``).

    Creates the missing parent folders and proves by writing a probe file that
    the parent is writable (a permission check alone would pass for root on a
    read-only file system), so a long computation never ends in a failed write.
    """
    for above in path.parents:
        if above.exists() and not above.is_dir():
            raise RunDirError(f"{flag} {path}: {above} is a file, not a folder; choose another {flag}")
    if kind == "directory" and path.exists() and not path.is_dir():
        raise RunDirError(f"{flag} {path} is a file, not a directory; choose another {flag}")
    if kind == "file" and path.is_dir():
        raise RunDirError(f"{flag} {path} is a directory; give a file name")
    if kind == "file" and (path.is_symlink() or path.exists()) and not stat.S_ISREG(path.lstat().st_mode):
        raise RunDirError(f"{flag} {path} exists and is not a regular file (a link, FIFO, socket or device); give a new file name")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".stablebptt-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise RunDirError(f"{flag} {path} cannot be written ({err.strerror}: {err.filename or parent}); choose another {flag}") from None


def claim_output(
    out: Path,
    *,
    file: bool = False,
    marker: str | None = None,
    what: str = "",
    settings: dict | None = None,
    overwrite: bool | None = None,
    ignore: Iterable[str] = (),
    merge: Callable[[], dict] | None = None,
    mine: Callable[[Path], bool] | None = None,
    unmarked: Iterable[str] = (),
    not_in: Mapping[str, str] | None = None,
) -> None:
    """Claim ``out`` for a command's results before any work, or raise a one-line :class:`RunDirError`.

    The one preamble of everything that writes results (a run, a comparison, a
    sweep, the toy figures, the LQ check, the Brax comparison, ``bench --out``,
    ``animate --out``):

    * ``out`` must be writable as a folder (with ``file=True``: as a file); the
      missing parent folders are made, and a probe file proves the parent
      writable (a permission check alone would pass for root on a read-only
      file system), so a long computation never ends in a failed write;
    * with ``marker``, the JSON file that says what a folder holds
      (``sweep.json``, ``compare.json``, ``peer.json``): the folder must be
      empty, or hold a ``what`` of the same ``settings`` (the top-level keys
      in ``ignore`` aside). The error names the first settings that differ
      (``epochs (2 vs 3)``) and the ways out. ``overwrite``: None if the
      command cannot replace what is there; False/True for commands with
      ``--overwrite`` (True: the folder's settings are replaced). The folder
      is then made and the marker written: ``settings``, or ``merge()`` (the
      folder's settings joined with these) if it held some. ``unmarked``: the
      files such a folder held before the command wrote its marker; a folder
      holding only those counts as one of its own;
    * with ``file=True``: an existing ``out`` must be a regular file (never a
      link, FIFO or device) and, with ``mine``, one this command wrote
      (``mine(out)``); with ``not_in`` (marker file → what it marks, as
      :func:`output_kind` reads them) ``out`` must not go into another
      command's folder.
    """
    out = Path(out)
    _check_place(out, "file" if file else "directory", "--out")
    if file and not_in and (kind := output_kind(out.parent, not_in)):
        raise RunDirError(f"--out {out} would go into {out.parent}, the folder of a {kind}; choose a file outside it")
    if file and mine is not None and out.is_file() and not mine(out):
        raise RunDirError(f"--out {out} exists and is not a {what or 'file this command wrote'}; choose another --out or move that file away")
    if marker is None:
        return
    names = {p.name for p in out.iterdir()} if out.is_dir() else set()
    if names and names <= set(unmarked):
        held = False  # one of its own from before the marker
    else:
        held = _refuse_other_settings(out, marker, what, settings or {}, overwrite=overwrite, ignore=ignore)
    out.mkdir(parents=True, exist_ok=True)
    written = merge() if held and merge is not None else settings or {}
    atomic_write_text(out / marker, json.dumps(written, indent=2, sort_keys=True) + "\n")


def output_kind(folder: Path, markers: Mapping[str, str]) -> str | None:
    """What ``folder`` holds by the marker files in ``markers`` (file name → what it marks), or None.

    A run is recognised by its :data:`CONFIG` together with its :data:`METRICS`
    (a ``config.json`` alone is too common a name).
    """
    folder = Path(folder)
    for marker, what in markers.items():
        if (folder / marker).is_file() and (marker != CONFIG or (folder / METRICS).is_file()):
            return what
    return None


def check_movable(out: Path) -> None:
    """Raise :class:`RunDirError` if a run written into :func:`partial_path` could not be moved to ``out``:
    ``out`` is the current folder or one above it (``--out .``), which a rename cannot replace."""
    here, target = Path.cwd().resolve(), Path(out).resolve()
    if target == here or target in here.parents:
        raise RunDirError(
            f"--out {out} is the folder you are in{'' if target == here else ' (or above it)'}: a run is written whole "
            "beside its folder and then moved into place, which cannot replace the current folder; give a new folder, e.g. --out run"
        )


def partial_path(out: Path) -> Path:
    """Where a run into ``out`` is written until it ends."""
    out = Path(out)
    return out.parent / f".{out.name}.partial"


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


def csv_text(columns: Iterable[str], rows: Iterable[dict]) -> str:
    """A CSV table (header, then one line per row) with floats written to full precision."""
    columns = tuple(columns)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_format(row[c]) for c in columns])
    return buf.getvalue()


class MetricsWriter:
    """Appends one CSV row per epoch and flushes it, so a crash keeps every finished epoch."""

    def __init__(self, path: Path, columns: Iterable[str] = METRIC_COLUMNS, *, rows: Iterable[dict] = ()):
        """A new file at ``path`` holding the header and ``rows`` (those of a run being continued)."""
        self.columns = tuple(columns)
        atomic_write_text(path, csv_text(self.columns, rows))
        self._file = open(path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)

    def write(self, row: dict) -> None:
        self._writer.writerow([_format(row[c]) for c in self.columns])
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_metrics(path: Path) -> list[dict]:
    """Rows of a ``metrics.csv`` with numbers parsed (``epoch`` as int); :class:`RunDirError` if damaged."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in rows]
    except FileNotFoundError:
        raise RunDirError(f"{path} is missing; the run did not write its metrics: train it again") from None
    except (OSError, UnicodeDecodeError, csv.Error, TypeError, ValueError) as err:
        raise RunDirError(f"{path} is damaged ({err}); train the run again or restore the file") from None


def trained_numbers(path: Path) -> list[dict]:
    """A ``metrics.csv``'s rows without the wall times, NaN as None (R logs no M-R cosine): what a run computed,
    so that two runs that trained alike compare equal."""
    return [{k: (None if math.isnan(v) else v) for k, v in row.items() if k != "seconds"} for row in read_metrics(path)]


def read_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise RunDirError(f"{run_dir} holds no {CONFIG}; is it a directory written by 'stablebptt train'?")
    try:
        return RunConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        raise RunDirError(f"{path} is not a valid run configuration: {err}") from None


def read_summary(run_dir: Path) -> dict | None:
    path = Path(run_dir) / SUMMARY
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunDirError(f"{path} is damaged ({err}); train the run again or restore the file") from None
    if not isinstance(summary, dict):
        raise RunDirError(f"{path} is not a run summary; train the run again or restore the file")
    return summary


def run_gaps(run_dir: Path, *, params: bool = True) -> list[str]:
    """What keeps ``run_dir`` from being a whole finished (or diverged) run; empty if it is whole.

    Whole: ``config.json`` and ``summary.json`` parse, the summary says
    ``finished`` (all the configured epochs) or ``diverged`` (at a named
    epoch), ``metrics.csv`` parses with one row per epoch run, and (with
    ``params``; results folders keep no parameters) a finished run has its
    ``params.eqx``, and its ``best_params.eqx`` if its config keeps the best.
    """
    run_dir = Path(run_dir)
    gaps = []
    try:
        config = read_config(run_dir)
    except RunDirError:
        config = None
        gaps.append(f"{CONFIG} missing or damaged")
    try:
        summary = read_summary(run_dir)
    except RunDirError:
        summary = None
        gaps.append(f"{SUMMARY} damaged")
    status = summary.get("status") if summary else None
    epochs_run = summary.get("epochs_run") if summary else None
    if summary is None and not gaps:
        gaps.append(f"no {SUMMARY} (unfinished)")
    elif summary is not None:
        if status not in ("finished", "diverged") or isinstance(epochs_run, bool) or not isinstance(epochs_run, int):
            gaps.append(f"{SUMMARY} is not a finished run's summary")
        elif status == "diverged" and not isinstance(summary.get("diverged_at_epoch"), int):
            gaps.append(f"{SUMMARY} says diverged but names no epoch")
        elif status == "finished" and config is not None and epochs_run != config.epochs:
            gaps.append(f"{SUMMARY} says finished after {epochs_run} of {config.epochs} epochs")
    try:
        rows = read_metrics(run_dir / METRICS)
        if isinstance(epochs_run, int) and len(rows) != epochs_run:
            gaps.append(f"{METRICS} has {len(rows)} rows for {epochs_run} epochs")
    except RunDirError:
        gaps.append(f"{METRICS} missing or damaged")
    if params and status == "finished":
        wanted = [PARAMS] + ([BEST_PARAMS] if config is not None and config.keep == "best" else [])
        for name in wanted:
            if not (run_dir / name).is_file():
                gaps.append(f"{name} missing" + (" (the run keeps its best controller)" if name == BEST_PARAMS else ""))
            elif not is_leaf_file(run_dir / name):
                gaps.append(f"{name} damaged")
    return gaps


def is_leaf_file(path: Path) -> bool:
    """Whether ``path`` parses as Equinox's serialised leaves: one or more ``.npy`` records, end to end.

    Checks the file's form, not that its leaves fit a given policy (that needs the
    task's network; loading it does that check).
    """
    import numpy as np

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            records = 0
            while f.tell() < size:
                np.load(f, allow_pickle=False)
                records += 1
    except (OSError, ValueError, EOFError):
        return False
    return records > 0


def claimed_by(out: Path, marker: str, what: str) -> bool:
    """Whether ``out`` already holds results marked by the file ``marker`` (e.g. ``config.json``).

    False for a missing or empty folder; raises :class:`RunDirError` if ``out``
    is a file or a non-empty folder without ``marker`` (something else lives there).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file, not a directory; choose another --out")
    if not out.exists() or not any(out.iterdir()):
        return False
    if not (out / marker).is_file():
        raise RunDirError(f"--out {out} is not empty and holds no {what}; choose another --out")
    return True


def _refuse_other_settings(
    out: Path, marker: str, what: str, settings: dict, *, overwrite: bool | None, ignore: Iterable[str]
) -> bool:
    """Raise :class:`RunDirError` unless ``out`` is free or its ``marker`` JSON holds ``settings`` (see
    :func:`claim_output`); returns whether ``out`` held the marker."""
    if not claimed_by(out, marker, what):
        return False
    try:
        old = json.loads((out / marker).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunDirError(f"{out / marker} is not a valid {what} description ({err}); choose another --out") from None
    if not isinstance(old, dict):
        raise RunDirError(f"{out / marker} is not a valid {what} description; choose another --out")
    diffs = validate.differences(old, settings, ignore=ignore)
    if diffs and not overwrite:
        fix = "pass --overwrite to replace it" if overwrite is not None else "run the same command as before to continue it"
        raise RunDirError(f"--out {out} holds a {what} with different settings: {'; '.join(diffs[:3])}; {fix}, or choose another --out")
    return True


def existing_run_state(out: Path, config: RunConfig, overwrite: bool) -> str:
    """What ``out`` holds, relative to a run of ``config`` that wants to go there.

    Returns ``"empty"`` (nothing there), ``"same"`` (this very run, finished) or
    ``"replace"`` (a run that may be replaced: ``overwrite`` was given, or it is
    an unfinished copy of this run). Raises :class:`RunDirError` for a
    different run without ``overwrite`` and for a directory that holds no run.
    """
    out = Path(out)
    if not claimed_by(out, CONFIG, "stablebptt run"):
        return "empty"
    try:
        existing = read_config(out)
    except RunDirError as err:
        if overwrite:
            return "replace"
        raise RunDirError(f"{err}; pass --overwrite to replace it or choose another --out") from None
    diffs = existing.differences(config)
    if diffs:
        if overwrite:
            return "replace"
        raise RunDirError(
            f"--out {out} already holds a different run (differs in {'; '.join(diffs[:3])}); "
            "pass --overwrite to replace it or choose another --out"
        )
    if overwrite:
        return "replace"
    try:
        summary = read_summary(out)
    except RunDirError:
        summary = None
    if summary is None:
        return "replace"  # unfinished: trained again
    gaps = run_gaps(out)
    if gaps:
        log.warning("%s is not a whole run (%s); training it again", out, "; ".join(gaps))
        return "replace"
    return "same"


def finalize(partial: Path, out: Path) -> None:
    """Move a completed ``partial`` directory to ``out``, replacing what ``out`` held."""
    partial, out = Path(partial), Path(out)
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
    os.replace(partial, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
