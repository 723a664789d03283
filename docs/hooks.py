"""mkdocs hook: the public API page's table, generated from ``src/stablebptt/__init__.pyi`` (the one list of public names)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from pathlib import Path

MARKER = "<!-- public-api -->"
STUB = Path(__file__).resolve().parents[1] / "src" / "stablebptt" / "__init__.pyi"


def public_names() -> list[tuple[str, str]]:
    """``(name, module)`` of every name ``__init__.pyi`` imports, in its order (subpackages included)."""
    names = []
    for node in ast.parse(STUB.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names += [(a.asname or a.name, node.module or "") for a in node.names]
    return names


def _summary(obj) -> str:
    spec = importlib.util.spec_from_file_location("griffe_roles", Path(__file__).with_name("griffe_roles.py"))
    roles = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(roles)
    doc = roles.plain(inspect.getdoc(obj) or "")
    first = doc.strip().split("\n\n")[0].replace("\n", " ")
    return first.replace("|", "\\|")


def public_api_table() -> str:
    import stablebptt

    rows = ["| name | what it is |", "|---|---|"]
    subpackages = []
    for name, module in public_names():
        obj = getattr(stablebptt, name)
        if inspect.ismodule(obj):
            subpackages.append(name)
            continue
        target = f"{obj.__module__}.{obj.__qualname__}"
        alias = "" if obj.__name__ == name else f" (`{obj.__name__}`)"
        rows.append(f"| [`{name}`][{target}]{alias} | {_summary(obj)} |")
    intro = "Subpackages: " + ", ".join(f"`stablebptt.{s}`" for s in subpackages) + "."
    return "\n".join(rows) + "\n\n" + intro + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        importlib.invalidate_caches()
        return markdown.replace(MARKER, public_api_table())
    return markdown
