"""Every experiment ``stablebptt reproduce`` runs, by name: the paper's sweeps (:data:`stablebptt.sweeps.presets.EXPERIMENTS`)
and the reproductions of this package (the toy figures, the LQ check, the Brax comparison)."""

from __future__ import annotations

from ..sweeps.presets import EXPERIMENTS

__all__ = ["REPRODUCIBLE", "SWEEPS"]

SWEEPS = tuple(EXPERIMENTS)
"""The experiments that are sweeps of runs (difficulty × method × clipping × seeds)."""

REPRODUCIBLE: dict[str, str] = {
    "toy": "the toy figures: the fields of Figure 1 and Adam on them (Figure 2)",
    "lq": "the linear-quadratic check of the abstract: where R's, M's and C's fixed points lie",
    **{name: f"the {name} sweep: {exp.difficulty} × method × clipping × seeds" for name, exp in EXPERIMENTS.items()},
    "brax": "Brax's own gradient trainer (APG) against R, M and C on one Brax environment",
}
"""Name → what it reproduces, in the order ``stablebptt reproduce --help`` lists them."""
