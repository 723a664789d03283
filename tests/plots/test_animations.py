"""Animations: one frame per drawn state, GIFs with that many frames, for every task."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from PIL import Image

from stablebptt.plots.animations import MAX_FRAMES, frame_indices, write_gif
from stablebptt.tasks import cartpole, quantum, repulsion


def test_frame_indices():
    assert frame_indices(60) == list(range(61))
    assert frame_indices(100) == list(range(0, 101, 2))
    assert frame_indices(128) == list(range(0, 129, 2))
    assert frame_indices(130)[-1] == 130 and len(frame_indices(130)) <= MAX_FRAMES + 1


@pytest.mark.parametrize(
    "module, config, control",
    [
        (cartpole, cartpole.CartPoleConfig(n_poles=2, n_steps=20), lambda b: jnp.ones(b)),
        (repulsion, repulsion.RepulsionConfig(n_steps=12), lambda b: jnp.ones((b, 2, 2))),
        (quantum, quantum.QuantumConfig(n_steps=16), lambda b: jnp.ones(b)),
    ],
)
def test_gif_has_a_frame_per_state(tmp_path, module, config, control):
    x = module.sample_initial_states(config, jax.random.key(0), 1)
    states = [x]
    for _ in range(config.n_steps):
        states.append(module.step(config, states[-1], control(1)))
    states = jnp.concatenate(states)
    path = tmp_path / "a.gif"
    frames = write_gif(module.__name__.rsplit(".", 1)[1], states, config, config.dt, path)
    assert frames == config.n_steps + 1
    with Image.open(path) as gif:
        assert gif.n_frames == frames
