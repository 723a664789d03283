"""The figure of :mod:`stablebptt.tools.diagnose`: how the adjoint grows along the horizon under R and under M."""

from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from .curves import METHOD_COLORS

__all__ = ["diagnosis_figure"]


def diagnosis_figure(
    log_adjoint: np.ndarray,
    sign_agreement: Sequence[float],
    cosine: Sequence[float],
    title: str = "",
    verdict: str = "",
) -> Figure:
    """Left: ``‖λ_t‖ / ‖λ_{n−1}‖`` against the step ``t`` (log y), one thin line per batch and their geometric mean,
    R and M; right: each batch's sign agreement and cosine of M's and R's updates.

    ``log_adjoint``: ``(batches, 2, n_steps)``, natural logs, lanes R then M.
    """
    log_adjoint = np.asarray(log_adjoint, dtype=np.float64)
    n = log_adjoint.shape[-1] - 1
    steps = np.arange(n + 1)
    fig = Figure(figsize=(10, 4), layout="constrained")
    grow, agree = fig.subplots(1, 2, width_ratios=(2.2, 1))
    for lane, name in enumerate(("R", "M")):
        color = METHOD_COLORS[name]
        for curve in log_adjoint[:, lane]:
            grow.plot(steps, np.exp(curve), color=color, lw=0.5, alpha=0.35)
        label = f"{name}: ×{np.exp(np.mean(log_adjoint[:, lane, 0])):.3g} over {n} steps"
        grow.plot(steps, np.exp(np.mean(log_adjoint[:, lane], axis=0)), color=color, lw=2, label=label)
    grow.set_yscale("log")
    grow.set_xlabel("step t (the backward pass runs from the end to t = 0)")
    grow.set_ylabel(r"$\|\lambda_t\| \;/\; \|\lambda_{n-1}\|$  (an adjoint carried back)")
    grow.legend(title="flow")
    batches = np.arange(1, len(sign_agreement) + 1)
    agree.plot(batches, sign_agreement, "o", color=METHOD_COLORS["C"], label="sign agreement of M and R")
    agree.plot(batches, cosine, "s", color="0.3", label="cosine of M and R")
    agree.axhline(0, color="0.8", lw=0.8)
    agree.set_ylim(-1.05, 1.05)
    agree.set_xlabel("batch")
    agree.set_xticks(batches)
    agree.legend(loc="lower left", fontsize="small")
    fig.suptitle("\n".join([title, *textwrap.wrap(verdict, 120)]), fontsize="medium")
    return fig
