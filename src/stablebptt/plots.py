"""Figures from per-epoch metrics (no pyplot state: every figure is its own object)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from .atomic import atomic_write_bytes

__all__ = ["METHOD_COLORS", "moving_average", "learning_curve_figure", "comparison_figure", "save_figure"]

METHOD_COLORS = {"R": "tab:blue", "M": "tab:orange", "C": "tab:green", "S": "tab:red", "N": "tab:purple"}


def moving_average(y: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average of ``y`` over ``window`` entries (fewer at the start); same length."""
    y = np.asarray(y, dtype=np.float64)
    if window < 1:
        raise ValueError(f"window={window}; expected a positive integer")
    c = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


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


