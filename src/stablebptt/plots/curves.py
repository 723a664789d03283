"""Figures from per-epoch metrics (no pyplot state: every figure is its own object)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..atomic import atomic_write_bytes

__all__ = [
    "METHOD_COLORS",
    "CLIP_STYLES",
    "moving_average",
    "learning_curve_figure",
    "comparison_figure",
    "sweep_figure",
    "save_figure",
]

METHOD_COLORS = {"R": "tab:blue", "M": "tab:orange", "C": "tab:green", "S": "tab:red", "N": "tab:purple"}


def moving_average(y: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average of ``y`` over ``window`` entries (fewer at the start); same length."""
    y = np.asarray(y, dtype=np.float64)
    if window < 1:
        raise ValueError(f"window={window}; expected a positive integer")
    if not len(y):
        return y
    # each window summed on its own (not a running cumulative sum, which loses small values after a huge one)
    return np.convolve(y, np.ones(window))[: len(y)] / np.minimum(np.arange(1, len(y) + 1), window)


def _finite_positive(y) -> bool:
    y = np.asarray(y, dtype=np.float64)
    return bool(np.any(np.isfinite(y) & (y > 0)))


def learning_curve_figure(history: Sequence[Mapping], title: str = "", window: int = 20) -> Figure:
    """Train and test loss per epoch (log y) with the test loss smoothed over ``window`` epochs."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    epochs = [r["epoch"] for r in history]
    test = [r["test_loss"] for r in history]
    train = [r["train_loss"] for r in history]
    ax.plot(epochs, train, color="0.6", lw=0.8, label="train loss")
    ax.plot(epochs, test, color="tab:green", lw=0.8, alpha=0.5, label="test loss")
    ax.plot(epochs, moving_average(test, window), color="tab:green", lw=2, label=f"test loss, mean of {window}")
    if _finite_positive(test):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    return fig


def comparison_figure(histories: Mapping[str, Sequence[Mapping]], title: str = "", window: int = 20) -> Figure:
    """Test loss per epoch of several methods, smoothed, log y (the paper's learning-curve panels)."""
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.subplots()
    any_positive = False
    for method, history in histories.items():
        epochs = [r["epoch"] for r in history]
        test = [r["test_loss"] for r in history]
        color = METHOD_COLORS.get(method)
        ax.plot(epochs, test, color=color, lw=0.6, alpha=0.3)
        ax.plot(epochs, moving_average(test, window), color=color, lw=2, label=method)
        any_positive |= _finite_positive(test)
    if any_positive:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"test loss (mean of {window} epochs)")
    ax.set_title(title)
    ax.legend(title="method")
    return fig


def save_figure(fig: Figure, path: Path, dpi: int = 120) -> None:
    """Render ``fig`` to PNG and write it atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(Path(path), buf.getvalue())




CLIP_STYLES = {"none": "-", "value": "--", "norm": ":"}


def _band(curves: list[np.ndarray], window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max over seeds of smoothed curves (cut to the shortest)."""
    n = min(len(c) for c in curves)
    smooth = np.stack([moving_average(c[:n], window) for c in curves])
    return smooth.mean(axis=0), smooth.min(axis=0), smooth.max(axis=0)


def sweep_figure(
    levels: Sequence,
    level_names: Sequence[str],
    methods: Sequence[str],
    clips: Sequence[str],
    runs: Mapping[tuple, Sequence[Mapping]],
    *,
    title: str = "",
    window: int = 20,
    update_size: bool = False,
) -> Figure:
    """The paper's learning-curve panels, over seeds.

    One panel per difficulty level; colour = method, line style = clip mode;
    the line is the mean over seeds of the test loss smoothed over ``window``
    epochs, the band its min–max over seeds; log y. ``runs[(level, method,
    clip)]`` lists ``{"status", "history"}`` per seed (diverged runs count
    only where no seed finished). ``update_size=True`` adds a second row with
    the squared norm of the update per epoch (the quantum figure's panel e).
    """
    rows = 2 if update_size else 1
    fig = Figure(figsize=(3.6 * len(levels) + 1.2, 3.3 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, len(levels), squeeze=False)
    metrics = [("test_loss", f"test loss (mean of {window} epochs)")] + ([("update_sq_norm", "update size |u|²")] if update_size else [])
    for r, (key, ylabel) in enumerate(metrics):
        for j, (level, name) in enumerate(zip(levels, level_names, strict=True)):
            ax = axes[r][j]
            for method in methods:
                for clip in clips:
                    seeds = runs.get((level, method, clip), [])
                    finished = [s for s in seeds if s["status"] == "finished"] or list(seeds)
                    curves = [np.array([row[key] for row in s["history"]], dtype=np.float64) for s in finished]
                    curves = [c[np.isfinite(c)] for c in curves]
                    curves = [c for c in curves if len(c)]
                    if not curves:
                        continue
                    mean, lo, hi = _band(curves, window)
                    epochs = np.arange(1, len(mean) + 1)
                    color = METHOD_COLORS.get(method)
                    ax.plot(epochs, mean, color=color, ls=CLIP_STYLES.get(clip, "-"), lw=1.6, label=f"{method}, clip {clip}")
                    if len(curves) > 1:
                        ax.fill_between(epochs, lo, hi, color=color, alpha=0.12, lw=0)
            if ax.lines and all(np.all(np.asarray(line.get_ydata()) > 0) for line in ax.lines):
                ax.set_yscale("log")
            ax.set_title(name if r == 0 else f"{name}: update size")
            ax.set_xlabel("epoch")
            if j == 0:
                ax.set_ylabel(ylabel)
    handles = [Line2D([], [], color=METHOD_COLORS.get(m), lw=2, label=m) for m in methods]
    handles += [Line2D([], [], color="0.3", ls=CLIP_STYLES.get(c, "-"), label=f"clip {c}") for c in clips]
    fig.legend(handles=handles, loc="outside right center")
    if title:
        fig.suptitle(title)
    return fig
