"""One-line checks of settings, shared by every settings class and the command line.

Each check returns the value it was given or raises a ``ValueError`` whose one
line names the setting, the value and what is expected::

    epochs=0; expected a positive integer
    unknown clip mode 'max'; choose one of none, value, norm

With ``name=None`` the message leaves the name out (``0 must be a positive
integer``), for argparse, which names the option itself
(``argument --epochs: 0 must be a positive integer``). Pure Python: nothing
here imports JAX.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["INT64_MAX", "integer", "positive_int", "number", "choice", "names", "distinct", "known_settings", "differences"]

INT64_MAX = 2**63 - 1
"""The largest integer a setting may hold: every count and seed ends up in a 64-bit integer (NumPy, XLA)."""


def _show(value: Any) -> str:
    """``repr(value)``, or ``<a 3322-bit integer>`` for an integer too long to print usefully (or at all)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**40:
        return f"<a {value.bit_length()}-bit integer>"
    return repr(value)


def _fail(name: str | None, value: Any, expected: str) -> None:
    raise ValueError(f"{_show(value)} must be {expected}" if name is None else f"{name}={_show(value)}; expected {expected}")


def _int_range(low: int | None, high: int | None) -> str:
    if high is None:
        return {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(low, f"an integer >= {low}")
    return f"an integer <= {high}" if low is None else f"an integer {low}..{high}"


def integer(name: str | None, value: Any, *, low: int | None = None, high: int | None = None, expected: str | None = None) -> int:
    """``value`` if it is an ``int`` (a bool is not) within ``low..high``; ``expected`` words the range in the message.

    Beyond 64 bits (``|value| > 2**63 - 1``) an integer is refused whatever the range.
    """
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low) or (high is not None and value > high):
        _fail(name, value, expected or _int_range(low, high))
    if abs(value) > INT64_MAX:
        _fail(name, value, f"{expected or _int_range(low, high)} that fits in 64 bits (|x| < 2**63)")
    return value


def positive_int(name: str | None, value: Any, *, expected: str | None = None) -> int:
    """``value`` if it is an integer ``>= 1``."""
    return integer(name, value, low=1, expected=expected)


_FLOAT_MAX = 1.7976931348623157e308  # sys.float_info.max; an int beyond it (or inf, nan) is not a finite float


def number(name: str | None, value: Any, *, positive: bool = False, low: float | None = None, expected: str | None = None) -> float:
    """``value`` if it is a finite real number (a bool is not), ``> 0`` if ``positive``, ``>= low`` if given."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= _FLOAT_MAX
    if not ok or (positive and value <= 0) or (low is not None and value < low):
        default = "a positive finite number" if positive else ("a finite number" if low is None else f"a finite number >= {low:g}")
        _fail(name, value, expected or default)
    return value


def choice(what: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices`` (a registry's names), else ``unknown WHAT 'x'; choose one of a, b``."""
    choices = tuple(choices)
    try:
        known = value in choices
    except TypeError:  # an unhashable value from a JSON file, compared with a mapping's keys
        known = False
    if not known:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(map(str, choices))}")
    return value


def names(text: str | Iterable[Any], what: str, choices: Iterable[str], *, upper: bool = False) -> list[str]:
    """``"R,M"`` (or a list) to ``["R", "M"]``, in order, each checked by :func:`choice`; ``upper``: case-insensitive
    names written in capitals (methods). An empty list is refused."""
    choices = tuple(choices)
    items = text.split(",") if isinstance(text, str) else list(text)
    found = [str(item).strip() for item in items if str(item).strip()]
    found = [n.upper() for n in found] if upper else found
    if not found:
        raise ValueError(f"no {what} given; choose one or more of {', '.join(choices)}")
    return [choice(what, n, choices) for n in found]


def distinct(name: str, values: Iterable[Any]) -> list[Any]:
    """``values`` as a list if no value comes twice, else ``NAME [a, a] names one value twice``."""
    values = list(values)
    if len(set(values)) != len(values):
        raise ValueError(f"{name} {values} names one value twice")
    return values


def known_settings(what: str, data: Mapping[str, Any], known: Iterable[str]) -> None:
    """Refuse a key of ``data`` (settings read from a file) that is not in ``known``: ``WHAT has unknown setting 'x'``."""
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{what} has unknown setting {unknown[0]!r}")


def _flat(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"base": {"epochs": 2}}`` → ``{"base.epochs": 2}``, so that a difference names the setting itself."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(old: Mapping[str, Any], new: Mapping[str, Any], *, ignore: Iterable[str] = ()) -> list[str]:
    """Where two sets of settings differ, sorted: ``["epochs (2 vs 3)", "task_options.n_poles (1 vs 2)"]``.

    Nested settings are named with dots; a setting one side lacks shows as None;
    the top-level keys in ``ignore`` are left out.
    """
    ignore = set(ignore)
    a, b = (_flat({k: v for k, v in d.items() if k not in ignore}) for d in (old, new))
    return [f"{k} ({a.get(k)!r} vs {b.get(k)!r})" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
