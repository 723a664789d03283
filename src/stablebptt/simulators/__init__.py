"""Adapters that turn other JAX simulators into ``step(x, c)`` functions and control problems.

Each needs its optional extra: :mod:`~stablebptt.simulators.ode` wraps a
``diffrax`` solver (``pip install '.[diffrax]'``),
:mod:`~stablebptt.simulators.brax` a Brax environment
(``pip install '.[brax]'``). Import the submodule you need.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the ``pip install`` that fixes it."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``pip install '.[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"{module} is not installed ({err}); install the extra from the stablebptt checkout: pip install '.[{extra}]'"
        ) from None
