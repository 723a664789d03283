"""The linear-quadratic check of the abstract's claim: where do R's, M's and C's fixed points lie?

Task :mod:`stablebptt.tasks.linear` (a double integrator under linear feedback
``c = θ·x``, ``n_steps = 3``). The optimum ``θ*`` is found without the
training code: the loss is a polynomial in ``θ``, minimised in float64 by
``scipy.optimize.minimize`` (BFGS, several starts), and for ``ρ = 0`` it is
checked against the deadbeat gain. Then R, M and C train with the paper's
optimizer (full batch) from two starts, the zero gain and ``θ* + (0.1, 0.1)``,
and the table reports where each ends: the distance to ``θ*`` and the loss gap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from .. import tables, validate
from ..atomic import atomic_write_text
from ..engine.flows import flow_from_name
from ..engine.optim import make_optimizer
from ..engine.precision import float64
from ..tasks import linear
from ..training import train
from ..engine.updates import value_and_update
from ..runs import rundir
from ..runs.config import RunConfig

__all__ = ["LQSpec", "polynomial_loss", "optimum", "run_lq", "TABLE_COLUMNS", "LQ_CONFIG"]

log = logging.getLogger(__name__)

LQ_CONFIG = "lq.json"
"""The marker of an LQ table's folder: the :class:`LQSpec` it was made with."""

TABLE_COLUMNS = (
    "control_cost", "start", "method", "theta_0", "theta_1", "theta_star_0", "theta_star_1",
    "distance", "loss", "loss_star", "loss_gap", "update_norm_at_end", "update_norm_at_optimum",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class LQSpec:
    """The check's settings: control costs ``ρ ≥ 0``, methods, fixed starts, seed, full-batch epochs and learning rate."""

    control_costs: tuple[float, ...] = (0.0, 0.1)
    methods: tuple[str, ...] = ("R", "M", "C")
    n_states: int = 64
    seed: int = 42
    epochs: int = 4000
    learning_rate: float = 0.05

    def __post_init__(self):
        costs = validate.distinct("control_costs", (validate.number("control_cost", rho, low=0) for rho in self.control_costs))
        object.__setattr__(self, "control_costs", tuple(costs))
        object.__setattr__(self, "methods", tuple(validate.distinct("methods", (flow_from_name(m).name for m in self.methods))))
        validate.positive_int("n_states", self.n_states)
        validate.integer("seed", self.seed, low=0)
        validate.positive_int("epochs", self.epochs)
        validate.number("learning_rate", self.learning_rate, positive=True)
        # each run trains the linear task full-batch in float64, one after another: a run's settings, checked as any
        # run's are (its memory estimate included)
        RunConfig(task="linear", n_train=self.n_states, n_test=self.n_states, batch_size=self.n_states, epochs=self.epochs, seed=self.seed, dtype="float64")


def polynomial_loss(config: linear.LinearConfig, x0: np.ndarray, theta: np.ndarray) -> float:
    """The task's loss at gain ``theta`` in NumPy float64, written out from the equations (no JAX)."""
    a, b = linear.matrices(config)
    theta = np.reshape(theta, (1, 2))
    closed = a + b @ theta
    x, cost = np.asarray(x0, np.float64), 0.0
    for _ in range(config.n_steps):
        c = x @ theta.T
        cost += config.control_cost * np.mean(np.sum(c**2, axis=1))
        x = x @ closed.T
    return float(np.mean(np.sum(x**2, axis=1)) + cost)


def optimum(config: linear.LinearConfig, x0: np.ndarray) -> tuple[np.ndarray, float]:
    """``(θ*, L(θ*))``: the best of BFGS runs from a grid of starts on the polynomial loss."""
    from scipy.optimize import minimize

    best = None
    for start in [(0.0, 0.0), (-1.0, -1.0), (-4.0, -3.0), (-2.0, -4.0), (1.0, 1.0)]:
        res = minimize(lambda t: polynomial_loss(config, x0, t), np.array(start), method="BFGS", options={"gtol": 1e-12, "maxiter": 10_000})
        if best is None or res.fun < best.fun:
            best = res
    return np.reshape(best.x, (1, 2)), float(best.fun)


def run_lq(spec: LQSpec, out: Path, *, progress: bool = False) -> list[dict]:
    """Train every control cost × start × method; write ``table.csv`` and ``table.md`` into ``out``.

    ``out`` must be empty, missing or an earlier LQ folder (marked by :data:`LQ_CONFIG`, whose table is
    replaced). What it does is logged (INFO); ``progress``: a progress bar (tqdm, on stderr) over every epoch.
    """
    out = Path(out)
    spec_dict = dataclasses.asdict(spec)
    rundir.claim_output(out, marker=LQ_CONFIG, what="LQ table", settings=json.loads(json.dumps(spec_dict)), overwrite=True)
    starts = ("zero gain", "θ* + 0.1")
    trainings = len(spec.control_costs) * len(starts) * len(spec.methods)
    log.info("LQ check: %d trainings of %d full-batch epochs (control costs %s, methods %s) into %s",
             trainings, spec.epochs, ", ".join(f"{rho:g}" for rho in spec.control_costs), ",".join(spec.methods), out)  # fmt: skip
    bar = tqdm(total=trainings * spec.epochs, desc="lq", unit="epoch", disable=not progress)
    rows = []
    with float64(), contextlib.closing(bar):
        for rho in spec.control_costs:
            config = linear.LinearConfig(control_cost=rho)
            task = linear.make_task(config)
            x0 = linear.sample_initial_states(config, jax.random.key(spec.seed), spec.n_states, jnp.float64)
            theta_star, loss_star = optimum(config, np.asarray(x0))
            flows = {method: flow_from_name(method) for method in spec.methods}
            at_optimum = {
                method: float(optax.tree_utils.tree_norm(value_and_update(flow, linear.LinearFeedback(jnp.asarray(theta_star)), task.problem, x0)[1]))
                for method, flow in flows.items()
            }
            for start_name, start in zip(starts, (np.zeros((1, 2)), theta_star + 0.1)):
                for method, flow in flows.items():
                    bar.set_postfix_str(f"ρ={rho:g}, {start_name}, {method}")
                    result = train(
                        linear.LinearFeedback(jnp.asarray(start)), task.problem, x0, x0, flow=flow,
                        optimizer=make_optimizer("none", spec.learning_rate), epochs=spec.epochs, batch_size=spec.n_states,
                        on_epoch=lambda _: bar.update(),
                    )  # fmt: skip
                    theta = np.asarray(result.policy.gain)
                    at_end = value_and_update(flow, result.policy, task.problem, x0)[1]
                    loss = polynomial_loss(config, np.asarray(x0), theta)
                    rows.append({
                        "control_cost": rho, "start": start_name, "method": method,
                        "theta_0": float(theta[0, 0]), "theta_1": float(theta[0, 1]),
                        "theta_star_0": float(theta_star[0, 0]), "theta_star_1": float(theta_star[0, 1]),
                        "distance": float(np.linalg.norm(theta - theta_star)), "loss": loss, "loss_star": loss_star,
                        "loss_gap": loss - loss_star, "update_norm_at_end": float(optax.tree_utils.tree_norm(at_end)), "update_norm_at_optimum": at_optimum[method],
                    })  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "table.csv", rundir.csv_text(TABLE_COLUMNS, rows))
    atomic_write_text(out / "table.md", table_markdown(spec, rows))
    atomic_write_text(out / LQ_CONFIG, json.dumps(spec_dict, indent=2) + "\n")  # the marker as this command always wrote it
    return rows


def table_markdown(spec: LQSpec, rows: list[dict]) -> str:
    """``table.md``: a sentence on the setting, then a row per control cost × start × method."""
    title = (
        f"Linear-quadratic task (double integrator, 3 steps, {spec.n_states} fixed starts, float64): where each method ends "
        f"after {spec.epochs} full-batch Keras-Adam steps (lr {spec.learning_rate}); θ* minimises the loss polynomial directly."
    )
    cells = [
        (
            f"{r['control_cost']:g}", r["start"], r["method"], f"({r['theta_0']:.4f}, {r['theta_1']:.4f})",
            f"({r['theta_star_0']:.4f}, {r['theta_star_1']:.4f})", f"{r['distance']:.3g}", f"{r['loss_gap']:.3g}",
            f"{r['update_norm_at_end']:.2g}", f"{r['update_norm_at_optimum']:.2g}",
        )  # fmt: skip
        for r in rows
    ]
    header = ("ρ", "start", "method", "θ at the end", "θ*", "‖θ − θ*‖", "L(θ) − L(θ*)", "‖update‖ at the end", "‖update‖ at θ*")
    return "\n".join([title, "", tables.render(header, cells)]) + "\n"
