"""Brax environments as control problems: a batch of environments stepped together.

Needs ``pip install '.[brax]'``. Only Brax's differentiable
pipelines are offered (``generalized`` by default, also ``positional`` and
``spring``): the ``mjx`` pipeline's solver loop refuses reverse-mode
differentiation and its state carries integer leaves.

The state ``x`` of the problem is Brax's own ``State`` with a batch axis on
every leaf (``jax.vmap(env.reset)``); the controller sees it whole, so wrap a
network that reads observations in :class:`ObservationPolicy`.

**Episodes that end.** When an environment reports ``done``, its episode is
over: from the next step on its state is frozen at the terminal state and its
reward is 0, so the loss counts exactly the rewards of the episode (as Brax's
evaluator does) and no gradient flows through physics after the end. Nothing
is reset inside a rollout; the fixed initial states are the episodes' starts.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import warnings
from types import ModuleType
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from ..engine.problem import ControlProblem
from . import require

__all__ = [
    "BACKENDS",
    "import_brax_envs",
    "env_names",
    "env_sizes",
    "observation_size",
    "get_env",
    "ObservationPolicy",
    "reset",
    "batch_step",
    "reward_loss",
    "upright_loss",
    "LOSSES",
    "check_loss",
    "brax_problem",
    "episode_returns",
]

BACKENDS = ("generalized", "positional", "spring")


def import_brax_envs() -> ModuleType:
    """``brax.envs``, imported quietly (its optional GPU back ends print at import)."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return require("brax.envs", "brax")


def env_names() -> list[str]:
    """The names of Brax's registered environments."""
    return sorted(import_brax_envs()._envs)


def get_env(name: str, backend: str = "generalized", **kwargs: Any) -> Any:
    """``brax.envs.get_environment(name, backend=backend)``, with one-line errors for bad names."""
    envs = import_brax_envs()
    if name not in envs._envs:
        raise ValueError(f"unknown Brax environment {name!r}; choose one of {', '.join(sorted(envs._envs))}")
    if backend not in BACKENDS:
        raise ValueError(
            f"Brax backend {backend!r} cannot be differentiated here; choose one of {', '.join(BACKENDS)} "
            "(mjx's solver loop refuses reverse-mode differentiation)"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Brax's notice that MJX is its maintained engine
        return envs.get_environment(name, backend=backend, **kwargs)


@functools.cache
def env_sizes(name: str, backend: str = "generalized") -> tuple[int, int, int]:
    """``(state, observation_size, action_size)`` of an environment: ``state`` counts the numbers of one
    ``env.reset`` state, traced by ``jax.eval_shape`` (nothing computed); once per environment and process."""
    env = get_env(name, backend)
    state = _traced_reset(env)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(state)), state.obs.shape[-1], int(env.action_size)


def observation_size(env: Any) -> int:
    """The length of ``env``'s observation vector, from the shape of a traced ``env.reset`` (nothing computed).

    Brax's own ``env.observation_size`` runs a reset op by op, which takes seconds on a CPU.
    """
    return _traced_reset(env).obs.shape[-1]


def _traced_reset(env: Any) -> Any:
    """The shapes and dtypes of one ``env.reset`` state (``jax.eval_shape``: nothing computed)."""
    return jax.eval_shape(env.reset, jax.random.key(0))


class ObservationPolicy(eqx.Module):
    """A controller of a batch of Brax states: ``tanh(net(x.obs))`` (actions in [−1, 1]).

    ``net`` maps observations ``(batch, observation_size)`` to ``(batch, action_size)``
    (a batch-first network, or ``sb.PerSample(module)``). ``squash=False``
    passes the network's output through unchanged.
    """

    net: Callable
    squash: bool = eqx.field(static=True, default=True)

    def __call__(self, x: Any) -> jax.Array:
        action = self.net(x.obs)
        return jnp.tanh(action) if self.squash else action


def reset(env: Any, key: jax.Array, n: int) -> Any:
    """``n`` initial states, ``jax.vmap(env.reset)`` over ``split(key, n)``.

    Compiled once per environment object and batch size (op by op it is ~3× slower), so the
    training and test sets of one environment share one program.
    """
    return _reset(env, jax.random.split(key, n))


@functools.partial(jax.jit, static_argnums=0)
def _reset(env: Any, keys: jax.Array) -> Any:
    return jax.vmap(env.reset)(keys)


def batch_step(env: Any) -> Callable[[Any, jax.Array], Any]:
    """``step(x, actions)`` for a batch of Brax states; an ended episode stays frozen with reward 0."""
    single = env.step

    def step(x: Any, action: jax.Array) -> Any:
        stepped = jax.vmap(single)(x, action)
        ended = x.done > 0

        def keep(old, new):
            mask = jnp.reshape(ended, ended.shape + (1,) * (jnp.ndim(new) - 1))
            return jnp.where(mask, old, new)

        frozen = jax.tree.map(keep, x, stepped)
        return frozen.replace(reward=jnp.where(ended, jnp.zeros_like(stepped.reward), stepped.reward))

    return step


def reward_loss(x_next: Any, action: jax.Array) -> jax.Array:
    """Minus the batch mean of one step's reward; summed over the horizon: minus the mean return."""
    del action
    return -jnp.mean(x_next.reward)


def upright_loss(x_next: Any, action: jax.Array) -> jax.Array:
    """Batch mean of the squared hinge angles of a cart-pole environment (``q[1:]``: each pole's angle, 0 upright);
    summed over the horizon. A state-based loss for ``inverted_pendulum`` and ``inverted_double_pendulum``."""
    del action
    return jnp.mean(jnp.sum(x_next.pipeline_state.q[:, 1:] ** 2, axis=-1))


LOSSES: dict[str, Callable[[Any, jax.Array], jax.Array]] = {"reward": reward_loss, "upright": upright_loss}
"""Step losses by name: ``reward`` (minus the mean return) and ``upright`` (the poles' squared angles)."""

UPRIGHT_ENVS = ("inverted_pendulum", "inverted_double_pendulum")
"""Environments whose generalized coordinates are a cart's position followed by its poles' hinge angles."""

NO_REWARD_GRADIENT = {"inverted_pendulum": "its reward is a constant +1 per step while the episode lasts"}
"""Environments whose reward has no gradient with respect to the state or the action, and why."""


def check_loss(env_name: str, loss: str) -> None:
    """One-line ValueError if ``loss`` is unknown, undefined for ``env_name``, or has no gradient there."""
    if loss not in LOSSES:
        raise ValueError(f"unknown Brax loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if loss == "upright" and env_name not in UPRIGHT_ENVS:
        raise ValueError(f"the upright loss needs a cart-pole environment ({', '.join(UPRIGHT_ENVS)}), not {env_name!r}; use --loss reward")
    if loss == "reward" and env_name in NO_REWARD_GRADIENT:
        raise ValueError(
            f"{env_name}'s reward has no gradient ({NO_REWARD_GRADIENT[env_name]}), so minus the return cannot train a controller; "
            "use a state-based loss: --loss upright"
        )


def brax_problem(
    env: Any,
    n_steps: int,
    *,
    step_loss: Callable[[Any, jax.Array], jax.Array] | None = None,
    final_loss: Callable[[Any], jax.Array] | None = None,
) -> ControlProblem:
    """A :class:`ControlProblem` over ``n_steps`` of a batch of ``env``.

    The loss is minus the mean return (:func:`reward_loss`) unless you give
    your own ``step_loss(x_next, action)`` and/or ``final_loss(x_n)`` of Brax states.
    """
    if step_loss is None and final_loss is None:
        step_loss = reward_loss
    return ControlProblem(step=batch_step(env), n_steps=n_steps, step_loss=step_loss, final_loss=final_loss)


@eqx.filter_jit
def episode_returns(policy: Callable, env: Any, x0: Any, n_steps: int) -> jax.Array:
    """Return of each episode from the states ``x0`` over ``n_steps`` (rewards until ``done``), shape ``(batch,)``.

    Compiled once per environment, horizon and policy structure; later calls reuse the program.
    """
    step = batch_step(env)

    def body(x, _):
        x = step(x, policy(x))
        return x, x.reward

    _, rewards = jax.lax.scan(body, x0, None, length=n_steps)
    return jnp.sum(rewards, axis=0)
