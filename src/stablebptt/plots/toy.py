"""Drawings of the toy examples (the paper's Figures 1 and 2)."""

from __future__ import annotations

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

__all__ = ["toy_figure1", "toy_figure2"]


def _field_panel(ax, t1, t2, vectors, line_color, title):
    length = np.linalg.norm(vectors, axis=-1)
    positive = length[length > 0]
    norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if positive.size else None
    mesh = ax.pcolormesh(t1, t2, np.maximum(length, norm.vmin if norm else 0), norm=norm, cmap="viridis", shading="auto")
    # flow lines: where an optimizer following the field moves (−vector), at unit speed
    # (the lengths span many decades; the colour shows them)
    unit = -vectors / np.maximum(length, 1e-30)[..., None]
    ax.streamplot(t1, t2, unit[..., 0], unit[..., 1], color=line_color, density=0.8, linewidth=0.8, arrowsize=0.8)
    ax.set_title(title)
    ax.set_xlabel("θ₁")
    ax.set_ylabel("θ₂")
    ax.set_xlim(t1.min(), t1.max())
    ax.set_ylim(t2.min(), t2.max())
    return mesh


def toy_figure1(data) -> Figure:
    """a) loss landscape, b) gradient field (red flow lines), c) modified field (yellow); colour = vector length.

    Flow lines follow the descent direction (minus the field).
    """
    fig = Figure(figsize=(14, 4.2), layout="constrained")
    a, b, c = fig.subplots(1, 3)
    loss = np.maximum(data.loss, 1e-8)
    mesh = a.pcolormesh(data.theta1, data.theta2, loss, norm=LogNorm(vmin=loss.min(), vmax=loss.max()), cmap="magma", shading="auto")
    a.contour(data.theta1, data.theta2, np.log10(loss), levels=12, colors="white", linewidths=0.5)
    a.set_title("a) loss landscape")
    a.set_xlabel("θ₁")
    a.set_ylabel("θ₂")
    fig.colorbar(mesh, ax=a, label="loss")
    fig.colorbar(_field_panel(b, data.theta1, data.theta2, data.gradient, "red", "b) gradient field (R)"), ax=b, label="|vector|")
    fig.colorbar(_field_panel(c, data.theta1, data.theta2, data.modified, "yellow", "c) modified field (M)"), ax=c, label="|vector|")
    return fig


def toy_figure2(data, limit: float = 5.0, n: int = 41) -> Figure:
    """a–c) Adam's path on the gradient, rotated and combined fields over their length; d) loss curves."""
    import jax
    import jax.numpy as jnp

    fig = Figure(figsize=(18, 4.2), layout="constrained")
    axes = fig.subplots(1, 4)
    axis = np.linspace(-limit, limit, n)
    t1, t2 = np.meshgrid(axis, axis, indexing="xy")
    grid = jnp.asarray(np.stack([t1.ravel(), t2.ravel()], axis=1), jnp.float32)
    for ax, letter, name in zip(axes[:3], "abc", data.names, strict=True):
        vectors = np.asarray(jax.vmap(data.fields[name])(grid)).reshape(n, n, 2)
        _field_panel(ax, t1, t2, vectors, "white", f"{letter}) {name} field")
        path = data.paths[name]
        ax.plot(path[:, 0], path[:, 1], color="red", lw=1.2, marker=".", ms=2)
        ax.plot(*path[0], "o", color="red")
    d = axes[3]
    for name in data.names:
        d.plot(np.maximum(data.losses[name], 1e-12), label=name)
    d.set_yscale("log")
    d.set_xlabel("Adam step")
    d.set_ylabel("L = θ₁² + θ₂²")
    d.set_title("d) loss")
    d.legend()
    return fig
