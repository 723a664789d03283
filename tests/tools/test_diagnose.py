"""``diagnose``: adjoint growth against the spectral radii of a linear system, agreement and cosine against
``value_and_update``, the verdict rule, and ``stablebptt diagnose`` writing its verdict, JSON and figure."""

from __future__ import annotations

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stablebptt as sb
from stablebptt.cli import main
from stablebptt.engine.flows import cosine_similarity
from stablebptt.tools import diagnose as diagnose_module
from stablebptt.tools.diagnose import GROWTH_RATIO, Diagnosis, diagnose

from ..conftest import tol

# x' = A x + B c under c = K x: open loop A has eigenvalues 1.02 and 0.5, the closed loop A + B K has 1.274 and 0.547
A = np.array([[1.02, 0.3], [0.0, 0.5]])
B = np.array([[0.0], [1.0]])
K = np.array([[0.4, 0.3]])
N_STEPS = 120


def linear_problem(dtype, n_steps=N_STEPS):
    a, b = jnp.asarray(A, dtype), jnp.asarray(B, dtype)
    problem = sb.ControlProblem(step=lambda x, c: x @ a.T + c @ b.T, n_steps=n_steps, final_loss=lambda x: jnp.mean(jnp.sum(x**2, axis=1)))
    policy = sb.FunctionPolicy(lambda k, x: x @ k.T, jnp.asarray(K, dtype))
    return problem, policy


def carried_back(matrix: np.ndarray, lam_n: np.ndarray, n: int) -> np.ndarray:
    """``log ‖λ_t‖ / ‖λ_{n−1}‖`` for ``t = 0 .. n − 1`` of ``λ_t = λ_{t+1} @ matrix`` (rows: samples), by NumPy in float64."""
    lam = lam_n @ matrix
    logs, ref = [0.0], np.linalg.norm(lam)
    for _ in range(n - 1):
        lam = lam @ matrix
        logs.append(np.log(np.linalg.norm(lam) / ref))
    return np.array(logs[::-1])


def test_growth_rates_are_the_spectral_radii_of_the_closed_and_open_loop(dtype):
    problem, policy = linear_problem(dtype)
    x0 = jax.random.normal(jax.random.key(0), (12, 2), dtype)
    found = diagnose(policy, problem, x0, batches=3)
    closed, open_ = (max(abs(np.linalg.eigvals(m))) for m in (A + B @ K, A))
    assert closed > 1.27 and open_ == pytest.approx(1.02)  # distinct: swapping R and M would fail
    np.testing.assert_allclose(found.rates, [closed, open_], rtol=tol(dtype, 3e-4, 1e-4))
    # the whole curve: the fixed random direction at the last state carried back by (A + BK)ᵀ for R and Aᵀ for M
    probe = np.asarray(diagnose_module._probe(jnp.zeros((4, 2), dtype)), np.float64)
    for lane, matrix in enumerate((A + B @ K, A)):
        want = carried_back(matrix, probe, N_STEPS)
        for i in range(3):  # every batch carries the same direction through the same linear steps
            np.testing.assert_allclose(found.log_adjoint[i, lane], want, atol=tol(dtype, 2e-3, 1e-9))
    np.testing.assert_allclose(found.growth, np.exp(found.log_adjoint[:, :, 0].mean(axis=0)))
    assert found.suggestion() == "C" and "try C" in found.verdict()  # R's adjoint grows ×1e18 more than M's


def test_agreement_cosine_and_norms_equal_those_of_value_and_update(dtype):
    task = sb.make_task("repulsion", n_steps=10)  # a step loss with a control cost: the whole loss, not only its last term
    policy = sb.DenseNet(24, 4, (16,), key=jax.random.key(1), out_shape=(2, 2), dtype=dtype)  # a non-zero last layer: R and M differ
    x0 = task.sample_initial_states(jax.random.key(2), 16, dtype)
    found = diagnose(policy, task.problem, x0, batches=2)
    update = {name: jax.jit(lambda p, x, f=flow: sb.value_and_update(f, p, task.problem, x)) for name, flow in (("R", sb.R()), ("M", sb.M()), ("C", sb.C()))}
    for i in range(2):
        batch = x0[8 * i : 8 * (i + 1)]
        loss, r, _ = update["R"](policy, batch)
        _, m, _ = update["M"](policy, batch)
        _, c, info = update["C"](policy, batch)
        r, m = np.concatenate([a.ravel() for a in jax.tree.leaves(r)]), np.concatenate([a.ravel() for a in jax.tree.leaves(m)])
        counted = (r != 0) | (m != 0)
        agreement = np.mean(np.sign(r[counted]) == np.sign(m[counted]))
        assert 0.3 < agreement < 0.99  # neither all nor none: the test could tell them apart
        assert found.sign_agreement[i] == pytest.approx(agreement, abs=1.5 / counted.sum())
        assert found.cosine[i] == pytest.approx(float(info.cosine), abs=tol(dtype, 1e-5, 1e-12))
        assert found.cosine[i] == pytest.approx(float(cosine_similarity(m, r)), abs=tol(dtype, 1e-5, 1e-12))
        norms = [np.linalg.norm(r), np.linalg.norm(m), np.sqrt(float(info.sq_norm))]
        np.testing.assert_allclose(found.update_norms[i], norms, rtol=tol(dtype, 1e-4, 1e-10))
        assert found.loss[i] == pytest.approx(float(loss), rel=tol(dtype, 1e-6, 1e-12))


def fake(growth_r: float, growth_m: float, *, same: bool = False) -> Diagnosis:
    """A diagnosis of one batch whose adjoints grow by the given factors over 10 steps."""
    curve = lambda g: np.linspace(np.log(g), 0.0, 11)  # noqa: E731
    log_adjoint = np.stack([curve(growth_r), curve(growth_r if same else growth_m)])[None]
    norms = np.array([[2.0, 2.0 if same else 1.0, 0.5]])
    return Diagnosis(np.ones(1), log_adjoint, np.array([0.6]), np.array([0.3]), norms)


def test_the_verdict_rule():
    assert fake(GROWTH_RATIO * 3.0 * 1.01, 3.0).suggestion() == "C"
    assert fake(GROWTH_RATIO * 3.0 * 0.99, 3.0).suggestion() == "R"
    assert fake(1e9, 1e9 / GROWTH_RATIO / 2).suggestion() == "C"
    verdict = fake(1e9, 3.0).verdict()
    assert verdict.startswith("R's adjoint grows ×1e+09 over 10 steps, M's ×3 ") and verdict.endswith("try C")
    assert "agree in sign on 60% of the update, cosine 0.30" in verdict
    assert fake(5.0, 5.0, same=True).suggestion() is None and "coincide" in fake(5.0, 5.0, same=True).verdict()
    assert fake(5.0, 8.0).rates == pytest.approx([5.0**0.1, 8.0**0.1])
    summary = fake(1e9, 3.0).summary()
    assert json.loads(json.dumps(summary)) == summary and summary["suggestion"] == "C" and summary["growth"]["R"] == pytest.approx(1e9)


def test_a_zero_last_layer_is_named_not_judged():
    task = sb.make_task("cartpole", n_poles=1, n_steps=6)
    x0 = task.sample_initial_states(jax.random.key(0), 8)
    found = diagnose(task.make_policy(jax.random.key(1)), task.problem, x0)
    assert found.coincide and found.suggestion() is None and "--warmup" in found.verdict()
    with pytest.raises(ValueError, match="batches=3 does not split 8 samples"):
        diagnose(task.make_policy(jax.random.key(1)), task.problem, x0, batches=3)


def test_cli_prints_the_verdict_and_writes_json_and_figure(tmp_path, capsys):
    out = tmp_path / "diag"
    argv = ["diagnose", "cartpole", "--poles", "1", "--steps", "8", "--n-train", "16", "--batches", "2", "--warmup", "2", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "diagnosis.json").read_text())
    (verdict,) = [line for line in printed.splitlines() if line.startswith("verdict: ")]
    assert verdict == f"verdict: {record['verdict']}"
    assert record["suggestion"] in ("R", "C") and verdict.endswith(f"{'try' if record['suggestion'] == 'C' else 'use'} {record['suggestion']}")
    assert record["task_options"]["n_poles"] == 1 and record["steps"] == 7 and record["batches"] == 2 and record["warmup_epochs"] == 2
    assert f"×{record['growth']['R']:.3g} over 7 steps" in verdict
    assert (out / "diagnosis.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["diagnose", "cartpole", "--batches", "64", "--out", str(tmp_path / "d3")]) == 2
    assert "need 512 training states" in capsys.readouterr().err


def test_cli_diagnoses_a_given_controller(tmp_path, capsys):
    from stablebptt.runs.config import RunConfig
    from stablebptt.runs.single import build

    config = RunConfig.from_options(task="cartpole", task_options={"n_poles": 1, "n_steps": 8}, n_train=16, n_test=8)
    setup = build(config)
    policy = sb.DenseNet(4, 1, (100, 100), key=jax.random.key(5))  # the task's network shape, a non-zero last layer
    eqx.tree_serialise_leaves(tmp_path / "params.eqx", policy)
    argv = ["diagnose", "cartpole", "--poles", "1", "--steps", "8", "--n-train", "16", "--batches", "2", "--warmup", "0"]
    assert main(argv + ["--params", str(tmp_path), "--out", str(tmp_path / "d")]) == 0
    record = json.loads((tmp_path / "d" / "diagnosis.json").read_text())
    want = diagnose(policy, setup.task.problem, setup.train_x, batches=2).summary()
    assert want["update_norm"]["R"] != want["update_norm"]["M"]  # not the initial controller, whose R and M coincide
    assert record["cosine"] == pytest.approx(want["cosine"], abs=1e-6)
    assert record["growth"] == pytest.approx(want["growth"], rel=1e-5)
    capsys.readouterr()
    assert main(argv + ["--params", str(tmp_path / "missing.eqx"), "--out", str(tmp_path / "d2")]) == 2
    assert "--params" in capsys.readouterr().err
    assert main(["diagnose", "cartpole", "--poles", "2", "--params", str(tmp_path / "params.eqx"), "--out", str(tmp_path / "d3")]) == 2
    assert "not a controller of cartpole with these options" in capsys.readouterr().err
