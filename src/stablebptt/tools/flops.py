"""FLOPs of a JAX program as XLA counts them, with every ``lax.scan`` body counted once per iteration.

XLA's cost analysis counts the body of a ``while`` loop (every
``lax.scan``) once, not once per iteration, so for an epoch (a scan over
updates, each with scans over the horizon) it misses nearly all the work.
:func:`program_flops` therefore walks the program's jaxpr, has XLA's cost
analysis count the code outside the scans and each scan body separately
(compiled for the CPU), and multiplies each body by its trip count,
recursively; tests check this against hand-counted matrix products. As in
XLA, a matrix product counts ``2mnk``, other arithmetic one FLOP per element,
and transcendental functions and library calls (the LAPACK tridiagonal solve
of the quantum task) nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal

from ..engine.flows import AbstractFlow
from ..engine.problem import ControlProblem
from ..training import make_epoch_functions, split_batches
from ..engine.updates import trainable

__all__ = ["program_flops", "epoch_flops"]

_LOOPS_WITH_UNKNOWN_TRIPS = ("while", "cond")


def _xla_flops(compiled: Any) -> float:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older JAX: one dict per computation
        return float(sum(a.get("flops", 0.0) for a in analysis))
    return float(analysis.get("flops", 0.0))


def _open(j: ClosedJaxpr | Jaxpr) -> tuple[Jaxpr, Sequence[Any]]:
    return (j.jaxpr, j.consts) if isinstance(j, ClosedJaxpr) else (j, ())


def _inlined(eqn: Any) -> ClosedJaxpr | Jaxpr | None:
    """The body of a call-like equation (nested jit, custom_jvp/vjp, checkpoint), to be walked in place."""
    if eqn.primitive.name == "scan" or eqn.primitive.name in _LOOPS_WITH_UNKNOWN_TRIPS:
        return None
    subs = [p for p in eqn.params.values() if isinstance(p, (ClosedJaxpr, Jaxpr))]
    if len(subs) != 1:
        return None
    inner, _ = _open(subs[0])
    if len(inner.invars) != len(eqn.invars) or len(inner.outvars) != len(eqn.outvars):
        return None
    return subs[0]


def _scans(jaxpr: Jaxpr) -> list[Any]:
    """The scan equations of ``jaxpr`` outside other scans, in the order :func:`_interpret` meets them."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            found.append(eqn)
        elif (inner := _inlined(eqn)) is not None:
            found.extend(_scans(_open(inner)[0]))
    return found


def _interpret(
    jaxpr: Jaxpr,
    consts: Sequence[Any],
    args: Sequence[Any],
    results: Iterator[list],
    kept: list,
) -> list:
    """Evaluate ``jaxpr`` with every scan replaced by the next of ``results``; the scans' inputs go to ``kept``."""
    env: dict = {}

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        if eqn.primitive.name == "scan":
            kept.extend(ins)  # keeps the code that feeds the scan alive
            outs = next(results)
        elif (inner := _inlined(eqn)) is not None:
            outs = _interpret(*_open(inner), ins, results, kept)
        else:
            bind = eqn.primitive.get_bind_params(eqn.params)
            # older JAX returns (subfuns, params)
            subfuns, params = bind if isinstance(bind, tuple) else ((), bind)
            outs = eqn.primitive.bind(*subfuns, *ins, **params)
            outs = outs if eqn.primitive.multiple_results else [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def _spec(aval: Any) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(
        aval.shape, aval.dtype, weak_type=getattr(aval, "weak_type", False)
    )


def _closed_flops(closed: ClosedJaxpr) -> float:
    jaxpr, consts = _open(closed)
    scans = _scans(jaxpr)

    def outside(args, results):
        kept: list = []
        return _interpret(jaxpr, consts, args, iter(results), kept), kept

    args = [_spec(v.aval) for v in jaxpr.invars]
    results = [[_spec(v.aval) for v in eqn.outvars] for eqn in scans]
    flops = _xla_flops(jax.jit(outside).lower(args, results).compile())
    for eqn in scans:
        flops += eqn.params["length"] * _closed_flops(eqn.params["jaxpr"])
    return flops


def program_flops(fn: Callable, *args: Any) -> float:
    """FLOPs of one call ``fn(*args)`` as XLA counts them, with every ``lax.scan`` body counted per iteration.

    Args:
        fn: a JAX-traceable function (not necessarily jitted).
        args: example arguments (arrays or ``jax.ShapeDtypeStruct``).

    Returns:
        Floating-point operations of one call [FLOP]. ``while`` loops of
        unknown trip count and ``cond`` branches count once. The pieces are
        compiled for the CPU, whatever the default device, so that the count
        is the same on every machine.
    """
    closed = jax.make_jaxpr(fn)(*args)
    with jax.default_device(jax.devices("cpu")[0]):
        return _closed_flops(closed)


def epoch_flops(
    policy: Any,
    problem: ControlProblem,
    train_x: Any,
    *,
    flow: AbstractFlow,
    optimizer: Any,
    batch_size: int = 8,
) -> float:
    """FLOPs of one training epoch (:func:`stablebptt.training.make_epoch_functions`) [FLOP]."""
    fns = make_epoch_functions(policy, problem, flow, optimizer)
    params, _ = trainable(policy)
    return program_flops(
        fns.train_epoch,
        params,
        optimizer.init(params),
        split_batches(train_x, batch_size),
    )
