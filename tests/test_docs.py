"""The reference site: every guide's code runs as printed (its blocks in order, in one namespace), and the
site builds with ``mkdocs build --strict`` (no broken reference, no docstring the API pages cannot render)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GUIDES = sorted((DOCS / "guides").glob("*.md")) + [DOCS / "index.md"]

pytestmark = pytest.mark.long


def python_blocks(page: Path) -> list[str]:
    """The page's fenced ```python blocks, in order."""
    return re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M)


def run_page(page: Path) -> dict:
    """Execute a page's python blocks in order, in one namespace, from the repository root; returns the namespace."""
    namespace: dict = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for i, code in enumerate(python_blocks(page)):
            exec(compile(code, f"{page.relative_to(ROOT)} (block {i + 1})", "exec"), namespace)
    finally:
        os.chdir(cwd)
    return namespace


def test_every_guide_has_code_and_the_nav_lists_every_page():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in sorted(DOCS.rglob("*.md")):
        assert str(page.relative_to(DOCS)) in nav, f"{page} is not in mkdocs.yml's nav"
    for page in GUIDES:
        assert python_blocks(page), f"{page} has no python block"


def test_docstrings_refer_only_to_documents_in_the_repository():
    """A docstring's ``docs/PAGE.md, "Heading"`` names a page of the site and one of its headings; no unshipped spec."""
    found = 0
    for path in sorted((ROOT / "src").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"\bSPEC\b\s*§", text), f"{path} refers to a spec that is not in the repository"
        for page, heading in re.findall(r"docs/([\w/-]+\.md)(?:, \"([^\"]+)\")?", text):
            found += 1
            assert (DOCS / page).is_file(), f"{path} refers to docs/{page}, which does not exist"
            headings = re.findall(r"^#+ (.+)$", (DOCS / page).read_text(encoding="utf-8"), re.M)
            assert not heading or any(h.startswith(heading) for h in headings), f"{path}: docs/{page} has no heading {heading!r}"
    assert found >= 10


@pytest.mark.parametrize("page", GUIDES, ids=lambda p: p.stem)
def test_guide_code_runs(page, capsys):
    run_page(page)
    printed = capsys.readouterr().out
    # a block shown as "which prints" is what the code before it printed, verbatim
    for shown in re.findall(r"^which prints\n\n```\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M):
        assert shown in printed, f"{page.name} shows output its code does not print:\n{shown}"


def test_mkdocs_builds_strictly(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-3000:]
    # every public name has a row in the generated API table, linked to its documentation
    table = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    sys.path.insert(0, str(DOCS))
    try:
        from hooks import public_names
    finally:
        sys.path.remove(str(DOCS))
    import stablebptt

    names = [n for n, _ in public_names() if not isinstance(getattr(stablebptt, n), type(stablebptt))]
    assert len(names) > 40
    for name in names:
        assert re.search(rf'<a[^>]*href="[^"]*#stablebptt\.[\w.]+"[^>]*>\s*<code>{name}</code>', table), name
