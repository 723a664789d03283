"""Flows and backward passes as declared types: abstract bases with abstract methods, final concrete
classes, named flows without leaves, and the network lanes declared, so jit over a flow takes the fast path."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.core import ClosedJaxpr, Jaxpr

import stablebptt as sb

from ..helpers import value_and_update
from stablebptt.engine.rollouts import gated_loss
from stablebptt.engine.updates import combined_cosine

A, B, N_STEPS = 0.9, 0.5, 6
X0 = np.array([0.7, -1.3, 0.4])


class PerLane(sb.AbstractBackward):
    """A user's backward pass: ``jax.value_and_grad`` of the gated rollout, one lane at a time."""

    def value_and_grads(self, apply, params, problem, x0, net_gates, sim_gates, *, network_lanes=None):
        def loss(p, net, sim):
            return gated_loss(lambda x: apply(p, x), problem, x0, net, sim)

        lanes = [jax.value_and_grad(loss)(params, n, s) for n, s in zip(net_gates, sim_gates)]
        return lanes[0][0], jax.tree.map(lambda *g: jnp.stack(g), *(g for _, g in lanes))


def oscillator():
    """A damped oscillator, state (batch, 2), controlled by a small MLP."""

    def step(x, c):
        vel = x[:, 1] + 0.1 * (c[:, 0] - x[:, 0] - 0.1 * x[:, 1])
        return jnp.stack([x[:, 0] + 0.1 * vel, vel], axis=1)

    return sb.ControlProblem(step=step, n_steps=10, final_loss=lambda x: jnp.mean(jnp.sum(x**2, axis=1)))


def test_a_user_written_backward_trains_to_the_numbers_of_autodiff(x64):
    problem = oscillator()
    policy = sb.DenseNet(2, 1, (8,), key=jax.random.key(0), dtype=jnp.float64)
    train_x = jax.random.normal(jax.random.key(1), (32, 2), jnp.float64)
    test_x = jax.random.normal(jax.random.key(2), (16, 2), jnp.float64)
    runs = {
        name: sb.train(policy, problem, train_x, test_x, flow=sb.C(), optimizer=sb.make_optimizer("none", 1e-2), epochs=3, backward=backward)
        for name, backward in (("mine", PerLane()), ("autodiff", sb.AutodiffBackward()))
    }
    mine, reference = runs["mine"], runs["autodiff"]
    assert mine.history[-1]["train_loss"] < mine.initial["train_loss"]  # it trained
    for key in ("batch_loss", "train_loss", "test_loss", "update_sq_norm", "cosine_mr"):
        np.testing.assert_allclose([r[key] for r in mine.history], [r[key] for r in reference.history], rtol=1e-12, err_msg=key)
    for a, b in zip(jax.tree.leaves(mine.policy), jax.tree.leaves(reference.policy), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-11, atol=1e-14)


def test_a_subclass_missing_an_abstract_method_fails_at_construction():
    class Forgot(sb.AbstractBackward):
        pass

    with pytest.raises(TypeError, match="abstract method value_and_grads"):
        Forgot()

    class NoGates(sb.AbstractFlow):
        n_passes, combined, network_lanes, name = 1, False, (0,), "no gates"

    with pytest.raises(TypeError, match="abstract method gate_schedule"):
        NoGates()

    class Undeclared(sb.AbstractFlow):
        n_passes, combined, name = 1, False, "undeclared"

        def gate_schedule(self, n_steps):
            return np.ones((1, n_steps)), np.ones((1, n_steps))

    with pytest.raises(TypeError, match="network_lanes"):
        Undeclared()


def test_concrete_flows_and_backwards_are_final():
    for cls in (sb.R, sb.M, sb.S, sb.N, sb.C, sb.Gated, sb.Truncated, sb.Schedule):
        with pytest.raises(TypeError, match=f"{cls.__name__} is final and cannot be subclassed; subclass stablebptt.AbstractFlow instead"):
            type("Sub", (cls,), {})
    for cls in (sb.SharedBackward, sb.AutodiffBackward):
        with pytest.raises(TypeError, match=f"{cls.__name__} is final and cannot be subclassed; subclass stablebptt.AbstractBackward instead"):
            type("Sub", (cls,), {})


def test_named_flows_have_static_gates_and_say_their_names():
    gates = {"R": (1, 1), "M": (0, 1), "S": (0, 0), "N": (1, 0)}
    for name, (net, sim) in gates.items():
        flow = sb.flow_from_name(name)
        assert jax.tree.leaves(flow) == [] and flow.name == name == type(flow).name
        got_net, got_sim = flow.gate_schedule(4)
        np.testing.assert_array_equal(got_net, np.full((1, 4), net))
        np.testing.assert_array_equal(got_sim, np.full((1, 4), sim))
        assert flow.network_lanes == ((0,) if net else ())
    assert jax.tree.leaves(sb.C()) == [] and sb.C().network_lanes == (1,)  # M's lane skips the network, R's does not


def test_gated_declares_whether_it_uses_the_network():
    assert sb.Gated(0.0, 1.0).network_lanes == () and sb.Gated([0.0, 0.5], 1.0).network_lanes == (0,)
    assert sb.Gated(jnp.zeros(3), 1.0).network_lanes == (0,)  # a JAX array is not read: it may be traced
    assert sb.Gated(jnp.zeros(3), 1.0, uses_network=False).network_lanes == ()
    with pytest.raises(ValueError, match="uses_network=False but the network gate is not 0"):
        sb.Gated([0.0, 1.0], 1.0, uses_network=False)


def test_stacked_schedules_declare_the_lanes_any_of_their_flows_uses():
    assert sb.stack_flows([sb.M(), sb.S()], 5).network_lanes == ()
    assert sb.stack_flows([sb.M(), sb.C()], 5).network_lanes == (1,)
    assert sb.stack_flows([sb.R(), sb.C()], 5).network_lanes == (0, 1)  # R padded to two lanes repeats its lane
    assert sb.M().schedule(5, lanes=2).network_lanes == (0, 1)  # a schedule alone declares every lane


def _count(jaxpr: ClosedJaxpr | Jaxpr, primitive: str) -> int:
    """Equations named ``primitive`` in a jaxpr and every jaxpr nested in it (scans, jit, vmap)."""
    jaxpr = jaxpr.jaxpr if isinstance(jaxpr, ClosedJaxpr) else jaxpr
    total = 0
    for eqn in jaxpr.eqns:
        total += eqn.primitive.name == primitive
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, (ClosedJaxpr, Jaxpr)):
                    total += _count(sub, primitive)
    return total


def test_jit_over_a_named_flow_skips_the_network_jacobian_as_without_jit():
    # The network is θ·sin(x) and the rest is linear: a cos appears only where the backward pass
    # evaluates the network's input-Jacobian (the derivative of sin(x) in x).
    problem = sb.ControlProblem(step=lambda x, c: A * x + B * c, n_steps=N_STEPS, final_loss=lambda x: 0.5 * jnp.mean(x**2))
    policy = sb.FunctionPolicy(lambda th, x: th * jnp.sin(x), jnp.asarray(0.3))
    x0 = jnp.asarray(X0, jnp.float32)

    def update(flow, p, x):
        return sb.value_and_update(flow, p, problem, x)

    def jacobians(fn, *args):
        return _count(jax.make_jaxpr(fn)(*args), "cos")

    expected = {"R": 1, "M": 0, "S": 0, "N": 1, "C": 1}
    for name, n in expected.items():
        make = lambda name=name: sb.flow_from_name(name)  # noqa: E731
        plain = jacobians(lambda p, x: update(make(), p, x), policy, x0)
        inside = jacobians(jax.jit(lambda p, x: update(make(), p, x)), policy, x0)
        argument = jacobians(jax.jit(update), make(), policy, x0)
        filtered = jacobians(eqx.filter_jit(update), make(), policy, x0)
        assert plain == inside == argument == filtered == n, (name, plain, inside, argument, filtered)
        np.testing.assert_allclose(
            float(jax.jit(update)(make(), policy, x0)[1].params), float(update(make(), policy, x0)[1].params), rtol=1e-6
        )
    # A traced schedule declares every lane; a stack of flows that never use the network declares none.
    assert jacobians(jax.jit(update), sb.M().schedule(N_STEPS), policy, x0) == 1
    stacked = sb.stack_flows([sb.M(), sb.S()], N_STEPS)
    assert jacobians(jax.jit(jax.vmap(update, in_axes=(0, None, None))), stacked, policy, x0) == 0
    got = jax.jit(jax.vmap(update, in_axes=(0, None, None)))(stacked, policy, x0)[1].params
    np.testing.assert_allclose(np.asarray(got), [float(update(f, policy, x0)[1].params) for f in (sb.M(), sb.S())], rtol=1e-6)


def test_a_user_written_flow_is_its_gates():
    class Anneal(sb.AbstractFlow):
        """M for the first half of the rollout, R after it."""

        n_passes, combined, network_lanes, name = 1, False, (0,), "anneal"

        def gate_schedule(self, n_steps):
            return np.where(np.arange(n_steps) < n_steps // 2, 0.0, 1.0)[None], np.ones((1, n_steps))

    problem = oscillator()
    policy = sb.DenseNet(2, 1, (8,), key=jax.random.key(0))
    x0 = jax.random.normal(jax.random.key(1), (8, 2))
    _, mine, info = value_and_update(Anneal(), policy, problem, x0)
    _, reference, _ = value_and_update(Anneal(), policy, problem, x0, backward=sb.AutodiffBackward())
    _, r, _ = value_and_update(sb.R(), policy, problem, x0)
    _, m, _ = value_and_update(sb.M(), policy, problem, x0)
    for u, v, rr, mm in zip(*map(jax.tree.leaves, (mine, reference, r, m)), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-4, atol=1e-6 * float(jnp.abs(v).max()))
    flat = lambda t: np.concatenate([np.ravel(a) for a in jax.tree.leaves(t)])  # noqa: E731
    assert not np.allclose(flat(mine), flat(r)) and not np.allclose(flat(mine), flat(m))  # neither R nor M
    assert np.isnan(float(info.cosine))


def test_combined_cosine_of_the_lanes():
    grads = {"w": jnp.array([[1.0, 0.0], [1.0, 1.0]])}  # lanes at 45°
    np.testing.assert_allclose(float(combined_cosine(grads, True)), np.sqrt(0.5), rtol=1e-6)
    assert np.isnan(float(combined_cosine(grads, False)))  # two lanes that are only padding
    assert np.isnan(float(combined_cosine({"w": grads["w"][:1]}, True)))  # one lane
    np.testing.assert_allclose(np.asarray(jax.vmap(combined_cosine, in_axes=(None, 0))(grads, jnp.array([True, False]))), [np.sqrt(0.5), np.nan], rtol=1e-6)
