"""Experiments: run configurations, run directories, single runs, comparisons, sweeps, the toy figures."""

from .animate import animate_run
from .compare import compare, format_table
from .config import RunConfig
from .report import write_report
from .rundir import RunDirError, read_metrics
from .single import RunOutcome, RunWriter, Setup, build, evaluate_run, load_run, train_run
from .sweep import EXPERIMENTS, SweepSpec, run_sweep
from .toy import reproduce_toy

__all__ = [
    "EXPERIMENTS",
    "RunConfig",
    "RunDirError",
    "RunOutcome",
    "RunWriter",
    "Setup",
    "SweepSpec",
    "animate_run",
    "build",
    "compare",
    "evaluate_run",
    "format_table",
    "load_run",
    "read_metrics",
    "reproduce_toy",
    "run_sweep",
    "train_run",
    "write_report",
]
