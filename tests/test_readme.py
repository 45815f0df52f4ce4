"""The README's worked example runs as written, and its commands name things that exist."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_a_worked_example():
    assert any("gc.verify(" in block for block in _python_blocks())


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_python_block_runs(index, capsys):
    block = _python_blocks()[index]
    exec(compile(block, f"README.md python block {index}", "exec"), {"__name__": "readme_example"})
    if "print(report)" in block:
        assert "passed" in capsys.readouterr().out


def test_readme_commands_exist():
    text = README.read_text()
    root = README.parent
    assert "bash scripts/setup.sh && .venv/bin/python -m pytest -n auto" in text
    assert (root / "scripts" / "setup.sh").exists()
    assert ".venv/bin/python -m pytest -n auto" in (root / ".ci" / "run").read_text()
