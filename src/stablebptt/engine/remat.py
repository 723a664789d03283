"""Checkpointed (rematerialised) time loops: long horizons in bounded memory.

A rollout of ``n`` steps cut into segments of ``k`` steps keeps only the
state at each segment's start during the forward pass; the backward pass
recomputes one segment at a time. Memory holds ``n / k`` segment starts plus
one segment's intermediates, so with ``k ≈ √n`` it grows like ``√n`` instead
of ``n``, for about one extra forward pass of compute. Gradients are the same
as without checkpointing (up to the order of floating-point sums).

``remat`` settings, accepted wherever the library takes one:

* ``False`` / ``None`` / ``0``: no checkpointing;
* ``True``: segments of ``ceil(√n)`` steps;
* an integer ``k ≥ 1``: segments of ``k`` steps.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
from jax import lax

__all__ = ["segment_length", "check_remat", "split_segments", "segmented_scan"]


def check_remat(remat: Any) -> None:
    """Raise a one-line ``ValueError`` unless ``remat`` is a valid setting (see the module docstring)."""
    if remat is None or isinstance(remat, bool):
        return
    if not isinstance(remat, int) or remat < 0:
        raise ValueError(f"remat={remat!r}; expected True, False or a number of steps per checkpointed segment (>= 1)")


def segment_length(n_steps: int, remat: bool | int | None) -> int | None:
    """Steps per checkpointed segment for a loop of ``n_steps``, or ``None`` for no checkpointing."""
    check_remat(remat)
    if remat is None or remat is False or remat == 0:
        return None
    if remat is True:
        return math.isqrt(n_steps - 1) + 1  # ceil(sqrt(n_steps))
    return min(int(remat), n_steps)


def split_segments(xs: Any, n_segments: int, k: int) -> tuple[Any, Any]:
    """Leading axis ``n`` of every leaf -> ``(n_segments, k, ...)`` and the remaining tail."""
    body = jax.tree.map(lambda a: a[: n_segments * k].reshape((n_segments, k) + a.shape[1:]), xs)
    tail = jax.tree.map(lambda a: a[n_segments * k :], xs)
    return body, tail


def segmented_scan(f: Callable, init: Any, xs: Any, length: int, segment: int | None) -> Any:
    """``lax.scan(f, init, xs, length)[0]`` with each segment of ``segment`` steps rematerialised.

    Only the final carry is returned (the per-step outputs of a checkpointed
    loop are what it avoids storing). ``xs`` is a pytree with leading axis
    ``length`` (or ``None``).
    """
    if segment is None or segment >= length:
        return lax.scan(f, init, xs, length=length)[0]
    n_segments, rest = divmod(length, segment)

    def run(carry, seg_xs, n):
        return lax.scan(f, carry, seg_xs, length=n)[0]

    run_segment = jax.checkpoint(lambda carry, seg_xs: run(carry, seg_xs, segment))
    if xs is None:
        carry = lax.scan(lambda c, _: (run_segment(c, None), None), init, None, length=n_segments)[0]
        return run(carry, None, rest) if rest else carry
    body, tail = split_segments(xs, n_segments, segment)
    carry = lax.scan(lambda c, seg_xs: (run_segment(c, seg_xs), None), init, body)[0]
    if rest:
        carry = jax.checkpoint(lambda c, t: run(c, t, rest))(carry, tail)
    return carry
