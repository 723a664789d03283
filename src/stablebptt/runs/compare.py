"""Several methods on the same task, data and initial weights, side by side."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

from .. import plots, tables, validate
from ..atomic import atomic_write_text
from ..engine.flows import FLOW_NAMES
from ..training import NonFiniteLossError
from . import resume, rundir
from .config import RunConfig
from .single import run_title, train_run

__all__ = ["METHODS", "COMPARE_CONFIG", "TABLE", "FIGURE", "compare", "format_table"]

METHODS = ("R", "M", "C", "S")
"""The methods compared by default: the paper's four."""

COMPARE_CONFIG = "compare.json"
TABLE = "final_test_loss.csv"
FIGURE = "comparison.png"
log = logging.getLogger(__name__)
TABLE_COLUMNS = ("method", "final_test_loss", "best_test_loss", "epochs_run", "status", "seconds_per_epoch")


def compare(
    base: RunConfig,
    out: Path,
    methods: Sequence[str] = METHODS,
    *,
    overwrite: bool = False,
    checkpoint_every: int = resume.DEFAULT_EVERY,
    progress: bool = True,
) -> list[dict]:
    """Train ``base`` once per method into ``out/METHOD`` and write the table and figure.

    Every method gets the same data and initial weights (they depend on the
    seed only). A diverged method is reported in the table, not raised.
    Finished runs already in ``out`` are kept, so an interrupted comparison
    continues where it stopped.
    """
    methods = validate.distinct("methods", validate.names(methods, "method", FLOW_NAMES, upper=True))
    out = Path(out)
    base = base.resolved()
    spec = {"base": {k: v for k, v in base.to_dict().items() if k != "method"}, "methods": methods}
    rundir.claim_output(out, marker=COMPARE_CONFIG, what="comparison", settings=spec, overwrite=overwrite)

    rows, histories = [], {}
    for method in methods:
        config = base.replace(method=method)
        try:
            outcome = train_run(config, out / method, overwrite=overwrite, progress=progress, checkpoint_every=checkpoint_every)
            history, status = outcome.history, outcome.summary.get("status", outcome.status)
        except NonFiniteLossError as err:
            log.info("%s: %s", method, err)
            history, status = err.history, "diverged"
        histories[method] = history
        finite = [r["test_loss"] for r in history if math.isfinite(r["test_loss"])]
        rows.append(
            {
                "method": method,
                "final_test_loss": history[-1]["test_loss"] if history else math.nan,
                "best_test_loss": min(finite) if finite else math.nan,
                "epochs_run": len(history),
                "status": status,
                "seconds_per_epoch": (sum(r["seconds"] for r in history) / len(history)) if history else math.nan,
            }
        )

    atomic_write_text(out / TABLE, rundir.csv_text(TABLE_COLUMNS, rows))
    plots.save_figure(plots.comparison_figure(histories, run_title(base, method=False)), out / FIGURE)
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """The comparison table as aligned text."""
    return tables.render(
        ("method", "final test loss", "best test loss", "epochs", "status", "s/epoch"),
        (
            (r["method"], f"{r['final_test_loss']:.6g}", f"{r['best_test_loss']:.6g}", r["epochs_run"], r["status"], f"{r['seconds_per_epoch']:.4f}")
            for r in rows
        ),
        style="text",
    )
