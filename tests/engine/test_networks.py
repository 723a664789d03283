"""Keras-like layers: initialisation and convolution arithmetic."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stablebptt as sb
from stablebptt.engine.networks import Conv

from ..conftest import tol


@pytest.mark.parametrize(
    "window, strides, shape",
    [((3, 2), (2, 2), (5, 32, 2, 1)), ((3,), (2,), (5, 15, 60)), ((2, 3), (1, 2), (2, 9, 11, 4))],
)
def test_conv_equals_xla_convolution(window, strides, shape, dtype):
    conv = Conv(shape[-1], 7, window, strides, key=jax.random.key(0), activation=jnp.tanh, dtype=dtype)
    x = jax.random.normal(jax.random.key(1), shape, dtype)
    spatial = "HWD"[: len(window)]
    want = jnp.tanh(
        jax.lax.conv_general_dilated(x, conv.kernel, strides, "VALID", dimension_numbers=("N" + spatial + "C", spatial + "IO", "N" + spatial + "C"))
    )
    assert conv(x).dtype == dtype
    np.testing.assert_allclose(conv(x), want, atol=tol(dtype, 2e-6, 1e-14))
    assert conv(x).shape == want.shape


def test_glorot_limits_and_zero_biases():
    conv = Conv(1, 60, (3, 2), (2, 2), key=jax.random.key(0))
    limit = np.sqrt(6 / (6 * 1 + 6 * 60))  # fans: receptive field × channels
    k = np.asarray(conv.kernel)
    assert np.abs(k).max() <= limit and np.abs(k).max() > 0.95 * limit
    assert np.all(np.asarray(conv.bias) == 0)
    net = sb.DenseNet(4, 3, (5,), key=jax.random.key(1), out_shape=(3, 1))
    assert net(jnp.ones((2, 2, 2))).shape == (2, 3, 1)
    with pytest.raises(ValueError, match="input flattens to 6 features per sample; expected 4"):
        net(jnp.ones((2, 6)))
    with pytest.raises(ValueError, match=r"out_shape \(2, 2\) does not hold 3 outputs"):
        sb.DenseNet(4, 3, (5,), key=jax.random.key(1), out_shape=(2, 2))
