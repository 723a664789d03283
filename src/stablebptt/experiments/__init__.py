"""Experiments: run configurations, run directories, single runs and comparisons."""

from .compare import compare, format_table
from .config import RunConfig
from .rundir import RunDirError, read_metrics
from .single import RunOutcome, Setup, build, evaluate_run, load_run, train_run

__all__ = [
    "RunConfig",
    "RunDirError",
    "RunOutcome",
    "Setup",
    "build",
    "compare",
    "evaluate_run",
    "format_table",
    "load_run",
    "read_metrics",
    "train_run",
]
