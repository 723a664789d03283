"""A griffe extension for the API pages: the docstrings' Sphinx roles (``:func:`~a.b.name```) shown as code (``name``)."""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|obj|exc):`(~?)([^`]+)`")


def plain(text: str) -> str:
    """``:role:`~a.b.c``` → ```c```, ``:role:`a.b.c``` → ```a.b.c```."""
    return ROLE.sub(lambda m: f"`{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}`", text)


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain(obj.docstring.value)
