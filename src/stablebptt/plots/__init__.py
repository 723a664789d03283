"""Figures and animations: read results, draw (no pyplot state; every figure is its own object)."""

from .curves import (
    CLIP_STYLES,
    METHOD_COLORS,
    comparison_figure,
    learning_curve_figure,
    moving_average,
    save_figure,
    sweep_figure,
)
from .toy import toy_figure1, toy_figure2

__all__ = [
    "CLIP_STYLES",
    "METHOD_COLORS",
    "comparison_figure",
    "learning_curve_figure",
    "moving_average",
    "save_figure",
    "sweep_figure",
    "toy_figure1",
    "toy_figure2",
]
