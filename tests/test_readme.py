"""The README's library example runs as printed and learns; the README's test command is what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_library_example_learns(capsys):
    block = re.search(r"<!-- example:start -->\s*```python\n(.*?)```\s*<!-- example:end -->", readme(), re.S)
    assert block, "README lost its example markers"
    code = block.group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 12
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.history[-1]["test_loss"] < result.initial["test_loss"] / 1000
    printed = capsys.readouterr().out
    assert "->" in printed
    # the per-sample Equinox controller, run after the first block as the README shows it
    block = re.search(r"<!-- example-mlp:start -->\s*```python\n(.*?)```\s*<!-- example-mlp:end -->", readme(), re.S)
    assert block, "README lost its per-sample example markers"
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    mlp = namespace["result"]
    assert type(mlp.policy.module).__name__ == "MLP"
    assert mlp.history[-1]["test_loss"] < mlp.initial["test_loss"] / 100


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", readme())
    test_command = [c for c in commands if "pytest" in c]
    assert len(test_command) == 1
    assert test_command[0] in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
