"""Updates: the shared-forward backward pass equals autodiff for every flow; C equals two separate passes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stablebptt as sb
from stablebptt.tasks import cartpole

from ..conftest import reference, tol
from ..helpers import assert_trees_close, with_reference_weights, value_and_update


def pytree_problem():
    """A 2-D point mass as a dict state, a per-step loss with a control penalty."""

    def step(x, c):
        acc = c - 0.5 * jnp.sin(x["pos"]) - 0.1 * x["vel"]
        vel = x["vel"] + 0.1 * acc
        return {"pos": x["pos"] + 0.1 * vel, "vel": vel}

    def step_loss(x, c):
        return jnp.mean(x["pos"] ** 2) / 15 + 0.01 * jnp.mean(c**2)

    return sb.ControlProblem(step=step, n_steps=15, step_loss=step_loss, final_loss=lambda x: jnp.mean(x["vel"] ** 2))


class DictNet(sb.DenseNet):
    def __call__(self, x):
        return super().__call__(jnp.concatenate([x["pos"], x["vel"]], axis=1))


FLOWS = [sb.R(), sb.M(), sb.S(), sb.N(), sb.C(), sb.Truncated(4), sb.Combined(sb.Truncated(5, sb.M()), sb.R())]


def pytree_inputs(dtype):
    net = DictNet(4, 2, (16,), key=jax.random.key(3), dtype=dtype)
    x0 = {"pos": jax.random.normal(jax.random.key(1), (5, 2), dtype), "vel": jax.random.normal(jax.random.key(2), (5, 2), dtype)}
    return net, x0


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.name)
def test_shared_backward_equals_autodiff_on_pytree_problem(flow, dtype):
    problem = pytree_problem()
    net, x0 = pytree_inputs(dtype)
    la, ua, ia = value_and_update(flow, net, problem, x0, backward=sb.AutodiffBackward())
    ls, us, is_ = value_and_update(flow, net, problem, x0, backward=sb.SharedBackward())
    assert ls.dtype == dtype and all(a.dtype == dtype for a in jax.tree.leaves(us))
    np.testing.assert_allclose(float(ls), float(la), rtol=tol(dtype, 1e-6, 1e-14))
    assert_trees_close(us, ua, tol(dtype, 1e-5, 1e-12))
    np.testing.assert_allclose(float(is_.sq_norm), float(ia.sq_norm), rtol=tol(dtype, 1e-5, 1e-12))


def test_random_gate_schedule_matches_autodiff(dtype):
    problem = pytree_problem()
    rng = np.random.default_rng(0)
    flow = sb.Gated(rng.uniform(0, 1, 15), rng.uniform(0, 1, 15))
    net = DictNet(4, 2, (8,), key=jax.random.key(0), dtype=dtype)
    x0 = {"pos": jnp.ones((3, 2), dtype), "vel": -jnp.ones((3, 2), dtype)}
    _, ua, _ = value_and_update(flow, net, problem, x0, backward=sb.AutodiffBackward())
    _, us, _ = value_and_update(flow, net, problem, x0)
    assert_trees_close(us, ua, tol(dtype, 1e-5, 1e-12))


def test_combined_equals_two_separate_passes_on_cartpole(dtype):
    ref = reference("cartpole_grads")
    task = cartpole.make_task(cartpole.CartPoleConfig(n_poles=2))
    net = with_reference_weights(task.make_policy(jax.random.key(0), dtype), ref)
    x0 = jnp.asarray(ref["x0"], dtype)
    # two independent programs, as the authors compute C
    _, m, _ = value_and_update(sb.M(), net, task.problem, x0, backward=sb.AutodiffBackward())
    _, r, _ = value_and_update(sb.R(), net, task.problem, x0, backward=sb.AutodiffBackward())
    _, c, info = value_and_update(sb.C(), net, task.problem, x0)
    for mm, rr, cc in zip(jax.tree.leaves(m), jax.tree.leaves(r), jax.tree.leaves(c)):
        mm, rr, cc = np.asarray(mm), np.asarray(rr), np.asarray(cc)
        expected = np.where(np.sign(mm) == np.sign(rr), mm, 0.0)
        # Where R is at float-rounding distance from 0 its sign is not defined by the math;
        # everywhere else the two computations must make the same choice and agree in value.
        certain = np.abs(rr) > 1e-4 * np.abs(rr).max()
        assert certain.mean() > 0.9
        np.testing.assert_allclose(cc[certain], expected[certain], rtol=tol(dtype, 1e-4, 1e-11), atol=tol(dtype, 1e-6, 1e-13) * np.abs(mm).max())
        assert np.all((cc == 0) | np.isclose(cc, mm, rtol=1e-4, atol=1e-6 * np.abs(mm).max()))
    flat = lambda t: np.concatenate([np.ravel(a) for a in jax.tree.leaves(t)])  # noqa: E731
    cos = flat(m) @ flat(r) / np.linalg.norm(flat(m)) / np.linalg.norm(flat(r))
    np.testing.assert_allclose(float(info.cosine), cos, rtol=tol(dtype, 1e-5, 1e-12))


def test_loss_is_the_same_for_every_flow():
    problem = pytree_problem()
    net = DictNet(4, 2, (8,), key=jax.random.key(0))
    x0 = {"pos": jnp.ones((3, 2)), "vel": -jnp.ones((3, 2))}
    losses = {f.name: float(value_and_update(f, net, problem, x0)[0]) for f in FLOWS}
    assert len(set(losses.values())) == 1, losses


@pytest.mark.parametrize("backward", [sb.SharedBackward(), sb.AutodiffBackward()], ids=["shared", "autodiff"])
def test_stacked_flows_are_one_program_equal_to_each_flow(backward, dtype):
    """R, M, S, N, C, Truncated, a combined truncation and a random Gated schedule as data: one jitted,
    vmapped program over their stacked schedules gives each flow's loss, update, norm and cosine."""
    problem = pytree_problem()
    net, x0 = pytree_inputs(dtype)
    rng = np.random.default_rng(1)
    flows = FLOWS + [sb.Gated(rng.uniform(0, 1, 15), rng.uniform(0, 1, 15))]
    stacked = sb.stack_flows(flows, problem.n_steps)
    assert stacked.net.shape == (len(flows), 2, 15)  # every flow padded to two lanes
    losses, updates, infos = jax.jit(jax.vmap(lambda f: value_and_update(f, net, problem, x0, backward=backward)))(stacked)
    for i, flow in enumerate(flows):
        loss, update, info = value_and_update(flow, net, problem, x0, backward=backward)
        np.testing.assert_allclose(float(losses[i]), float(loss), rtol=tol(dtype, 1e-6, 1e-14), err_msg=flow.name)
        assert_trees_close(jax.tree.map(lambda a: a[i], updates), update, tol(dtype, 1e-5, 1e-12))
        np.testing.assert_allclose(float(infos.sq_norm[i]), float(info.sq_norm), rtol=tol(dtype, 1e-5, 1e-12), err_msg=flow.name)
        assert np.isnan(float(infos.cosine[i])) == (flow.n_passes == 1), flow.name
        if flow.n_passes == 2:
            np.testing.assert_allclose(float(infos.cosine[i]), float(info.cosine), rtol=tol(dtype, 1e-5, 1e-12), err_msg=flow.name)
    # the flows really differ, so equal numbers above are not one flow repeated
    assert len({round(float(v), 5) for v in infos.sq_norm}) == len(flows)


def test_a_schedule_is_a_traced_argument_of_jit(dtype):
    problem = pytree_problem()
    net, x0 = pytree_inputs(dtype)
    run = jax.jit(lambda f: sb.value_and_update(f, net, problem, x0)[1])
    for flow in (sb.C(), sb.M(), sb.Truncated(3)):
        assert_trees_close(run(flow.schedule(15, lanes=2)), value_and_update(flow, net, problem, x0)[1], tol(dtype, 1e-5, 1e-12))
    assert run._cache_size() == 1  # one compiled program for all three (as many lanes each)
    with pytest.raises(ValueError, match=r"net gates have shape \(2, 14\); expected \(lanes, 15\)"):
        sb.value_and_update(sb.C().schedule(14), net, problem, x0)
    with pytest.raises(ValueError, match="C needs 2 backward passes; cannot fit it into 1"):
        sb.C().schedule(15, lanes=1)
