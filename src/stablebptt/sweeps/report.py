"""A sweep's results, read back from its run directories: histories, the final-loss table, the figure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .. import plots, tables
from ..atomic import atomic_write_text
from ..runs import rundir
from .presets import EXPERIMENTS
from .spec import SweepSpec

__all__ = [
    "TABLE_COLUMNS",
    "TABLE_CSV",
    "TABLE_MD",
    "FIGURE",
    "collect_histories",
    "summary_table",
    "table_csv",
    "table_markdown",
    "sweep_figure",
    "write_report",
]

TABLE_CSV, TABLE_MD, FIGURE = "table.csv", "table.md", "figure.png"

TABLE_COLUMNS = (
    "level", "method", "clip", "seeds", "diverged",
    "final_test_loss_mean", "final_test_loss_std", "best_test_loss_mean", "best_test_loss_std",
)  # fmt: skip


def collect_histories(spec: SweepSpec, out: Path) -> dict[tuple, list[dict]]:
    """``(level, method, clip) -> [{"seed", "status", "history"}, ...]`` for every finished run."""
    out = Path(out)
    results: dict[tuple, list[dict]] = {}
    for run in spec.grid():
        path = out / run.path
        summary = rundir.read_summary(path)
        if summary is None:
            continue
        results.setdefault((run.level, run.method, run.clip), []).append(
            {"seed": run.seed, "status": summary["status"], "history": rundir.read_metrics(path / rundir.METRICS)}
        )
    return results


def summary_table(spec: SweepSpec, out: Path) -> list[dict]:
    """One row per difficulty × method × clip: the final test loss and the best (lowest over the
    epochs), each as mean and std (ddof 0) over the seeds that did not diverge, and how many diverged."""
    histories = collect_histories(spec, out)
    rows = []
    for level in spec.levels:
        for method in spec.methods:
            for clip in spec.clips:
                if not spec.holds(level, method, clip):
                    continue
                runs = histories.get((level, method, clip), [])
                kept = [r["history"] for r in runs if r["status"] == "finished"]
                finals = [h[-1]["test_loss"] for h in kept]
                bests = [min(row["test_loss"] for row in h) for h in kept]
                rows.append(
                    {
                        "level": level,
                        "method": method,
                        "clip": clip,
                        "seeds": len(runs),
                        "diverged": sum(r["status"] == "diverged" for r in runs),
                        "final_test_loss_mean": float(np.mean(finals)) if finals else math.nan,
                        "final_test_loss_std": float(np.std(finals)) if finals else math.nan,
                        "best_test_loss_mean": float(np.mean(bests)) if bests else math.nan,
                        "best_test_loss_std": float(np.std(bests)) if bests else math.nan,
                    }
                )
    return rows


def table_csv(rows: list[dict]) -> str:
    return rundir.csv_text(TABLE_COLUMNS, rows)


def _cell(row: dict | None, which: str = "final", seeds: int | None = None) -> str:
    """``"0.033 ± 0.02"``; ``(1 seed)`` added where the cell has another number of seeds than ``seeds``."""
    if row is None:
        return "not run"
    if row["seeds"] == 0:
        return "—"
    mean, std = row[f"{which}_test_loss_mean"], row[f"{which}_test_loss_std"]
    text = "—" if math.isnan(mean) else (f"{mean:.3g}" if row["seeds"] == 1 else f"{mean:.3g} ± {std:.2g}")
    if seeds is not None and row["seeds"] != seeds:
        text += f" ({row['seeds']} seed{'s' if row['seeds'] != 1 else ''})"
    if row["diverged"]:
        text += f" ({row['diverged']}/{row['seeds']} diverged)"
    return text


def table_markdown(spec: SweepSpec, rows: list[dict]) -> str:
    """Final and best test loss, mean ± std over seeds: a row per difficulty × method, a column per clip mode."""
    exp = EXPERIMENTS[spec.experiment]
    index = {(r["level"], r["method"], r["clip"]): r for r in rows}
    n = spec.usual_seeds()
    lines = []
    for which, title in (("final", f"Final test loss after {spec.epochs} epochs"), ("best", "Best test loss over the epochs")):
        if lines:
            lines.append("")
        over = f"{n} seed(s)" if not spec.grids else f"{n} seed{'s' if n != 1 else ''} where the cell names no other number"
        cells = [
            (exp.level_name(level), method, *(_cell(index.get((level, method, c)), which, n if spec.grids else None) for c in spec.clips))
            for level in spec.levels
            for method in spec.methods
            if any(spec.holds(level, method, c) for c in spec.clips)
        ]
        lines += [
            f"{title}, mean ± std over {over} ({spec.experiment}, preset {spec.preset})",
            "",
            tables.render(("difficulty", "method", *(f"clip {c}" for c in spec.clips)), cells),
        ]
    return "\n".join(lines) + "\n"


def _seed_counts(spec: SweepSpec) -> str:
    """How many seeds the sweep's settings run: "3 seed(s)", or "1 to 3 seeds per setting" where they differ."""
    counts = sorted(spec.seed_counts())
    return f"{counts[0]} to {counts[-1]} seeds per setting" if len(counts) > 1 else f"{spec.usual_seeds()} seed(s)"


def sweep_figure(spec: SweepSpec, out: Path, window: int | None = None):
    """The sweep's figure from its run directories (see :func:`stablebptt.plots.sweep_figure`)."""
    exp = EXPERIMENTS[spec.experiment]
    window = window or max(1, min(20, spec.epochs // 5))
    return plots.sweep_figure(
        spec.levels,
        [exp.level_name(level) for level in spec.levels],
        spec.methods,
        spec.clips,
        collect_histories(spec, out),
        title=f"{spec.experiment}: test loss over {_seed_counts(spec)}, preset {spec.preset}",
        window=window,
        update_size=spec.experiment == "quantum",
    )


def write_report(spec: SweepSpec, out: Path) -> list[dict]:
    """Write ``table.csv``, ``table.md`` and ``figure.png`` of a sweep; returns the table rows."""
    out = Path(out)
    rows = summary_table(spec, out)
    atomic_write_text(out / TABLE_CSV, table_csv(rows))
    atomic_write_text(out / TABLE_MD, table_markdown(spec, rows))
    plots.save_figure(sweep_figure(spec, out), out / FIGURE)
    return rows
