"""FLOP counting: scans counted per iteration against hand counts of matrix products, and its scaling."""

from __future__ import annotations

import jax.numpy as jnp
import pytest
from jax import lax

import stablebptt as sb
from stablebptt.tools.flops import epoch_flops, program_flops

D = M = 32  # state and control size of the linear problem
BATCH = 8

def nested_matmuls(x, w, n_outer, n_inner):
    def inner(h, _):
        return h @ w, None

    def outer(h, _):
        return lax.scan(inner, h, None, length=n_inner)[0] @ w, None

    return lax.scan(outer, x, None, length=n_outer)[0] @ w


def test_program_flops_counts_every_iteration_of_nested_scans():
    x, w = jnp.ones((BATCH, 64)), jnp.ones((64, 64))
    matmuls = 5 * 7 + 5 + 1  # inner bodies, outer bodies, the one outside
    assert program_flops(
        lambda x, w: nested_matmuls(x, w, 5, 7), x, w
    ) == pytest.approx(matmuls * 2 * BATCH * 64 * 64, rel=0.01)


def linear_epoch_flops(flow, *, n_steps: int = 10, n_train: int = 16) -> float:
    """One epoch on ``x' = xA + cB``, ``c = xK``: matrix products dominate."""
    a, b = 0.9 * jnp.eye(D), 0.01 * jnp.ones((M, D))
    problem = sb.ControlProblem(
        step=lambda x, c: x @ a + c @ b,
        n_steps=n_steps,
        final_loss=lambda x: jnp.mean(x**2),
    )
    policy = sb.FunctionPolicy(lambda k, x: x @ k, jnp.zeros((D, M)))
    train_x = jnp.ones((n_train, D))
    return epoch_flops(
        policy,
        problem,
        train_x,
        flow=flow,
        optimizer=sb.make_optimizer("none"),
        batch_size=BATCH,
    )


# Per step and sample, in units of one (1×D)·(D×D) or (1×D)·(D×M) product (2·D·D or 2·D·M FLOPs):
# forward: xK, xA, cB; backward (per lane): λAᵀ, μBᵀ, and μKᵀ where the network gate is open;
# parameter gradient (per lane): xᵀμ.
LINEAR_PRODUCTS = {
    "R": (2, 5),
    "M": (2, 4),
    "S": (2, 4),
    "C": (3, 7),
}  # (D×D products, D×M products)


@pytest.mark.parametrize("method", ["R", "M", "C"])
def test_epoch_flops_match_the_hand_count_of_a_linear_problem(method):
    n_steps, n_train = 10, 16
    dd, dm = LINEAR_PRODUCTS[method]
    per_update = n_steps * BATCH * (dd * 2 * D * D + dm * 2 * D * M)
    expected = (n_train // BATCH) * per_update
    got = linear_epoch_flops(
        sb.flow_from_name(method), n_steps=n_steps, n_train=n_train
    )
    assert got == pytest.approx(expected, rel=0.1)  # the rest: elementwise ops and Adam


def test_epoch_flops_are_linear_in_steps_and_updates():
    f5, f10, f20 = (linear_epoch_flops(sb.R(), n_steps=n) for n in (5, 10, 20))
    assert f20 - f10 == pytest.approx(2 * (f10 - f5), rel=0.01)
    assert f10 - f5 > 0.9 * f5  # nearly proportional: little work outside the time loop
    assert linear_epoch_flops(sb.R(), n_train=32) == pytest.approx(
        2 * linear_epoch_flops(sb.R(), n_train=16), rel=0.01
    )
