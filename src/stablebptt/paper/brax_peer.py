"""Brax's own gradient trainer (APG) and stablebptt's R, M, C side by side on one Brax environment.

Equal budgets: the same episode length (our horizon), the same number of
simulator steps in training, the same policy size (4 × 32 hidden units), the
same seeds. APG runs twice: with its default settings (``horizon_length=32``,
windows of the episode, ``learning_rate=1e-4``, ``adam_b=(0.7, 0.95)``, its
hard-wired ``optax.clip(1.0)``, auto-reset episodes) and with the horizon
window that matches ours (the whole episode). Every final policy is scored by
the same evaluator: the mean return of the run's fixed test initial states
over one episode (rewards until ``done``).

Layout of the output directory::

    peer.json                      the comparison's settings (a restart must match them)
    runs/<method>-seed<k>/         stablebptt's runs (ordinary run directories)
    apg/<variant>-seed<k>.json     APG's curve, final return and wall time
    table.csv, table.md, figure.png
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import math
import time
from pathlib import Path
from typing import Any
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

from .. import tables, validate
from ..atomic import atomic_write_text
from ..runs import memory, resume, rundir
from ..runs.config import RunConfig
from ..runs.single import build, train_run

__all__ = ["PeerSpec", "APG_VARIANTS", "import_apg", "apg_jax_compat", "run_peer", "peer_table", "peer_table_markdown", "peer_figure", "write_report"]

log = logging.getLogger(__name__)
PEER_CONFIG = "peer.json"
APG_VARIANTS = ("APG-default", "APG-matched")
TABLE_COLUMNS = ("method", "seeds", "final_return_mean", "final_return_std", "wall_seconds_mean", "simulator_steps")


@dataclasses.dataclass(frozen=True)
class PeerSpec:
    """One environment, the budget and the seeds of a side-by-side comparison.

    Training budget in simulator steps: ``epochs × n_train × n_steps`` for every method.
    """

    env: str = "inverted_double_pendulum"
    n_steps: int = 100
    epochs: int = 20
    n_train: int = 64
    n_test: int = 32
    batch_size: int = 8
    learning_rate: float = 1e-3
    seeds: tuple[int, ...] = (42, 43, 44)
    methods: tuple[str, ...] = ("R", "M", "C")
    apg_default_horizon: int = 32
    apg_evals: int = 11
    check_runs: dataclasses.InitVar[bool] = True

    def __post_init__(self, check_runs: bool):
        """``check_runs=False`` skips what needs Brax (each run's settings and memory): :meth:`read` does."""
        object.__setattr__(self, "methods", tuple(validate.distinct("methods", (m.upper() for m in self.methods))))
        if check_runs and len(self.seeds) and self.methods:  # runs train one after another; the report holds every run's metrics
            memory.check_fits(self.run_config(self.methods[0], self.seeds[0]), apart={"seeds": len(self.seeds), "methods": len(self.methods)})
        object.__setattr__(self, "seeds", tuple(validate.distinct("seeds", self.seeds)))
        validate.positive_int("apg_default_horizon", self.apg_default_horizon)
        validate.positive_int("apg_evals", self.apg_evals)
        if check_runs:
            for seed, method in itertools.product(self.seeds, self.methods):
                self.run_config(method, seed)  # validates env, sizes and methods
        for horizon in (self.apg_default_horizon, self.n_steps):
            if self.simulator_steps % (self.batch_size * horizon):
                raise ValueError(
                    f"the budget of {self.simulator_steps} simulator steps is not a whole number of APG updates of "
                    f"{self.batch_size} environments × {horizon} steps; choose --epochs or --n-train to fit"
                )

    @classmethod
    def read(cls, folder: Path) -> PeerSpec:
        """The spec of a comparison's folder (its ``peer.json``), checked as when it trained except for what needs
        Brax: tables, figures and claims of committed comparisons are written without the ``brax`` extra."""
        return cls(**json.loads((Path(folder) / PEER_CONFIG).read_text(encoding="utf-8")), check_runs=False)

    @property
    def simulator_steps(self) -> int:
        return self.epochs * self.n_train * self.n_steps

    def run_config(self, method: str, seed: int) -> RunConfig:
        settings = dataclasses.asdict(self)
        return RunConfig.from_options(settings, task="brax", task_options={"env": self.env, "n_steps": self.n_steps}, method=method, clip="none", seed=seed)

    def apg_horizon(self, variant: str) -> int:
        return self.apg_default_horizon if variant == "APG-default" else self.n_steps

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def import_apg() -> Any:
    """``brax.training.agents.apg.train`` (run it inside :func:`apg_jax_compat`)."""
    from ..simulators import brax as brax_sim

    brax_sim.import_brax_envs()
    from brax.training.agents.apg import train as apg

    return apg


def _device_put_replicated(x: Any, devices: list) -> Any:
    stacked = jax.tree.map(lambda a: jnp.stack([jnp.asarray(a)] * len(devices)), x)
    return jax.device_put(stacked, devices[0])


def apg_jax_compat() -> contextlib.AbstractContextManager:
    """Brax 0.14's APG calls ``jax.device_put_replicated``, which JAX 0.10 removed; on one device its
    documented replacement is stacking the copies. Provided for the duration of the call only."""
    if "device_put_replicated" in vars(jax):
        return contextlib.nullcontext()
    return mock.patch.object(jax, "device_put_replicated", _device_put_replicated, create=True)


def train_apg(spec: PeerSpec, variant: str, seed: int) -> dict:
    """Train Brax's APG under ``spec``'s budget; its curve, its final return on our test states, its wall time."""
    from ..simulators import brax as brax_sim

    apg = import_apg()
    setup = build(spec.run_config("R", seed))  # the same test initial states as our runs of this seed
    env = brax_sim.get_env(spec.env)
    horizon = spec.apg_horizon(variant)
    updates = spec.simulator_steps // (spec.batch_size * horizon)
    evals = min(spec.apg_evals, updates + 1)
    curve: list[dict] = []
    per_epoch = round(updates / max(evals - 1, 1))

    def progress(it: int, metrics: dict) -> None:
        curve.append({"simulator_steps": it * per_epoch * spec.batch_size * horizon, "return": float(metrics["eval/episode_reward"])})

    start = time.perf_counter()
    with apg_jax_compat():
        make_policy, params, _ = apg.train(
            environment=env, episode_length=spec.n_steps, policy_updates=updates, horizon_length=horizon,
            num_envs=spec.batch_size, num_evals=evals, seed=seed, progress_fn=progress,
        )  # fmt: skip
    wall = time.perf_counter() - start
    act = make_policy(params, deterministic=True)
    key = jax.random.PRNGKey(0)  # unused by the deterministic policy
    returns = brax_sim.episode_returns(lambda x: act(x.obs, key)[0], env, setup.test_x, spec.n_steps)
    return {
        "variant": variant, "seed": seed, "horizon_length": horizon, "policy_updates": updates,
        "simulator_steps": updates * spec.batch_size * horizon, "wall_seconds": wall,
        "final_return": float(np.mean(np.asarray(returns))), "curve": curve,
    }  # fmt: skip


def run_peer(
    spec: PeerSpec, out: Path, *, progress: bool = False, checkpoint_every: int = resume.DEFAULT_EVERY
) -> None:
    """Train every unfinished run of the comparison into ``out`` (resumable), then write table and figure.

    Each training is logged (INFO) as it starts; ``progress``: a progress bar per stablebptt run.
    """
    out = Path(out)
    rundir.claim_output(out, marker=PEER_CONFIG, what="comparison", settings=spec.to_dict())
    for seed in spec.seeds:
        for variant in APG_VARIANTS:
            path = out / "apg" / f"{variant}-seed{seed}.json"
            if path.is_file():
                continue
            log.info("training %s (horizon %d), seed %d", variant, spec.apg_horizon(variant), seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(train_apg(spec, variant, seed), indent=2) + "\n")
        for method in spec.methods:
            log.info("training stablebptt %s, seed %d", method, seed)
            train_run(
                spec.run_config(method, seed), out / "runs" / f"{method}-seed{seed}",
                progress=progress, announce=False, checkpoint_every=checkpoint_every,
            )  # fmt: skip
    write_report(spec, out)


def write_report(spec: PeerSpec, out: Path) -> list[dict]:
    """Write ``table.csv``, ``table.md`` and ``figure.png`` from what the comparison's runs wrote; returns the rows."""
    rows = peer_table(spec, out)
    atomic_write_text(out / "table.csv", rundir.csv_text(TABLE_COLUMNS, rows))
    atomic_write_text(out / "table.md", peer_table_markdown(spec, rows))
    from .. import plots

    plots.save_figure(peer_figure(spec, out), out / "figure.png")
    return rows


def _results(spec: PeerSpec, out: Path) -> dict[str, list[dict]]:
    """``method -> [{"seed", "final_return", "wall_seconds", "steps": [...], "returns": [...]}]`` of what is on disk."""
    found: dict[str, list[dict]] = {}
    for variant in APG_VARIANTS:
        for seed in spec.seeds:
            path = Path(out) / "apg" / f"{variant}-seed{seed}.json"
            if path.is_file():
                r = json.loads(path.read_text(encoding="utf-8"))
                found.setdefault(variant, []).append({
                    "seed": seed, "final_return": r["final_return"], "wall_seconds": r["wall_seconds"],
                    "steps": [p["simulator_steps"] for p in r["curve"]], "returns": [p["return"] for p in r["curve"]],
                })  # fmt: skip
    per_epoch = spec.n_train * spec.n_steps
    for method in spec.methods:
        for seed in spec.seeds:
            path = Path(out) / "runs" / f"{method}-seed{seed}"
            summary = rundir.read_summary(path)
            if summary is None:
                continue
            history = rundir.read_metrics(path / rundir.METRICS)
            initial = -summary["initial"]["test_loss"] if summary.get("initial") else math.nan
            found.setdefault(method, []).append({
                "seed": seed, "final_return": -history[-1]["test_loss"] if summary["status"] == "finished" else math.nan,
                "wall_seconds": summary["wall_seconds"],
                "steps": [0] + [row["epoch"] * per_epoch for row in history],
                "returns": [initial] + [-row["test_loss"] for row in history],
                "update_sq_norm": [row["update_sq_norm"] for row in history],
            })  # fmt: skip
    return found


def peer_table(spec: PeerSpec, out: Path) -> list[dict]:
    """One row per method: final return on the test states (mean ± std over seeds), wall seconds, simulator steps."""
    found = _results(spec, out)
    rows = []
    for method in APG_VARIANTS + spec.methods:
        runs = found.get(method, [])
        finals = [r["final_return"] for r in runs if math.isfinite(r["final_return"])]
        rows.append({
            "method": method, "seeds": len(runs),
            "final_return_mean": float(np.mean(finals)) if finals else math.nan,
            "final_return_std": float(np.std(finals)) if finals else math.nan,
            "wall_seconds_mean": float(np.mean([r["wall_seconds"] for r in runs])) if runs else math.nan,
            "simulator_steps": spec.simulator_steps,
        })  # fmt: skip
    return rows


def peer_table_markdown(spec: PeerSpec, rows: list[dict]) -> str:
    lines = [
        f"{spec.env}: return over one episode of {spec.n_steps} steps from {spec.n_test} fixed test states, "
        f"after {spec.simulator_steps} training simulator steps; mean ± std over {len(spec.seeds)} seed(s)",
        "",
    ]
    cells = [
        (
            r["method"],
            "—" if math.isnan(r["final_return_mean"]) else f"{r['final_return_mean']:.4g} ± {r['final_return_std']:.2g}",
            "—" if math.isnan(r["wall_seconds_mean"]) else f"{r['wall_seconds_mean']:.0f}",
            r["simulator_steps"],
        )
        for r in rows
    ]
    return "\n".join([*lines, tables.render(("method", "final return", "wall seconds", "simulator steps"), cells)]) + "\n"


def peer_figure(spec: PeerSpec, out: Path) -> Any:
    """Left: return against simulator steps, one colour per method, the band from the lowest to the highest seed.

    Right: each stablebptt method's update size ``|u|²`` per epoch (the epoch's mean over its
    mini-batches, log scale), so that a gradient that grows with the horizon shows beside the returns.
    """
    from matplotlib.figure import Figure

    from ..plots.curves import METHOD_COLORS

    colors = {**METHOD_COLORS, "APG-default": "0.25", "APG-matched": "0.6"}
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax, ax_u = fig.subplots(1, 2)
    for method, runs in _results(spec, out).items():
        runs = [r for r in runs if r["returns"]]
        if not runs:
            continue
        n = min(len(r["returns"]) for r in runs)
        steps = np.asarray(runs[0]["steps"][:n], dtype=float)
        curves = np.asarray([r["returns"][:n] for r in runs], dtype=float)
        ax.plot(steps, np.nanmean(curves, axis=0), color=colors.get(method), lw=1.6, label=method)
        if len(runs) > 1:
            ax.fill_between(steps, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0), color=colors.get(method), alpha=0.15, lw=0)
        if "update_sq_norm" in runs[0] and n > 1:
            sizes = np.asarray([r["update_sq_norm"][: n - 1] for r in runs], dtype=float)
            epochs = np.arange(1, n)
            ax_u.plot(epochs, np.exp(np.nanmean(np.log(sizes), axis=0)), color=colors.get(method), lw=1.6, label=method)
            if len(runs) > 1:
                ax_u.fill_between(epochs, np.nanmin(sizes, axis=0), np.nanmax(sizes, axis=0), color=colors.get(method), alpha=0.15, lw=0)
    ax.set_xlabel("training simulator steps")
    ax.set_ylabel("evaluation return")
    ax.set_title(f"{spec.env} ({spec.n_steps}-step episodes)")
    ax_u.set_xlabel("epoch")
    ax_u.set_ylabel("update size |u|² (geometric mean over seeds)")
    ax_u.set_yscale("log")
    ax_u.set_title("stablebptt's update sizes")
    for a in (ax, ax_u):
        if a.lines:
            a.legend()
    return fig
