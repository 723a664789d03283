"""The package's shape: public names from one list, loaded on first use; the layers import only downward, with no circle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "stablebptt"

# Each folder (or top-level module) imports only from folders on a lower floor or its own.
FLOORS = ["atomic", "validate", "tables", "engine", "training", "simulators", "tasks", "plots", "runs", "sweeps", "paper", "tools", "cli"]


def test_public_names_come_from_one_list_and_jax_loads_on_first_use():
    code = (
        "import sys\n"
        "import stablebptt as sb\n"
        "assert 'jax' not in sys.modules, 'importing the package must not import JAX'\n"
        "assert callable(sb.rollout) and sb.rollout.__name__ == 'rollout', sb.rollout\n"
        "import stablebptt.engine.rollouts\n"
        "assert sb.rollout_loss.__module__ == 'stablebptt.engine.rollouts'\n"
        "import stablebptt.engine.updates\n"
        "assert sb.engine.updates.__name__ == 'stablebptt.engine.updates'\n"
        "assert sorted(dir(sb)) == sorted(sb.__all__), set(dir(sb)) ^ set(sb.__all__)\n"
        "assert not [n for n in dir(sb) if n.startswith('_') or n in {'Any', 'sys', 'types', 'importlib', 'lazy_loader'}]\n"
        "assert {'TrainState', 'trainable'} <= set(sb.__all__)\n"
        "assert all(getattr(sb, name) is not None for name in sb.__all__)\n"
        "try:\n"
        "    sb.no_such_name\n"
        "except AttributeError as err:\n"
        "    assert 'no_such_name' in str(err)\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _imports(path: Path) -> set[str]:
    """The ``stablebptt`` modules a file imports (absolute names), at any depth of the file."""
    me = _module(path).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if node.module is None:  # from . import a, b: submodules (or names of the package)
                found.update(f"{target}.{a.name}" if _is_module(f"{target}.{a.name}") else target for a in node.names)
            else:
                found.add(target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("stablebptt")}


def _floor(module: str) -> int | None:
    parts = module.split(".")
    return FLOORS.index(parts[1]) if len(parts) > 1 and parts[1] in FLOORS else None


def test_every_import_runs_down_and_there_is_no_circle():
    files = [p for p in PACKAGE.rglob("*.py")]
    graph = {_module(p): _imports(p) for p in files}
    up = []
    for module, targets in graph.items():
        here = _floor(module)
        for target in targets:
            there = _floor(target)
            if here is not None and there is not None and there > here:
                up.append(f"{module} -> {target}")
            if there is None and target != "stablebptt" and module != "stablebptt":
                up.append(f"{module} -> {target} (a module outside the floors)")
    assert not up, up
    assert set(FLOORS) == {_module(p).split(".")[1] for p in files if _module(p) != "stablebptt"}

    known = {m for m in graph}
    edges = {m: {t if t in known else t.rsplit(".", 1)[0] for t in targets} & known for m, targets in graph.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in edges[m]:
            if t == m or t == m.rsplit(".", 1)[0]:
                continue  # a module may use its own package's face
            assert state.get(t) != 1, f"circle: {' -> '.join(path + [t])}"
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
