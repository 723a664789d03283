"""A ``diffrax`` ODE solve as the simulator step: the control is held over one interval.

``step = ode_step(f, dt)`` returns ``step(x, c)``: the solution at ``t = dt`` of
``dx/dt = f(t, x, c)`` from ``x`` with ``c`` constant (a zero-order hold, as a
digital controller acts). Any ``diffrax`` solver works; gradients flow through
the solver's own differentiation (``adjoint=``, by default
``diffrax.RecursiveCheckpointAdjoint``), so every flow of stablebptt applies.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from . import require

__all__ = ["ode_step"]


def ode_step(
    vector_field: Callable[[Any, Any, Any], Any],
    dt: float,
    *,
    solver: Any = None,
    dt0: float | None = None,
    stepsize_controller: Any = None,
    adjoint: Any = None,
    max_steps: int | None = 4096,
) -> Callable[[Any, Any], Any]:
    """A simulator step that integrates ``dx/dt = vector_field(t, x, c)`` over ``[0, dt]``.

    Args:
        vector_field: ``f(t, x, c)`` with ``x`` the state as you store it (a batch
            is fine) and ``c`` the control; returns ``dx/dt`` shaped like ``x``.
        dt: length of one control interval (the time between controller calls).
        solver: a ``diffrax`` solver (default ``diffrax.Tsit5()``).
        dt0: the solver's first step (default ``dt``: one solver step per interval
            with a fixed-step solver).
        stepsize_controller: e.g. ``diffrax.PIDController(rtol=1e-6, atol=1e-6)``
            (default: constant steps of ``dt0``).
        adjoint: how ``diffrax`` differentiates the solve (default its own).
        max_steps: the solver's step budget per interval.

    Returns:
        ``step(x, c) -> x`` after ``dt``, for :class:`stablebptt.ControlProblem`.
    """
    diffrax = require("diffrax", "diffrax")
    if not dt > 0:
        raise ValueError(f"dt={dt!r}; a control interval must be positive")
    solver = diffrax.Tsit5() if solver is None else solver
    stepsize_controller = diffrax.ConstantStepSize() if stepsize_controller is None else stepsize_controller
    options = {} if adjoint is None else {"adjoint": adjoint}
    term = diffrax.ODETerm(vector_field)

    def step(x: Any, c: Any) -> Any:
        solution = diffrax.diffeqsolve(
            term, solver, t0=0.0, t1=dt, dt0=dt if dt0 is None else dt0, y0=x, args=c,
            stepsize_controller=stepsize_controller, saveat=diffrax.SaveAt(t1=True), max_steps=max_steps, **options,
        )  # fmt: skip
        return jax.tree.map(lambda a: a[-1], solution.ys)  # the one saved time, t = dt

    return step
