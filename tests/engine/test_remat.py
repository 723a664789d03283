"""Checkpointed rollouts: same losses and gradients as plain ones, memory sublinear in the horizon."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import stablebptt as sb
from stablebptt.engine.remat import segment_length, segmented_scan
from stablebptt.tasks import cartpole

from ..conftest import tol
from ..helpers import assert_trees_close
from .test_updates import FLOWS, pytree_inputs, pytree_problem

pytestmark = pytest.mark.long  # minutes of compiling: scheduled first (tests/conftest.py)


@pytest.mark.parametrize(
    ("n", "remat", "expected"),
    [(100, True, 10), (101, True, 11), (1, True, 1), (15, 4, 4), (15, 40, 15), (15, False, None), (15, 0, None), (15, None, None)],
)
def test_segment_length(n, remat, expected):
    assert segment_length(n, remat) == expected


@pytest.mark.parametrize("bad", [-1, 2.5, "auto"])
def test_bad_remat_setting_is_refused(bad):
    with pytest.raises(ValueError, match="remat"):
        sb.SharedBackward(remat=bad)


@pytest.mark.parametrize("segment", [1, 3, 4, 7, 12])
def test_segmented_scan_equals_scan_in_value_and_gradient(segment, dtype):
    xs = jnp.linspace(-1.0, 1.0, 12, dtype=dtype)

    def f(carry, x):
        return jnp.sin(carry) * 1.1 + x * carry**2, None

    def plain(c0):
        return lax.scan(f, c0, xs)[0]

    def checkpointed(c0):
        return segmented_scan(f, c0, xs, 12, segment)

    c0 = jnp.asarray(0.3, dtype)
    np.testing.assert_allclose(checkpointed(c0), plain(c0), rtol=tol(dtype, 1e-6, 1e-15))
    np.testing.assert_allclose(jax.grad(checkpointed)(c0), jax.grad(plain)(c0), rtol=tol(dtype, 1e-5, 1e-13))


def assert_checkpointed_equals_plain(flow, remat, backward, dtype):
    problem = pytree_problem()  # 15 steps: remat=True gives segments of 4 and a tail of 3, remat=5 three segments
    net, x0 = pytree_inputs(dtype)
    update = lambda strategy: eqx.filter_jit(sb.value_and_update)(flow, net, problem, x0, backward=strategy)  # noqa: E731
    lp, up, ip = update(backward())
    lc, uc, ic = update(backward(remat=remat))
    assert float(lc) == float(lp)  # the forward pass is the same sequence of operations
    assert all(a.dtype == dtype for a in jax.tree.leaves(uc))
    assert_trees_close(uc, up, tol(dtype, 1e-5, 1e-12))
    np.testing.assert_allclose(float(ic.sq_norm), float(ip.sq_norm), rtol=tol(dtype, 1e-5, 1e-12))
    np.testing.assert_allclose(float(ic.cosine), float(ip.cosine), rtol=tol(dtype, 1e-5, 1e-12))


BACKWARDS = [sb.SharedBackward, sb.AutodiffBackward]


@pytest.mark.parametrize("backward", BACKWARDS, ids=lambda b: b.__name__)
@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.name)
def test_checkpointed_update_equals_plain_for_every_flow(flow, backward):
    assert_checkpointed_equals_plain(flow, True, backward, jnp.float32)


@pytest.mark.parametrize("flow", [sb.R(), sb.C()], ids=lambda f: f.name)
@pytest.mark.parametrize(
    ("remat", "backward"),
    [(True, sb.SharedBackward), (True, sb.AutodiffBackward), (5, sb.SharedBackward), (1, sb.SharedBackward)],
    ids=["sqrt-shared", "sqrt-autodiff", "5-shared", "1-shared"],
)
def test_checkpointed_update_equals_plain_in_both_precisions(flow, remat, backward, dtype):
    assert_checkpointed_equals_plain(flow, remat, backward, dtype)


def _temp_bytes(n_steps: int, backward: sb.AbstractBackward) -> int:
    task = cartpole.make_task(cartpole.CartPoleConfig(n_poles=1, n_steps=n_steps))
    net = task.make_policy(jax.random.key(0))
    x0 = task.sample_initial_states(jax.random.key(1), 8)
    update = jax.jit(lambda p, x: sb.value_and_update(sb.C(), p, task.problem, x, backward=backward)[:2])
    return update.lower(net, x0).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("backward", [sb.SharedBackward, sb.AutodiffBackward], ids=lambda b: b.__name__)
def test_checkpointed_memory_grows_like_the_square_root_of_the_horizon(backward):
    plain = [_temp_bytes(n, backward()) for n in (100, 1600)]
    checkpointed = [_temp_bytes(n, backward(remat=True)) for n in (100, 1600)]
    assert plain[1] / plain[0] > 12  # 16x the steps: about 16x the memory
    assert checkpointed[1] / checkpointed[0] < 6  # about sqrt(16) = 4x
    assert checkpointed[1] < plain[1] / 10
