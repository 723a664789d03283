"""Animations of what a trained controller does (GIF, written with Pillow; no system tools).

* cart pole: the cart and its poles swinging up;
* guidance by repulsion: drivers (red) herding evaders (blue) with their trails;
* quantum control: the probability density ``|ψ(x, t)|²`` over space and time
  as an image that fills in (the paper's Figure 5a), beside the current
  density and the target's.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from ..atomic import atomic_write_bytes

__all__ = ["frame_indices", "animation_figure", "write_gif", "MAX_FRAMES"]

MAX_FRAMES = 65


def frame_indices(n_steps: int, max_frames: int = MAX_FRAMES) -> list[int]:
    """Which of the states ``0..n_steps`` become frames: every ``ceil(n_steps/(max_frames−1))``-th, and the last."""
    stride = max(1, math.ceil(n_steps / (max_frames - 1)))
    idx = list(range(0, n_steps + 1, stride))
    if idx[-1] != n_steps:
        idx.append(n_steps)
    return idx


def _cartpole(fig: Figure, states: np.ndarray, config, dt: float):
    ax = fig.subplots()
    length = 2 * config.pole_length
    x = states[:, 0, 0]
    lo, hi = min(x.min(), -1) - length - 0.5, max(x.max(), 1) + length + 0.5
    ax.set_xlim(lo, hi)
    ax.set_ylim(-length * 1.3, length * 1.3)
    ax.set_aspect("equal")
    ax.axhline(0, color="0.7", lw=1)
    ax.set_title(f"cart pole, {config.n_poles} pole(s)")
    cart = ax.add_patch(_rectangle(0.0))
    poles = [ax.plot([], [], lw=3, solid_capstyle="round")[0] for _ in range(config.n_poles)]
    text = ax.text(0.02, 0.95, "", transform=ax.transAxes, va="top")

    def draw(i):
        s = states[i]
        cart.set_x(s[0, 0] - 0.25)
        for k, line in enumerate(poles):
            theta = s[1 + k, 0]
            line.set_data([s[0, 0], s[0, 0] + length * np.sin(theta)], [0.0, length * np.cos(theta)])
        text.set_text(f"t = {i * dt:.2f}")
        return [cart, *poles, text]

    return draw


def _rectangle(x: float):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.25, -0.1), 0.5, 0.2, color="0.3")


def _repulsion(fig: Figure, states: np.ndarray, config, dt: float):
    ax = fig.subplots()
    pos = states[:, :, 0, :]
    span = max(np.abs(pos).max(), 1.0) * 1.1
    ax.set_xlim(-span, span)
    ax.set_ylim(-span, span)
    ax.set_aspect("equal")
    ax.plot([0], [0], "x", color="k", ms=10, label="target")
    nd = config.n_drivers
    colors = ["tab:red"] * nd + ["tab:blue"] * config.n_evaders
    trails = [ax.plot([], [], color=c, lw=1, alpha=0.5)[0] for c in colors]
    dots = ax.scatter(pos[0, :, 0], pos[0, :, 1], c=colors, s=[60] * nd + [30] * config.n_evaders, zorder=3)
    ax.set_title("guidance by repulsion: drivers (red) herd evaders (blue)")
    text = ax.text(0.02, 0.95, "", transform=ax.transAxes, va="top")

    def draw(i):
        for k, trail in enumerate(trails):
            trail.set_data(pos[: i + 1, k, 0], pos[: i + 1, k, 1])
        dots.set_offsets(pos[i])
        text.set_text(f"t = {i * dt:.2f}")
        return [*trails, dots, text]

    return draw


def _quantum(fig: Figure, states: np.ndarray, config, dt: float):
    from ..tasks import quantum

    density = states[..., 0] ** 2 + states[..., 1] ** 2  # (time, grid)
    x = np.asarray(quantum.grid(config))
    target = np.asarray(quantum.eigenstate(config, config.target)) ** 2
    left, right = fig.subplots(1, 2, width_ratios=[2, 1])
    shown = np.full_like(density.T, np.nan)
    extent = (0, (len(density) - 1) * dt, x[0], x[-1])
    image = left.imshow(shown, origin="lower", aspect="auto", extent=extent, vmin=0, vmax=density.max(), cmap="magma")
    left.set_xlabel("t")
    left.set_ylabel("x")
    left.set_title("|ψ(x, t)|²")
    fig.colorbar(image, ax=left)
    (now,) = right.plot(x, density[0], color="tab:blue", label="|ψ|² now")
    right.plot(x, target, color="k", ls="--", label=f"target φ_{config.target}")
    right.set_ylim(0, max(density.max(), target.max()) * 1.05)
    right.set_xlabel("x")
    right.legend(loc="upper right")
    text = right.set_title("")

    def draw(i):
        shown[:] = np.nan
        shown[:, : i + 1] = density[: i + 1].T
        image.set_data(shown)
        now.set_ydata(density[i])
        text.set_text(f"t = {i * dt:.2f}")
        return [image, now, text]

    return draw


_DRAWERS = {"cartpole": _cartpole, "repulsion": _repulsion, "quantum": _quantum}


def animation_figure(task: str, states: np.ndarray, config, dt: float) -> tuple[Figure, callable]:
    """A figure and its ``draw(state_index)`` for one trajectory ``states (n_steps + 1, ...)``."""
    if task not in _DRAWERS:
        raise ValueError(f"no animation for task {task!r}; there is one for {', '.join(_DRAWERS)}")
    fig = Figure(figsize=(9, 4) if task == "quantum" else (6, 4.5), dpi=80, layout="constrained")
    FigureCanvasAgg(fig)
    draw = _DRAWERS[task](fig, np.asarray(states), config, dt)
    draw(len(states) - 1)
    fig.canvas.draw()  # lay out once, with the widest content, then keep the layout fixed
    fig.set_layout_engine("none")
    return fig, draw


def write_gif(task: str, states: np.ndarray, config, dt: float, path: Path, fps: int = 20) -> int:
    """Animate ``states`` into a GIF at ``path`` (written atomically); returns the number of frames."""
    path = Path(path)
    fig, draw = animation_figure(task, states, config, dt)
    frames = []
    for i in frame_indices(len(states) - 1):
        draw(i)
        fig.canvas.draw()
        frames.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB").quantize(colors=128))
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0)
    atomic_write_bytes(path, buf.getvalue())
    return len(frames)
