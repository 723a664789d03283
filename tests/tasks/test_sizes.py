"""Each task's sizes, known from its configuration alone, are the numbers its arrays hold once built."""

from __future__ import annotations

import math

import jax
import pytest

from stablebptt.engine.updates import trainable
from stablebptt.tasks import TaskConfig, make_task, task_config


def numbers(tree) -> int:
    return sum(math.prod(a.shape) for a in jax.tree.leaves(tree))


@pytest.mark.parametrize(
    "task, options",
    [("cartpole", {"n_poles": 1}), ("cartpole", {"n_poles": 3}), ("repulsion", {}), ("repulsion", {"n_drivers": 3, "n_evaders": 5}),
     ("quantum", {}), ("quantum", {"n_points": 41}), ("linear", {})],
)  # fmt: skip
def test_the_state_and_weights_counted_from_the_settings_are_those_built(task, options):
    config = task_config(task, **options)
    built = make_task(task, **options)
    key = jax.random.key(0)
    sizes = config.sizes()
    assert sizes.state == numbers(built.sample_initial_states(key, 1))
    assert sizes.weights == numbers(trainable(built.make_policy(key))[0])
    assert sizes.intermediates >= 1


def test_a_task_configuration_must_say_its_sizes():
    assert getattr(TaskConfig.sizes, "__isabstractmethod__", False)
    counts = task_config("repulsion", n_drivers=2, n_evaders=4).sizes()
    assert counts.intermediates == 200 + 3 * (4 + 8 + 16)  # the hidden layers and every pair's offset and distance
