"""The command line's parser: its choices are the registries' names, and each reproduce experiment takes only its own options."""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import re
from pathlib import Path

import pytest

from stablebptt import cli
from stablebptt.cli import build_parser, main
from stablebptt.engine.flows import FLOW_NAMES
from stablebptt.engine.optim import ADAM_FORMS, CLIP_MODES
from stablebptt.paper.registry import REPRODUCIBLE, SWEEPS
from stablebptt.sweeps.backends import BACKENDS
from stablebptt.sweeps.presets import PRESETS
from stablebptt.sweeps.spec import GROUPINGS
from stablebptt.tasks import TASKS

ROOT = Path(__file__).resolve().parents[2]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: a for a in parser._actions for flag in a.option_strings if flag.startswith("--") and flag != "--help"}


PARSER = build_parser(complete=True)  # every command's options, as when each is chosen
COMMANDS = subcommands(PARSER)
EXPERIMENTS = subcommands(COMMANDS["reproduce"])

OWN = {
    "toy": {"--out"},
    "lq": {"--out", "--epochs", "--methods", "--quiet"},
    "brax": {"--out", "--env", "--steps", "--n-train", "--epochs", "--seeds", "--methods", "--checkpoint-every", "--quiet"},
    **{name: {"--out", "--preset", "--epochs", "--seeds", "--levels", "--methods", "--clips", "--one-by-one", "--group-by", "--x64",
              "--remat", "--checkpoint-every", "--quiet", "--backend", "--address"} for name in SWEEPS},
}  # fmt: skip


def test_choices_are_the_registries_names():
    assert list(EXPERIMENTS) == list(REPRODUCIBLE) and set(SWEEPS) < set(REPRODUCIBLE)
    for command in ("train", "compare"):
        tasks = subcommands(COMMANDS[command])
        assert list(tasks) == list(cli.TASK_OPTIONS) and set(tasks) <= set(TASKS)
        for task, parser in tasks.items():
            found = options(parser)
            assert list(found["--clip"].choices) == list(CLIP_MODES) and list(found["--adam"].choices) == list(ADAM_FORMS)
            if command == "train":
                assert list(found["--method"].choices) == list(FLOW_NAMES)
            config = TASKS[task][0]
            fields = {f for f in config.__dataclass_fields__}
            assert {opt.field for opt in cli.TASK_OPTIONS[task] + cli.COMMON_TASK_OPTIONS} <= fields  # every task option is the task's
    for name in SWEEPS:
        found = options(EXPERIMENTS[name])
        assert list(found["--preset"].choices) == list(PRESETS)
        assert list(found["--group-by"].choices) == list(GROUPINGS)
        assert list(found["--backend"].choices) == list(BACKENDS)


@pytest.mark.parametrize("name", list(REPRODUCIBLE))
def test_each_experiment_takes_only_its_own_options(name):
    assert set(options(EXPERIMENTS[name])) == OWN[name]


def test_the_options_a_memory_refusal_names_exist():
    from stablebptt.runs.memory import FLAGS

    every = set().union(*(options(p) for c in COMMANDS.values() for p in [c, *subcommands_or_none(c).values()]))
    assert set(FLAGS.values()) <= every, set(FLAGS.values()) - every


def subcommands_or_none(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(found[0].choices) if found else {}


FOREIGN = [(name, flag) for name in REPRODUCIBLE for flag in sorted(set().union(*OWN.values()) - OWN[name])]


@pytest.mark.parametrize("name, flag", FOREIGN, ids=[f"{n} {f}" for n, f in FOREIGN])
def test_another_experiments_option_is_one_line(name, flag, capsys, tmp_path):
    value = [] if options(EXPERIMENTS[next(n for n in OWN if flag in OWN[n])])[flag].nargs == 0 else ["2"]
    assert main(["reproduce", name, "--out", str(tmp_path / "x"), flag, *value]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == [f"stablebptt reproduce {name}: error: reproduce {name} takes no {flag} (see 'stablebptt reproduce {name} --help')"]
    assert not (tmp_path / "x").exists()


def test_the_documented_reproduce_commands_parse_to_their_meaning():
    args = PARSER.parse_args("reproduce cartpole --preset paper --levels 3 --methods R,C --clips value,norm --seeds 3 --out DIR".split())
    assert (args.experiment, args.preset, args.levels, args.methods, args.clips, args.seeds, args.out) == (
        "cartpole", "paper", "3", ["R", "C"], ["value", "norm"], 3, Path("DIR")
    )  # fmt: skip
    assert args.run is cli._reproduce_sweep and args.epochs is None and args.backend is None and not args.quiet
    args = PARSER.parse_args("reproduce brax --env reacher --steps 50 --methods c,r --out DIR".split())
    assert (args.env, args.steps, args.methods, args.seeds, args.run) == ("reacher", 50, ["C", "R"], None, cli._reproduce_brax)
    args = PARSER.parse_args("reproduce lq --out DIR --epochs 10".split())
    assert (args.epochs, args.methods, args.run) == (10, None, cli._reproduce_lq)
    documented = re.findall(r"`stablebptt (reproduce [^`]*--out results/[^`]*)`", (ROOT / "results" / "README.md").read_text(encoding="utf-8"))
    assert {d.split()[1] for d in documented} == set(REPRODUCIBLE)  # every experiment's committed command is documented
    for line in documented:
        args = PARSER.parse_args(line.split())
        assert args.out == Path(line.split("--out ")[1].split()[0]) and args.experiment == line.split()[1]


def test_help_and_version_answer_without_importing_jax():
    code = (
        "import sys, contextlib, io\n"
        "from stablebptt.cli import main\n"
        "for argv in (['--help'], ['--version'], []):\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:\n"
        "        code = main(argv)\n"
        "    assert (out.getvalue() + err.getvalue()).strip(), argv\n"
        "assert 'jax' not in sys.modules and 'equinox' not in sys.modules, sorted(m for m in sys.modules if 'jax' in m)[:5]\n"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr


def test_a_chosen_command_has_the_same_options_as_the_complete_parser():
    lazy = build_parser()
    with contextlib.redirect_stdout(io.StringIO()) as out, pytest.raises(SystemExit):
        lazy.parse_args(["bench", "--help"])
    assert "--methods" in out.getvalue() and "--runs" in out.getvalue()
    complete_help = COMMANDS["bench"].format_help()
    assert out.getvalue() == complete_help
