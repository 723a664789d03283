"""A Brax environment as a task (needs ``pip install '.[brax]'``); difficulty = the environment.

The state is a batch of Brax ``State``s, the control a batch of actions in
[−1, 1], the loss minus the mean return over ``n_steps`` (or, for cart-pole
environments, the poles' squared angles) (rewards stop at the
end of an episode: :mod:`stablebptt.simulators.brax`). Initial states are
``env.reset`` of split keys, fixed per run like every task's data.
"""

from __future__ import annotations

import dataclasses

import jax

from .. import validate
from ..engine.networks import DenseNet, dense_size
from ..simulators import brax as brax_sim
from .base import Task, TaskConfig, TaskSizes, check_config

__all__ = ["BraxConfig", "make_policy", "make_task"]


@dataclasses.dataclass(frozen=True)
class BraxConfig(TaskConfig):
    """A Brax environment and its horizon.

    ``env``: a name of ``brax.envs`` (``inverted_double_pendulum``, ``reacher``, ...).
    ``backend``: a differentiable Brax pipeline. ``loss``: ``reward`` (minus the
    mean return) or ``upright`` (the poles' squared angles, cart-pole environments). ``width``/``depth``: the
    controller's hidden layers (default 4 × 32, the size of Brax APG's policy).
    """

    env: str = "inverted_double_pendulum"
    n_steps: int = 100
    backend: str = "generalized"
    loss: str = "reward"
    width: int = 32
    depth: int = 4

    def __post_init__(self):
        check_config("brax", self, positive_ints=("n_steps", "width", "depth"), flags={"n_steps": "steps"})
        validate.choice("Brax environment", self.env, brax_sim.env_names())
        if self.backend not in brax_sim.BACKENDS:
            raise ValueError(f"Brax backend {self.backend!r} cannot be differentiated here; choose one of {', '.join(brax_sim.BACKENDS)}")
        brax_sim.check_loss(self.env, self.loss)

    def sizes(self) -> TaskSizes:
        """The state's numbers from the environment's reset, traced without computing (:func:`~stablebptt.simulators.brax.env_sizes`)."""
        state, observations, actions = brax_sim.env_sizes(self.env, self.backend)
        hidden = (self.width,) * self.depth
        return TaskSizes(state, dense_size(observations, actions, hidden), sum(hidden))


def make_policy(env, config: BraxConfig, key: jax.Array, dtype=None) -> brax_sim.ObservationPolicy:
    """Observation → ``depth`` × ``width`` tanh → actions, squashed by tanh; last kernel zero (action 0 at first)."""
    net = DenseNet(
        brax_sim.observation_size(env), env.action_size, (config.width,) * config.depth, key=key, zero_last_kernel=True, dtype=dtype
    )
    return brax_sim.ObservationPolicy(net)


def make_task(config: BraxConfig) -> Task:
    env = brax_sim.get_env(config.env, config.backend)
    problem = brax_sim.brax_problem(env, config.n_steps, step_loss=brax_sim.LOSSES[config.loss])

    def sample_initial_states(key, n, dtype=None):
        states = brax_sim.reset(env, key, n)
        if dtype is None:
            return states
        return jax.tree.map(lambda a: a.astype(dtype) if jax.numpy.issubdtype(a.dtype, jax.numpy.floating) else a, states)

    return Task(
        "brax",
        config,
        problem,
        sample_initial_states,
        lambda key, dtype=None: make_policy(env, config, key, dtype),
        batch_lanes=False,  # reacher: R compiles in 30 s this way, not in over 5 minutes
    )
