"""Experiments: run configurations, run directories, single runs, comparisons, sweeps (local or on Ray), the toy figures, benchmarks."""

from .animate import animate_run
from .bench import format_bench_table, matmul_peak, run_bench
from .compare import compare, format_table
from .config import RunConfig
from .ray_backend import RayBackend
from .report import write_report
from .rundir import RunDirError, read_metrics
from .single import RunOutcome, RunWriter, Setup, build, evaluate_run, load_run, train_run
from .sweep import EXPERIMENTS, GroupsFailedError, LocalBackend, SweepSpec, run_sweep
from .toy import reproduce_toy

__all__ = [
    "EXPERIMENTS",
    "GroupsFailedError",
    "LocalBackend",
    "RayBackend",
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
    "format_bench_table",
    "format_table",
    "load_run",
    "matmul_peak",
    "read_metrics",
    "reproduce_toy",
    "run_bench",
    "run_sweep",
    "train_run",
    "write_report",
]
