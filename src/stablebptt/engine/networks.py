"""Controller networks with Keras's defaults (Glorot-uniform kernels, zero biases).

Every network here acts on a *batch*: axis 0 is the sample, the rest is
flattened (row-major) or convolved. A module written for one sample at a
time (``eqx.nn.MLP`` and most Equinox models) is wrapped in
:class:`PerSample`. Kernels are stored ``(in, out)`` so that
``y = x @ kernel + bias``, as in Keras.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp

__all__ = ["glorot_uniform", "Dense", "DenseNet", "dense_size", "Conv", "FunctionPolicy", "PerSample"]


glorot_uniform = jax.nn.initializers.glorot_uniform()
"""Keras's ``glorot_uniform``: ``glorot_uniform(key, shape, dtype)`` draws ``U(−a, a)`` with
``a = sqrt(6 / (fan_in + fan_out))``, the fans from the last two axes times the receptive field."""


class Dense(eqx.Module):
    """``activation(x @ kernel + bias)`` on ``x`` of shape ``(batch, in)``."""

    kernel: jax.Array
    bias: jax.Array
    activation: Callable = eqx.field(static=True, default=None)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = x @ self.kernel + self.bias
        return y if self.activation is None else self.activation(y)


class DenseNet(eqx.Module):
    """A multilayer perceptron on a batch: ``(batch, ...)`` → ``(batch, out_features)``.

    The input's trailing axes are flattened row-major. Hidden layers use
    ``activation`` (tanh by default), the last layer is linear; ``out_shape``
    reshapes its output to ``(batch, *out_shape)``.
    ``zero_last_kernel=True`` starts the last kernel at zero so that the
    initial output is 0 (**as published** for cart pole and repulsion).
    """

    layers: tuple[Dense, ...]
    out_shape: tuple[int, ...] | None = eqx.field(static=True)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (100, 100),
        *,
        key: jax.Array,
        activation: Callable = jnp.tanh,
        zero_last_kernel: bool = False,
        dtype=None,
        out_shape: Sequence[int] | None = None,
    ):
        dtype = dtype or jnp.result_type(float)
        sizes = [int(in_features), *[int(h) for h in hidden], int(out_features)]
        if any(s < 1 for s in sizes):
            raise ValueError(f"DenseNet: layer sizes {sizes} must all be positive")
        keys = jax.random.split(key, len(sizes) - 1)
        layers = []
        for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
            last = i == len(sizes) - 2
            kernel = (
                jnp.zeros((a, b), dtype)
                if (last and zero_last_kernel)
                else glorot_uniform(k, (a, b), dtype)
            )
            layers.append(Dense(kernel, jnp.zeros((b,), dtype), None if last else activation))
        self.layers = tuple(layers)
        if out_shape is not None:
            out_shape = tuple(int(s) for s in out_shape)
            if math.prod(out_shape) != out_features:
                raise ValueError(f"DenseNet: out_shape {out_shape} does not hold {out_features} outputs")
        self.out_shape = out_shape

    @property
    def in_features(self) -> int:
        return self.layers[0].kernel.shape[0]

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jnp.reshape(x, (x.shape[0], -1))
        if h.shape[1] != self.in_features:
            raise ValueError(
                f"DenseNet: input flattens to {h.shape[1]} features per sample; expected {self.in_features}"
            )
        for layer in self.layers:
            h = layer(h)
        return h if self.out_shape is None else jnp.reshape(h, (h.shape[0],) + self.out_shape)


def dense_size(in_features: int, out_features: int, hidden: Sequence[int] = (100, 100)) -> int:
    """Numbers in the weights of ``DenseNet(in_features, out_features, hidden)`` (every kernel and bias), from the sizes alone."""
    sizes = [in_features, *hidden, out_features]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


class Conv(eqx.Module):
    """A Keras-like convolution, channels last, ``"valid"`` padding.

    ``kernel`` is ``(*window, in_channels, out_channels)`` (Keras's layout);
    the input is ``(batch, *spatial, in_channels)``, the output
    ``(batch, *spatial_out, out_channels)`` with ``spatial_out = (spatial − window) // stride + 1``.
    """

    kernel: jax.Array
    bias: jax.Array
    strides: tuple[int, ...] = eqx.field(static=True)
    activation: Callable = eqx.field(static=True, default=None)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        window: Sequence[int],
        strides: Sequence[int],
        *,
        key: jax.Array,
        activation: Callable | None = None,
        dtype=None,
    ):
        dtype = dtype or jnp.result_type(float)
        window = tuple(int(w) for w in window)
        shape = window + (int(in_channels), int(out_channels))
        self.kernel = glorot_uniform(key, shape, dtype)
        self.bias = jnp.zeros((int(out_channels),), dtype)
        self.strides = tuple(int(s) for s in strides)
        self.activation = activation
        if len(self.strides) != len(window):
            raise ValueError(f"Conv: {len(window)}-D window {window} needs {len(window)} strides; got {self.strides}")

    def __call__(self, x: jax.Array) -> jax.Array:
        # Patches by strided slicing, then one matrix product: the same numbers as
        # lax.conv_general_dilated, but fast on CPU inside nested scans, where XLA's
        # convolution is not.
        window = self.kernel.shape[:-2]
        spatial_in = x.shape[1:-1]
        if len(spatial_in) != len(window):
            raise ValueError(f"Conv: input {x.shape} needs {len(window)} spatial axes between batch and channels")
        spatial_out = [(n - w) // s + 1 for n, w, s in zip(spatial_in, window, self.strides)]
        if min(spatial_out) < 1:
            raise ValueError(f"Conv: input {x.shape} is smaller than the window {window}")
        patches = []
        for offset in itertools.product(*(range(w) for w in window)):
            index = tuple(slice(o, o + s * (m - 1) + 1, s) for o, s, m in zip(offset, self.strides, spatial_out))
            patches.append(x[(slice(None),) + index])
        stacked = jnp.stack(patches, axis=-2)  # (batch, *spatial_out, window elements, in)
        flat = jnp.reshape(stacked, stacked.shape[:-2] + (-1,))
        y = flat @ jnp.reshape(self.kernel, (-1, self.kernel.shape[-1])) + self.bias
        return y if self.activation is None else self.activation(y)


class FunctionPolicy(eqx.Module):
    """A controller given as a pure function ``fn(params, x) -> c`` and its ``params`` pytree."""

    fn: Callable = eqx.field(static=True)
    params: Any

    def __call__(self, x: Any) -> Any:
        return self.fn(self.params, x)


class PerSample(eqx.Module):
    """A controller written for one sample (one state → one control), applied to a batch.

    ``PerSample(eqx.nn.MLP(4, 1, 64, 2, key=key))`` maps states ``(batch, 4)``
    to controls ``(batch, 1)`` by ``jax.vmap`` over axis 0 of every state
    leaf. ``in_axes`` is ``jax.vmap``'s, for states with unbatched leaves (e.g.
    ``{"pos": 0, "t": None}``). The wrapped module's arrays are trained as usual.
    """

    module: Callable
    in_axes: Any = eqx.field(static=True, default=0)

    def __check_init__(self):
        if not callable(self.module):
            raise TypeError(f"PerSample(module={self.module!r}): the module is not callable; wrap a per-sample controller, e.g. PerSample(eqx.nn.MLP(...))")

    def __call__(self, x: Any) -> Any:
        return jax.vmap(self.module, in_axes=(self.in_axes,))(x)
