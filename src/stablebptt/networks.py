"""Controller networks with Keras's defaults (Glorot-uniform kernels, zero biases).

Every network here acts on a *batch*: axis 0 is the sample, the rest is
flattened (row-major) or convolved. Kernels are stored ``(in, out)`` so that
``y = x @ kernel + bias``, as in Keras.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp

__all__ = ["glorot_uniform", "Dense", "DenseNet", "FunctionPolicy"]


def glorot_uniform(key: jax.Array, shape: Sequence[int], fan_in: int, fan_out: int, dtype=None) -> jax.Array:
    """``U(−a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))`` (Keras's ``glorot_uniform``)."""
    dtype = dtype or jnp.result_type(float)
    limit = (6.0 / (fan_in + fan_out)) ** 0.5
    return jax.random.uniform(key, tuple(shape), dtype, -limit, limit)


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
    ``activation`` (tanh by default), the last layer is linear.
    ``zero_last_kernel=True`` starts the last kernel at zero so that the
    initial output is 0 (**as published** for cart pole and repulsion).
    """

    layers: tuple[Dense, ...]

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
                else glorot_uniform(k, (a, b), a, b, dtype)
            )
            layers.append(Dense(kernel, jnp.zeros((b,), dtype), None if last else activation))
        self.layers = tuple(layers)

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
        return h


class FunctionPolicy(eqx.Module):
    """A controller given as a pure function ``fn(params, x) -> c`` and its ``params`` pytree."""

    fn: Callable = eqx.field(static=True)
    params: Any

    def __call__(self, x: Any) -> Any:
        return self.fn(self.params, x)
