"""The ``stablebptt`` command: a thin shell over :mod:`stablebptt.runs`, :mod:`stablebptt.sweeps`, :mod:`stablebptt.paper` and :mod:`stablebptt.tools`.

    stablebptt train cartpole --poles 2 --method C --clip none --epochs 1000 --seed 42 --out DIR
    stablebptt compare cartpole --poles 2 --epochs 200 --out DIR
    stablebptt evaluate DIR
    stablebptt reproduce cartpole --preset paper --levels 3 --methods R,C --clips value,norm --seeds 3 --out DIR

Each subcommand is added by one function of :data:`COMMANDS` and run by the
function it sets as ``run``; ``reproduce`` has one subcommand per experiment
of :data:`stablebptt.paper.registry.REPRODUCIBLE`, each with only its own
options. What the library does is logged (``stablebptt.*`` loggers); the
command prints those messages plainly while it runs.

Exit codes: 0 success, 2 bad input, 3 training diverged (non-finite loss),
130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from . import validate

__all__ = ["main", "build_parser"]

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130


@dataclasses.dataclass(frozen=True)
class TaskOption:
    flag: str
    field: str
    type: type
    help: str
    positive: bool = False


TASK_OPTIONS: dict[str, tuple[TaskOption, ...]] = {
    "cartpole": (TaskOption("--poles", "n_poles", int, "number of poles on the cart (difficulty; paper: 1-4; default 2)", True),),
    "repulsion": (
        TaskOption("--rc", "rc", float, "weight of the control regularizer, >= 0 (difficulty: smaller is harder; paper: 1, 0.1, 0.01, 0.001; default 0.01)"),
        TaskOption("--drivers", "n_drivers", int, "number of steered drivers (default 2)"),
        TaskOption("--evaders", "n_evaders", int, "number of fleeing evaders (default 4)"),
    ),
    "quantum": (TaskOption("--target", "target", int, "target eigenstate k, 1 = ground state (difficulty; paper: 3, 4, 5; default 3)"),),
    "brax": (
        TaskOption("--env", "env", str, "Brax environment, e.g. inverted_double_pendulum (default) or reacher; needs the brax extra: pip install '.[brax]' from the checkout"),
        TaskOption("--backend", "backend", str, "differentiable Brax pipeline: generalized (default), positional or spring"),
        TaskOption("--loss", "loss", str, "reward (minus the return, default) or upright (the poles' squared angles: inverted_pendulum, inverted_double_pendulum)"),
    ),
}
COMMON_TASK_OPTIONS = (TaskOption("--steps", "n_steps", int, "simulator steps per rollout (default: the paper's)", True),)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors that name the fix; an option a command does not take is named as such."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:  # the innermost command sees them first: "reproduce toy takes no --seeds"
            flag = next((e.split("=", 1)[0] for e in extras if re.match(r"--?[A-Za-z]", e)), None)
            command = self.prog.partition(" ")[2]
            if not (flag and command):
                self.error(f"unrecognized arguments: {' '.join(extras)}")
            sub = next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
            where = f" by itself; give it after a {sub.metavar} ({', '.join(sub.choices)})" if sub is not None else ""
            self.error(f"{command} takes no {flag}{where}")
        return namespace, extras


def _arg(parse: type, check: Callable[[None, Any], Any] = lambda _, value: value) -> Callable[[str], Any]:
    """An argparse type: the text read as ``parse`` (int or float), then a :mod:`stablebptt.validate` check."""

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if parse is int else 'a number'}") from None
        try:
            return check(None, value)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return convert


_positive_int = _arg(int, validate.positive_int)
_nonnegative_int = _arg(int, lambda name, value: validate.integer(name, value, low=0, expected="0 (never) or a positive integer"))
_seed = _arg(int, lambda name, value: validate.integer(name, value, low=0))
_positive_number = _arg(float, lambda name, value: validate.number(name, value, positive=True))


def _names(what: str, choices: Sequence[str], *, upper: bool = False) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated list of names from a registry (:func:`stablebptt.validate.names`)."""

    def parse(text: str) -> list[str]:
        try:
            return validate.names(text, what, choices, upper=upper)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse


def _methods() -> Callable[[str], list[str]]:
    from .engine.flows import FLOW_NAMES

    return _names("method", FLOW_NAMES, upper=True)


def _add_checkpoint_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint-every", type=_nonnegative_int, metavar="N", default=None,
        help="save the training state every N epochs (default 10; 0: never), so that the same command after a kill continues from there",
    )  # fmt: skip


def _add_remat_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--remat", type=_positive_int, nargs="?", const=True, default=0, metavar="K",
        help="checkpoint the rollout in segments of K steps (default K = ceil(sqrt(steps))): memory ~ sqrt(steps) for ~1 extra forward pass",
    )  # fmt: skip


def _add_quiet_option(p: argparse.ArgumentParser, dest: str = "quiet", help: str = "no progress bar") -> None:
    p.add_argument("--quiet", dest=dest, action="store_true", help=help)


def _add_training_options(p: argparse.ArgumentParser, *, with_method: bool) -> None:
    from .engine.flows import FLOW_NAMES
    from .engine.optim import ADAM_FORMS, CLIP_MODES

    if with_method:
        p.add_argument("--method", default="C", type=str.upper, choices=FLOW_NAMES, help="gradient flow (default C)")
    p.add_argument("--clip", default="none", choices=CLIP_MODES, help="clipping of the final update (default none)")
    p.add_argument("--epochs", type=_positive_int, metavar="N", default=1000, help="passes over the training set (default 1000)")
    p.add_argument("--seed", type=_seed, metavar="N", default=42, help="seed of data and initial weights (default 42)")
    p.add_argument("--lr", dest="learning_rate", type=_positive_number, metavar="X", default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--batch-size", type=_positive_int, metavar="N", default=8, help="samples per update (default 8)")
    p.add_argument("--n-train", type=_positive_int, metavar="N", default=256, help="training initial states (default 256)")
    p.add_argument("--n-test", type=_positive_int, metavar="N", default=256, help="test initial states (default 256)")
    p.add_argument("--adam", default="keras", choices=ADAM_FORMS, help="Adam's epsilon form (default keras, as published)")
    p.add_argument("--x64", action="store_true", help="compute in float64")
    _add_remat_option(p)
    _add_checkpoint_option(p)
    p.add_argument(
        "--keep", choices=("final", "best"), default=None,
        help="final (default): save the last controller (params.eqx); best: also the one of the lowest test loss (best_params.eqx, 'evaluate --best')",
    )  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace a different run already in --out")
    _add_quiet_option(p)


def _add_task_options(p: argparse.ArgumentParser, options: tuple[TaskOption, ...]) -> None:
    """A task's own options (``--poles``, ``--rc``, ...) and the ones every task has (``--steps``)."""
    for opt in options + COMMON_TASK_OPTIONS:
        kind = _positive_int if opt.positive else (str if opt.type is str else _arg(opt.type))
        p.add_argument(opt.flag, dest=opt.field, metavar={int: "N", float: "X", str: "NAME"}[opt.type], type=kind, default=None, help=opt.help)


def _add_task_parsers(sub, command: str, *, with_method: bool, out_required: bool) -> None:
    from .runs.compare import METHODS

    for task, options in TASK_OPTIONS.items():
        p = sub.add_parser(task, help=f"{command} on the {task} task")
        _add_task_options(p, options)
        _add_training_options(p, with_method=with_method)
        p.add_argument("--out", type=Path, metavar="DIR", required=out_required, default=None, help="output directory")
        if command == "compare":
            p.add_argument("--methods", type=_methods(), metavar="LIST", default=list(METHODS), help=f"comma-separated methods (default {','.join(METHODS)})")
        p.set_defaults(task=task, command=command)


CACHE_ENV = "STABLEBPTT_COMPILE_CACHE"


def _cache_folder() -> Path:
    """Where compiled programs are kept: ``$STABLEBPTT_COMPILE_CACHE``, else the user's cache folder."""
    import os

    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stablebptt" / "jax"


def _use_compile_cache(off: bool) -> None:
    """Turn on JAX's persistent compilation cache in :func:`_cache_folder` (JAX's own setting wins; a folder
    that cannot be made leaves the cache off rather than failing the command)."""
    import os

    if off or os.environ.get(CACHE_ENV, "").lower() in ("0", "off", "false", "no") or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    folder = _cache_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    import jax

    if jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(folder))


def _add_config_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--config", type=Path, metavar="FILE", default=None, help=f"rerun {what}")
    p.add_argument("--out", dest="config_out", type=Path, metavar="DIR", default=None, help="with --config: output directory")
    _add_quiet_option(p, "config_quiet", "with --config: no progress bar")
    p.add_argument("--overwrite", dest="config_overwrite", action="store_true", help="with --config: replace a different run already in --out")


# --- the commands: one function each adds its parser, one runs it (``args.run``) --------------------------------
COMMANDS: dict[str, tuple[dict, Callable[[argparse.ArgumentParser], None]]] = {}
"""The subcommands in the order ``--help`` lists them: the parser's settings and the function that adds its options
(and sets ``run``, the function that runs it). A command's options are added only when it is chosen, so that
``stablebptt --help`` and ``--version`` answer without importing JAX."""


def _command(name: str, **parser_settings):
    def register(add: Callable[[argparse.ArgumentParser], None]) -> Callable[[argparse.ArgumentParser], None]:
        COMMANDS[name] = (parser_settings, add)
        return add

    return register


class _Commands(argparse._SubParsersAction):
    """Subcommands whose options are added when one is chosen (its help too), not when the parser is built."""

    def __call__(self, parser, namespace, values, option_string=None):
        chosen = self._name_parser_map.get(values[0])
        if chosen is not None and not getattr(chosen, "options_added", False):
            COMMANDS[values[0]][1](chosen)
            chosen.options_added = True
        super().__call__(parser, namespace, values, option_string)


@_command("train", help="train one controller", usage="stablebptt train [-h] (TASK [options] | --config FILE [--out DIR] [--quiet] [--overwrite])")
def _add_train(train: argparse.ArgumentParser) -> None:
    _add_run_command(train, "train", "a recorded run: its config.json (or its folder), every setting as recorded", with_method=True, out_required=False)


@_command("compare", help="train R, M, C and S on the same data and initial weights", usage="stablebptt compare [-h] (TASK --out DIR [options] | --config FILE --out DIR [--quiet] [--overwrite])")
def _add_compare(compare: argparse.ArgumentParser) -> None:
    _add_run_command(compare, "compare", "a recorded comparison's compare.json (or its folder), or one run's config.json (then R, M, C, S)", with_method=False, out_required=True)


def _add_run_command(p: argparse.ArgumentParser, command: str, recorded: str, *, with_method: bool, out_required: bool) -> None:
    """``train`` and ``compare``: a task subcommand with its options, or ``--config`` of a recorded run."""
    _add_config_options(p, recorded)
    tasks = p.add_subparsers(dest="task", required=False, parser_class=_Parser, metavar="TASK", prog=f"stablebptt {command}")  # not its usage line
    _add_task_parsers(tasks, command, with_method=with_method, out_required=out_required)
    p.set_defaults(run=_train_or_compare)


@_command("evaluate", help="reload a trained controller and print its test loss")
def _add_evaluate(evaluate: argparse.ArgumentParser) -> None:
    evaluate.add_argument("run_dir", type=Path, metavar="DIR", help="the --out of a finished 'stablebptt train'")
    evaluate.add_argument("--best", action="store_true", help="the controller of the lowest test loss (a run trained with --keep best) instead of the last one")
    evaluate.set_defaults(run=_evaluate)


@_command("reproduce", help="reproduce a figure of the paper: the toy examples or an experiment's whole sweep")
def _add_reproduce(reproduce: argparse.ArgumentParser) -> None:
    """``reproduce EXPERIMENT``: one subcommand per experiment of :data:`stablebptt.paper.registry.REPRODUCIBLE`, each with its own options."""
    from .paper.registry import REPRODUCIBLE, SWEEPS

    experiments = reproduce.add_subparsers(dest="experiment", required=True, parser_class=_Parser, metavar="EXPERIMENT")
    for name, what in REPRODUCIBLE.items():
        p = experiments.add_parser(name, help=what, description=f"Reproduce {what}.")
        add_options, run = (_add_sweep_options, _reproduce_sweep) if name in SWEEPS else _REPRODUCE[name]
        add_options(p, name)
        p.set_defaults(run=run)


def _add_toy_options(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument("--out", type=Path, metavar="DIR", required=True, help="output directory of the two figures")


def _add_lq_options(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument("--out", type=Path, metavar="DIR", required=True, help="output directory of the table")
    p.add_argument("--epochs", type=_positive_int, metavar="N", default=None, help="full-batch Adam steps per run (default 4000)")
    p.add_argument("--methods", type=_methods(), metavar="LIST", default=None, help="comma-separated methods (default R,M,C)")
    _add_quiet_option(p)


def _add_sweep_options(p: argparse.ArgumentParser, name: str) -> None:
    from .sweeps.backends import BACKENDS
    from .sweeps.presets import EXPERIMENTS, PRESETS
    from .sweeps.spec import GROUPINGS
    from .engine.optim import CLIP_MODES

    exp = EXPERIMENTS[name]
    p.add_argument("--out", type=Path, metavar="DIR", required=True, help="output directory (a sweep continues where it stopped)")
    p.add_argument("--preset", choices=PRESETS, default=None, help="quick (default: about ten minutes on 2 CPU cores) or paper (the paper's protocol)")
    p.add_argument("--epochs", type=_positive_int, metavar="N", default=None, help="epochs per run (default: the preset's)")
    p.add_argument("--seeds", type=_positive_int, metavar="K", default=None, help="seeds per setting (default: the preset's)")
    levels = ",".join(str(level) for level in exp.levels)
    p.add_argument("--levels", metavar="LIST", default=None, help=f"comma-separated levels of {exp.difficulty} (default the paper's: {levels})")
    p.add_argument("--methods", type=_methods(), metavar="LIST", default=None, help="comma-separated methods (default R,M,C,S)")
    p.add_argument("--clips", type=_names("clip mode", CLIP_MODES), metavar="LIST", default=None, help=f"comma-separated clip modes (default {','.join(CLIP_MODES)})")
    p.add_argument("--one-by-one", action="store_true", help="train runs one after another instead of batched (for timing)")
    p.add_argument("--group-by", choices=GROUPINGS, default=None, help="runs trained as one program: those of a difficulty and method (method, the default: measured faster) or every run of a difficulty (level)")
    p.add_argument("--x64", action="store_true", help="compute in float64")
    _add_remat_option(p)
    _add_checkpoint_option(p)
    _add_quiet_option(p)
    p.add_argument("--backend", choices=BACKENDS, default=None, help="where groups of runs train: local (default) or ray (a Ray cluster)")
    p.add_argument("--address", metavar="ADDR", default=None, help="with --backend ray: auto, HOST:PORT or ray://HOST:PORT (default: a new local Ray)")


def _add_brax_options(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument("--out", type=Path, metavar="DIR", required=True, help="output directory (the comparison continues where it stopped)")
    p.add_argument("--env", metavar="NAME", default=None, help="the Brax environment (default inverted_double_pendulum)")
    p.add_argument("--steps", type=_positive_int, metavar="N", default=None, help="episode length = horizon (default 100)")
    p.add_argument("--n-train", type=_positive_int, metavar="N", default=None, help="training initial states (default 64)")
    p.add_argument("--epochs", type=_positive_int, metavar="N", default=None, help="epochs per stablebptt run (default 20)")
    p.add_argument("--seeds", type=_positive_int, metavar="K", default=None, help="seeds, from 42 on (default 3)")
    p.add_argument("--methods", type=_methods(), metavar="LIST", default=None, help="comma-separated stablebptt methods (default R,M,C)")
    _add_checkpoint_option(p)
    _add_quiet_option(p)


@_command("report", help="rewrite a reproduce folder's table and figure from the runs it holds, training nothing; on a folder of such folders (results/), every one of them, then the claims table and the verdicts")
def _add_report(report: argparse.ArgumentParser) -> None:
    report.add_argument("out", type=Path, metavar="DIR", help="the --out of 'stablebptt reproduce cartpole|repulsion|quantum|brax', or a folder of them")
    report.add_argument("--readme", type=Path, metavar="FILE", action="append", default=[],
                        help="with a folder of results: also rewrite the generated blocks of FILE (may be repeated)")  # fmt: skip
    report.set_defaults(run=_report)


@_command("animate", help="animate a trained controller (GIF)")
def _add_animate(animate: argparse.ArgumentParser) -> None:
    animate.add_argument("run_dir", type=Path, metavar="DIR", help="a finished run directory")
    animate.add_argument("--out", type=Path, metavar="FILE", default=None, help="GIF to write (default DIR/animation.gif)")
    animate.add_argument("--sample", type=int, metavar="I", default=0, help="which test state to start from (default 0)")
    animate.add_argument("--fps", type=_positive_int, metavar="N", default=20, help="frames per second (default 20)")
    animate.set_defaults(run=_animate)


@_command("bench", help="seconds per epoch, updates/s and GFLOP/s of every task and method at the paper's settings")
def _add_bench(bench: argparse.ArgumentParser) -> None:
    from .engine.flows import FLOW_NAMES
    from .runs.compare import METHODS
    from .sweeps.presets import EXPERIMENTS
    from .tasks import TASKS

    paper_tasks = [exp.task for exp in EXPERIMENTS.values()]
    bench.add_argument("--tasks", type=_names("task", TASKS), metavar="LIST", default=paper_tasks, help=f"comma-separated tasks (default {','.join(paper_tasks)})")
    bench.add_argument("--methods", type=_names("method", FLOW_NAMES, upper=True), metavar="LIST", default=list(METHODS), help=f"comma-separated methods (default {','.join(METHODS)})")
    bench.add_argument("--epochs", type=_positive_int, metavar="K", default=3, help="timed epochs after one warm-up; the median is reported (default 3)")
    bench.add_argument("--out", type=Path, metavar="FILE", default=None, help="also write the table to FILE (markdown)")
    bench.add_argument("--runs", type=_positive_int, metavar="K", default=1, help="runs trained together as one vmapped program, as in a sweep group (default 1)")
    bench.add_argument("--x64", action="store_true", help="compute in float64")
    bench.set_defaults(run=_bench, messages="stderr")  # stdout holds the table




@_command("diagnose", help="measure how R's and M's adjoints grow along the horizon and say which flow to try")
def _add_diagnose(diagnose: argparse.ArgumentParser) -> None:
    """``stablebptt diagnose TASK [options]``: the gradient health of a task at its initial, warmed-up or a given
    controller (:mod:`stablebptt.tools.diagnose`); run by :func:`_diagnose`."""
    from .engine.flows import FLOW_NAMES

    tasks = diagnose.add_subparsers(dest="task", required=True, parser_class=_Parser, metavar="TASK", prog="stablebptt diagnose")
    for task, options in TASK_OPTIONS.items():
        p = tasks.add_parser(task, help=f"diagnose the {task} task")
        _add_task_options(p, options)
        p.add_argument("--params", type=Path, metavar="FILE", default=None, help="diagnose a trained controller: RUN/params.eqx or the run's folder (trained with the same task options)")
        p.add_argument("--warmup", type=_nonnegative_int, metavar="E", default=10,
                       help="epochs of training (the paper's protocol, --method) before measuring (default 10; 0: measure at the initial or given controller)")  # fmt: skip
        p.add_argument("--method", default="C", type=str.upper, choices=FLOW_NAMES, help="flow of the warm-up (default C)")
        p.add_argument("--batches", type=_positive_int, metavar="K", default=8, help="batches of training states measured (default 8)")
        p.add_argument("--batch-size", type=_positive_int, metavar="N", default=8, help="samples per batch (default 8)")
        p.add_argument("--n-train", type=_positive_int, metavar="N", default=256, help="training initial states of the warm-up (default 256); the first K batches are measured")
        p.add_argument("--seed", type=_nonnegative_int, metavar="N", default=42, help="seed of data and initial weights (default 42)")
        p.add_argument("--x64", action="store_true", help="compute in float64")
        p.add_argument("--out", type=Path, metavar="DIR", default=None, help="where to write diagnosis.json and diagnosis.png (default runs/diagnose-TASK-...)")
        p.set_defaults(task=task, command="diagnose", run=_diagnose)


def build_parser(*, complete: bool = False) -> argparse.ArgumentParser:
    """The command line; a command's options are added when it is chosen (``complete``: all of them now)."""
    parser = _Parser(prog="stablebptt", description="Train neural controllers through differentiable physics with stabilized BPTT.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"stablebptt {__version__}")
    parser.add_argument(
        "--no-compile-cache", action="store_true",
        help=f"do not keep compiled programs on disk (default: kept in {_cache_folder()}, or ${CACHE_ENV}; "
        "a second run of the same command then starts without compiling)",
    )  # fmt: skip
    parser.register("action", "commands", _Commands)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND", action="commands")
    for name, (settings, add) in COMMANDS.items():
        command = commands.add_parser(name, **settings)
        if complete:
            add(command)
            command.options_added = True
    return parser


# --- running the commands ----------------------------------------------------------------------------------------
def _config_from_args(args):
    from .runs.config import RunConfig

    task_options = {}
    for opt in TASK_OPTIONS[args.task] + COMMON_TASK_OPTIONS:
        value = getattr(args, opt.field)
        if value is not None:
            task_options[opt.field] = value
    return RunConfig.from_options(vars(args), task_options=task_options, dtype="float64" if args.x64 else "float32")


def _recorded_config(path: Path, command: str):
    """``(config, methods)`` recorded in ``path``: a run's ``config.json`` (methods None) or a comparison's
    ``compare.json`` (its methods), or a folder holding one; one-line errors naming the file."""
    import json

    from .runs.config import RunConfig

    path = Path(path)
    if path.is_dir():
        path = next((path / name for name in ("compare.json", "config.json") if (path / name).is_file()), path / "config.json")
    if not path.is_file():
        raise ValueError(f"{path} does not exist; give a run's config.json (or its folder) to --config")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise TypeError(f"it holds a JSON {type(data).__name__}, not an object of settings")
        if "base" in data and "methods" in data:  # a comparison's record
            if command != "compare":
                raise TypeError("it records a comparison; rerun it with 'stablebptt compare --config'")
            methods = data["methods"]
            if not isinstance(methods, list) or not methods or not all(isinstance(m, str) for m in methods):
                raise TypeError("its methods are not a list of method names")
            return RunConfig.from_dict({**data["base"], "method": methods[0]}).resolved(), methods
        return RunConfig.from_dict(data).resolved(), None
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError, KeyError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path} is not a valid run configuration ({reason}); fix that setting or give a task and options") from None


def _checkpoint_every(args) -> dict:
    return {} if args.checkpoint_every is None else {"checkpoint_every": args.checkpoint_every}


def _default_out(config) -> Path:
    from .tasks import DIFFICULTY

    knob = DIFFICULTY[config.task]
    tag = f"{knob.replace('n_', '')}{config.task_options[knob]}"
    return Path("runs") / f"{config.task}-{tag}-{config.method}-{config.clip}-seed{config.seed}"


def _enable_x64_for(run_dir: Path) -> None:
    from .runs.rundir import read_config
    from .engine.precision import set_float64

    if Path(run_dir).is_dir() and read_config(run_dir).dtype == "float64":
        set_float64()


def _train_or_compare(args) -> int:
    from .runs.lock import hold
    from .engine.precision import set_float64
    from .runs.compare import compare, format_table
    from .runs.single import train_run
    from .training import NonFiniteLossError

    recorded_methods = None
    if args.task is None:
        if args.config is None:
            raise ValueError(f"choose a task ({', '.join(TASK_OPTIONS)}) or rerun a recorded run with --config RUN/config.json")
        config, recorded_methods = _recorded_config(args.config, args.command)
        if args.command == "compare" and args.config_out is None:
            raise ValueError("compare --config needs --out DIR, the folder of the new comparison")
        if config.dtype == "float64":
            set_float64()
        args.out, args.overwrite, args.quiet, args.checkpoint_every = args.config_out, args.config_overwrite, args.config_quiet, None
    elif args.config is not None or args.config_out is not None:
        raise ValueError(
            f"--config reruns a recorded run with its own settings; give it without a task (stablebptt {args.command} --config FILE), "
            "or give a task without --config"
        )
    else:
        config = _config_from_args(args)
    if args.command == "train":
        out = args.out or _default_out(config)
        try:
            with hold(out):  # the default folder too (re-entrant when --out was given)
                outcome = train_run(config, out, overwrite=args.overwrite, progress=not args.quiet, **_checkpoint_every(args))
        except NonFiniteLossError as err:
            print(f"stablebptt: error: {err} (metrics of the epochs so far are in {out / 'metrics.csv'})", file=sys.stderr)
            return EXIT_DIVERGED
        if outcome.status == "finished":
            final = outcome.history[-1]
            kept = ""
            if config.keep == "best":
                from .training import best_epoch

                epoch = best_epoch(outcome.history)
                kept = f", best {outcome.history[epoch - 1]['test_loss']!r} at epoch {epoch} (best_params.eqx)"
            print(f"final test loss {final['test_loss']!r} after {len(outcome.history)} epochs{kept}; results in {out}")
        return 0

    methods = recorded_methods or getattr(args, "methods", None)
    rows = compare(config, args.out, *([methods] if methods else []), overwrite=args.overwrite, progress=not args.quiet, **_checkpoint_every(args))
    print(format_table(rows))
    print(f"table and figure in {args.out}")
    return 0


def _evaluate(args) -> int:
    from .runs.single import evaluate_run

    _enable_x64_for(args.run_dir)
    result = evaluate_run(args.run_dir, best=args.best)
    which = f" (the best controller, epoch {result['epoch']} of {result['epochs']})" if args.best else ""
    print(f"test loss {result['test_loss']!r}{which}")
    return 0


def _reproduce_toy(args) -> int:
    from .paper import toy

    toy.reproduce_toy(args.out)
    print(f"figures in {args.out}")
    return 0


def _reproduce_lq(args) -> int:
    from .paper.lq import LQSpec, run_lq, table_markdown

    spec = LQSpec(**({"epochs": args.epochs} if args.epochs else {}), **({"methods": tuple(args.methods)} if args.methods else {}))
    print(table_markdown(spec, run_lq(spec, args.out, progress=not args.quiet)), end="")
    print(f"table in {args.out}")
    return 0


def _reproduce_sweep(args) -> int:
    import time

    from .sweeps import report, run as sweep

    if args.backend == "ray":
        from .sweeps.ray_backend import RayBackend, import_ray

        try:
            import_ray()
        except ImportError as err:
            print(f"stablebptt: error: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if args.checkpoint_every is not None:
            raise ValueError("reproduce with --backend ray takes no --checkpoint-every: Ray workers train each group in a temporary folder")
        backend = RayBackend(address=args.address)
    elif args.address is not None:
        raise ValueError("--address names a Ray cluster; add --backend ray")
    else:
        backend = sweep.LocalBackend(**_checkpoint_every(args))
    levels = None if args.levels is None else sweep.parse_levels(args.experiment, args.levels)
    given = {"preset": args.preset, "levels": levels, "methods": args.methods, "clips": args.clips}  # None: the preset's
    spec = sweep.SweepSpec.from_preset(
        args.experiment, epochs=args.epochs, seeds=args.seeds, dtype="float64" if args.x64 else "float32", remat=args.remat,
        **{k: v for k, v in given.items() if v is not None},
    )  # fmt: skip
    if args.one_by_one and args.group_by is not None:
        raise ValueError("--group-by has no effect with --one-by-one (each run then trains alone); drop one of them")
    grouping = {} if args.group_by is None else {"group_by": args.group_by}
    start = time.perf_counter()
    try:
        sweep.run_sweep(spec, args.out, batched=not args.one_by_one, progress=not args.quiet, backend=backend, **grouping)
    except sweep.GroupsFailedError as err:
        print(f"stablebptt: error: {err}", file=sys.stderr)
        return 1  # neither bad input nor a diverged run: the cluster failed
    held = sweep.read_sweep(args.out)  # this command's runs and those of earlier grids in the same folder
    rows = report.write_report(held, args.out)
    print(report.table_markdown(held, rows), end="")
    print(f"sweep time {time.perf_counter() - start:.1f} s; table, figure and runs in {args.out}")
    return 0


def _reproduce_brax(args) -> int:
    from .paper.brax_peer import PeerSpec, run_peer

    options = {"env": args.env, "n_steps": args.steps, "epochs": args.epochs, "n_train": args.n_train}
    spec = PeerSpec(**{k: v for k, v in options.items() if v is not None},
                    **({"seeds": range(42, 42 + args.seeds)} if args.seeds else {}),
                    **({"methods": tuple(args.methods)} if args.methods else {}))  # fmt: skip
    run_peer(spec, args.out, progress=not args.quiet, **_checkpoint_every(args))
    print((args.out / "table.md").read_text(encoding="utf-8"), end="")
    print(f"table, figure and runs in {args.out}")
    return 0


_REPRODUCE = {"toy": (_add_toy_options, _reproduce_toy), "lq": (_add_lq_options, _reproduce_lq), "brax": (_add_brax_options, _reproduce_brax)}
"""The options and the runner of each experiment that is not a sweep."""


def _report(args) -> int:
    """Tables and figure of a sweep or Brax comparison from what its runs wrote so far (unfinished cells show "—");
    on a folder of results, every folder's, then the claims and the READMEs' generated blocks."""
    from .paper import brax_peer
    from .paper import claims
    from .sweeps import report, run as sweep

    out = args.out
    if (out / sweep.SWEEP_CONFIG).is_file() or (out / brax_peer.PEER_CONFIG).is_file():
        if args.readme:
            raise ValueError("--readme goes with a folder of results (e.g. results/), not with one sweep or comparison")
        if (out / sweep.SWEEP_CONFIG).is_file():
            report.write_report(sweep.read_sweep(out), out)
        else:
            spec = brax_peer.PeerSpec.read(out)
            brax_peer.write_report(spec, out)
        print((out / "table.md").read_text(encoding="utf-8"), end="")
        print(f"table and figure in {out}")
        return 0
    folders = claims.result_folders(out)
    if not folders:
        raise ValueError(
            f"{out} holds neither {sweep.SWEEP_CONFIG} nor {brax_peer.PEER_CONFIG}, nor folders that do: give the --out of 'stablebptt reproduce' or a folder of them"
        )
    for readme in args.readme:
        if not readme.is_file():
            raise ValueError(f"--readme {readme} is not a file; give a Markdown file with generated blocks")
    for folder in folders:
        if (folder / sweep.SWEEP_CONFIG).is_file():
            report.write_report(sweep.read_sweep(folder), folder)
        else:
            spec = brax_peer.PeerSpec.read(folder)
            brax_peer.write_report(spec, folder)
        print(f"table and figure in {folder}")
    rows, judged = claims.write_claims(out)
    blocks = claims.readme_blocks(rows, judged, claims.protocol_text(out))
    for readme in [out / "README.md", *args.readme]:
        if readme.is_file() and claims.rewrite_blocks(readme, blocks):
            print(f"rewrote the generated blocks of {readme}")
    print(f"claims in {out / 'claims.md'} ({len(rows)} comparisons, {len(judged)} verdicts)")
    return 0


def _animate(args) -> int:
    from .tools.animate import animate_run

    _enable_x64_for(args.run_dir)
    path, frames = animate_run(args.run_dir, args.out, sample=args.sample, fps=args.fps)
    print(f"wrote {path} ({frames} frames)")
    return 0


def _bench(args) -> int:
    from .atomic import atomic_write_text
    from .runs.rundir import claim_output
    from .tools.bench import format_bench_table, is_bench_table, run_bench

    if args.out is not None:
        claim_output(args.out, file=True, what="table written by 'stablebptt bench'", mine=is_bench_table, not_in=_output_markers())
    rows = run_bench(args.tasks, args.methods, epochs=args.epochs, runs=args.runs, dtype="float64" if args.x64 else "float32")
    table = format_bench_table(rows)
    print(table, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, table)
        print(f"table in {args.out}")
    return 0


def _output_markers() -> dict[str, str]:
    """The marker file of every command's output folder → what that folder holds."""
    from .paper import brax_peer, lq, toy
    from .runs import compare, rundir
    from .sweeps import run as sweep

    return {
        rundir.CONFIG: "run", compare.COMPARE_CONFIG: "comparison", sweep.SWEEP_CONFIG: "sweep",
        brax_peer.PEER_CONFIG: "Brax comparison", toy.TOY_CONFIG: "set of toy figures", lq.LQ_CONFIG: "LQ table",
    }  # fmt: skip


class _Console(logging.Handler):
    """Prints each message of the package's loggers as it is, to ``sys.stdout`` or ``sys.stderr``
    as they are at that moment (so that a redirected or captured stream receives it)."""

    def __init__(self, stream: str):
        super().__init__(logging.INFO)
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            out = getattr(sys, self.stream)
            out.write(self.format(record) + "\n")
            out.flush()
        except Exception:  # noqa: BLE001 - logging's own policy for a handler that fails
            self.handleError(record)


@contextlib.contextmanager
def _messages_to(stream: str):
    """While a command runs, the ``stablebptt`` loggers' INFO messages (what a run, sweep or comparison is doing) print plainly."""
    logger = logging.getLogger("stablebptt")
    handler, level, propagate = _Console(stream), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.propagate = False  # a root handler that a library installs (Brax's absl does) would print each message again
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _diagnose(args) -> int:
    """Warm up (or load) the controller, measure, print the verdict, write ``diagnosis.json`` and ``diagnosis.png``."""
    import json
    import time

    import equinox as eqx
    import jax

    from .atomic import atomic_write_text
    from .plots import save_figure
    from .runs import memory
    from .runs.config import RunConfig
    from .runs.lock import hold
    from .runs.rundir import claim_output
    from .runs.single import build
    from .tasks import DIFFICULTY
    from .tools.diagnose import diagnose
    from .training import train

    start = time.perf_counter()
    task_options = {o.field: getattr(args, o.field) for o in TASK_OPTIONS[args.task] + COMMON_TASK_OPTIONS if getattr(args, o.field) is not None}
    n = args.batches * args.batch_size
    if n > args.n_train:
        raise ValueError(f"--batches {args.batches} of --batch-size {args.batch_size} need {n} training states; give --n-train {n} or more")
    config = RunConfig.from_options(vars(args), task_options=task_options, epochs=1, n_test=args.batch_size, dtype="float64" if args.x64 else "float32")
    memory.check_fits(config, apart={"warmup": args.warmup})  # the warm-up's metrics: one row per epoch
    knob = DIFFICULTY[config.task]
    setting = f"{config.task} {knob.replace('n_', '')} {config.task_options[knob]}"
    out = args.out or Path("runs") / f"diagnose-{setting.replace(' ', '-')}"
    claim_output(out)
    setup = build(config)
    policy = setup.policy
    if args.params is not None:
        path = args.params / "params.eqx" if args.params.is_dir() else args.params
        if not path.is_file():
            raise ValueError(f"--params {args.params}: no such controller file; give a finished run's folder or its params.eqx")
        try:
            policy = eqx.tree_deserialise_leaves(path, policy)
        except Exception as err:  # noqa: BLE001 - a damaged file or another controller: Equinox raises many kinds
            raise ValueError(f"{path} is not a controller of {args.task} with these options ({str(err).splitlines()[0][:100]}); give the task options it was trained with") from None
    with hold(out):
        if args.warmup:
            result = train(policy, setup.task.problem, setup.train_x, setup.test_x, flow=config.flow(), optimizer=config.optimizer(),
                           epochs=args.warmup, batch_size=config.batch_size, backward=config.backward(setup.task))  # fmt: skip
            policy = result.policy
            print(f"warm-up epochs of {config.method}: {args.warmup}, test loss {result.initial['test_loss']:.4g} -> {result.history[-1]['test_loss']:.4g}")
        measured = jax.tree.map(lambda a: a[:n], setup.train_x)
        found = diagnose(policy, setup.task.problem, measured, batches=args.batches, batch_lanes=setup.task.batch_lanes)
        seconds = time.perf_counter() - start
        record = {"task": config.task, "task_options": config.task_options, "params": None if args.params is None else str(args.params),
                  "warmup_epochs": args.warmup, "warmup_method": config.method, "batch_size": args.batch_size, "seed": config.seed,
                  "dtype": config.dtype, "seconds": seconds, **found.summary()}  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "diagnosis.json", json.dumps(record, indent=2) + "\n")
        save_figure(found.figure(f"{setting}: {n} training states, warm-up epochs of {config.method}: {args.warmup}"), out / "diagnosis.png")
    print(f"verdict: {found.verdict()}")
    print(f"diagnosis.json and diagnosis.png in {out} ({seconds:.1f} s)")
    return 0


WRITERS = ("train", "compare", "reproduce", "animate", "bench")  # commands whose --out one process at a time may write


def _run(args) -> int:
    from .runs.lock import hold

    if getattr(args, "x64", False):
        from .engine.precision import set_float64

        set_float64()
    out = getattr(args, "out", None) if args.command in WRITERS else None
    with _messages_to(getattr(args, "messages", "stdout")), hold(out) if out is not None else contextlib.nullcontext():
        return args.run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stablebptt`` command; returns the exit code."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # also while JAX is still being imported
        print("stablebptt: interrupted; finished runs are unchanged and the interrupted run was not marked finished", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error already printed
        return int(exit_.code or 0)
    from .runs.lock import LockError
    from .runs.rundir import RunDirError
    from .simulators import MissingExtraError

    _use_compile_cache(args.no_compile_cache)
    try:
        return _run(args)
    except (ValueError, RunDirError, FileNotFoundError, MissingExtraError, LockError) as err:
        print(f"stablebptt: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:  # the file system refused (permissions, a full disk, a file where a folder was expected)
        where = f" ({err.filename})" if err.filename else ""
        print(f"stablebptt: error: {err.strerror or err}{where}; check the path, its permissions and the free space", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
