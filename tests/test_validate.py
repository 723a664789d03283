"""The one place settings are checked: each kind of bad value gets its one-line message, and every settings class uses it."""

from __future__ import annotations

import math

import pytest

from stablebptt import validate
from stablebptt.paper.lq import LQSpec
from stablebptt.runs.config import RunConfig
from stablebptt.sweeps.presets import parse_levels
from stablebptt.sweeps.spec import SweepSpec
from stablebptt.tasks import TaskConfig, task_config
from stablebptt.tasks.cartpole import CartPoleConfig
from stablebptt.tasks.linear import LinearConfig
from stablebptt.tasks.repulsion import RepulsionConfig


@pytest.mark.parametrize(
    "check, message",
    [
        (lambda: validate.positive_int("epochs", 0), "epochs=0; expected a positive integer"),
        (lambda: validate.positive_int("epochs", True), "epochs=True; expected a positive integer"),  # a bool is not a count
        (lambda: validate.positive_int("epochs", 2.0), "epochs=2.0; expected a positive integer"),
        (lambda: validate.positive_int(None, -3), "-3 must be a positive integer"),  # for argparse, which names the option
        (lambda: validate.integer("seed", -1, low=0), "seed=-1; expected a non-negative integer"),
        (lambda: validate.integer("sample", 16, low=0, high=15), "sample=16; expected an integer 0..15"),
        (lambda: validate.integer("k", 3, low=5, expected="5 or more steps"), "k=3; expected 5 or more steps"),
        (lambda: validate.number("learning_rate", -1.0, positive=True), "learning_rate=-1.0; expected a positive finite number"),
        (lambda: validate.number("learning_rate", math.nan, positive=True), "learning_rate=nan; expected a positive finite number"),
        (lambda: validate.number("learning_rate", "0.1", positive=True), "learning_rate='0.1'; expected a positive finite number"),
        (lambda: validate.number("gravity", math.inf), "gravity=inf; expected a finite number"),
        (lambda: validate.number("rc", -0.5, low=0), "rc=-0.5; expected a finite number >= 0"),
        (lambda: validate.number(None, False), "False must be a finite number"),
        (lambda: validate.choice("clip mode", "max", ("none", "value", "norm")), "unknown clip mode 'max'; choose one of none, value, norm"),
        (lambda: validate.choice("preset", ["quick"], {"quick": 1, "paper": 2}), "unknown preset ['quick']; choose one of quick, paper"),
        (lambda: validate.names("R,X", "method", "RMC", upper=True), "unknown method 'X'; choose one of R, M, C"),
        (lambda: validate.names(" , ", "method", "RMC"), "no method given; choose one or more of R, M, C"),
        (lambda: validate.distinct("levels", [1.0, 1.0]), "levels [1.0, 1.0] names one value twice"),
        (lambda: validate.known_settings("config", {"epochs": 1, "epochz": 2}, ["epochs"]), "config has unknown setting 'epochz'"),
        # beyond 64 bits: refused as values, whatever the range allows; too long to print: named by its bits
        (lambda: validate.integer("seed", 2**63, low=0), "seed=9223372036854775808; expected a non-negative integer that fits in 64 bits (|x| < 2**63)"),
        (lambda: validate.integer("offset", -(2**63) - 1), "offset=-9223372036854775809; expected an integer that fits in 64 bits (|x| < 2**63)"),
        (lambda: validate.positive_int(None, 2**70), "1180591620717411303424 must be a positive integer that fits in 64 bits (|x| < 2**63)"),
        (lambda: validate.positive_int("epochs", 10**5000), "epochs=<a 16610-bit integer>; expected a positive integer that fits in 64 bits (|x| < 2**63)"),
        (lambda: validate.number("learning_rate", 10**400, positive=True), "learning_rate=<a 1329-bit integer>; expected a positive finite number"),
    ],
)
def test_each_kind_of_bad_value_has_its_one_line_message(check, message):
    with pytest.raises(ValueError) as err:
        check()
    assert str(err.value) == message


def test_good_values_pass_through():
    assert validate.positive_int("epochs", 3) == 3
    assert validate.integer("seed", 2**63 - 1, low=0) == 2**63 - 1 and validate.integer("offset", -(2**63) + 1) == -(2**63) + 1  # 64 bits
    assert validate.number("gravity", 10**300) == 10**300  # an integer a float holds
    assert validate.number("rc", 0, low=0) == 0
    assert validate.choice("task", "cartpole", {"cartpole": None}) == "cartpole"
    assert validate.names("r, c,", "method", "RMC", upper=True) == ["R", "C"]
    assert validate.names(["none", "norm"], "clip mode", ("none", "value", "norm")) == ["none", "norm"]


def test_differences_name_nested_settings_and_leave_out_ignored_ones():
    old = {"epochs": 2, "task_options": {"n_poles": 1, "n_steps": 10}, "levels": [1]}
    new = {"epochs": 3, "task_options": {"n_poles": 2, "n_steps": 10}, "levels": [2], "seed": 7}
    assert validate.differences(old, new, ignore=("levels",)) == [
        "epochs (2 vs 3)",
        "seed (None vs 7)",
        "task_options.n_poles (1 vs 2)",
    ]
    assert validate.differences(old, old) == []


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: RunConfig(epochs=0), "epochs=0; expected a positive integer"),
        (lambda: RunConfig(learning_rate=True), "learning_rate=True; expected a positive finite number"),
        (lambda: RunConfig(clip="max"), "unknown clip mode 'max'; choose one of none, value, norm"),
        (lambda: RunConfig(seed=-2), "seed=-2; expected a non-negative integer"),
        (lambda: RunConfig(seed=99999999999999999999), "seed=99999999999999999999; expected a non-negative integer that fits in 64 bits (|x| < 2**63)"),
        (lambda: RunConfig(task_options={"n_steps": 2**64}), "cartpole: n_steps=18446744073709551616; expected a positive integer that fits in 64 bits (|x| < 2**63)"),
        (lambda: RunConfig(task="pendulum"), "unknown task 'pendulum'; choose one of cartpole, repulsion, quantum, brax, linear"),
        (lambda: RunConfig.from_dict({"epochz": 3}), "config has unknown setting 'epochz'"),
        (lambda: SweepSpec.from_preset("pendulum"), "unknown experiment 'pendulum'; choose one of cartpole, repulsion, quantum"),
        (lambda: SweepSpec.from_preset("cartpole", seeds=0), "seeds=0; expected a positive number of seeds (--seeds 1 or more)"),
        (lambda: parse_levels("toy", "1"), "unknown experiment 'toy'; choose one of cartpole, repulsion, quantum"),
        (lambda: LQSpec(epochs=0), "epochs=0; expected a positive integer"),
        (lambda: LQSpec(control_costs=(0.1, -1.0)), "control_cost=-1.0; expected a finite number >= 0"),
        (lambda: LQSpec(methods=("R", "r")), "methods ['R', 'R'] names one value twice"),
        (lambda: CartPoleConfig(pole_mass=0.0), "cartpole: pole_mass=0.0; expected a positive finite number"),
        (lambda: RepulsionConfig(n_drivers=True), "repulsion: drivers=True; expected a positive integer"),
        (lambda: LinearConfig(control_cost=-1.0), "linear: control_cost=-1.0; expected a finite number >= 0"),
    ],
)
def test_every_settings_class_reports_through_the_validators(build, message):
    with pytest.raises(ValueError) as err:
        build()
    assert str(err.value) == message


def test_a_task_declares_its_own_rule_for_a_run_and_runconfig_applies_it():
    assert all(isinstance(task_config(name), TaskConfig) for name in ("cartpole", "repulsion", "quantum", "linear"))
    task_config("quantum", target=6)  # the task accepts the eigenstate...
    with pytest.raises(ValueError, match="quantum target 6 cannot be learned"):
        task_config("quantum", target=6).check_trainable()  # ...its rule for a run does not
    with pytest.raises(ValueError, match="quantum target 6 cannot be learned"):
        RunConfig(task="quantum", task_options={"target": 6})
    task_config("cartpole", n_poles=9).check_trainable()  # the default rule: nothing to refuse
