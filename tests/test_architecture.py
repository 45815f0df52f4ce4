"""The import rule, enforced: the engine never imports kernels or triton, the references import
only NumPy, and the kernels never import the engine.

    gradcheck/  -> torch, numpy, hypothesis, rich, the standard library (pytest in the plugin and
                   the test helpers; the spec files also read reference/, the NumPy oracle)
    reference/  -> numpy and the standard library
    kernels/    -> anything but gradcheck

Only the binding of our implementations to op names (entry points in pyproject.toml), tests,
scripts and benchmarks import both sides.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STDLIB = set(sys.stdlib_module_names) | {"__future__"}

ENGINE_ALLOWED = STDLIB | {"torch", "numpy", "hypothesis", "rich", "gradcheck"}
#: Extra roots some engine modules may import, and why.
ENGINE_EXTRA = {
    "gradcheck/plugin.py": {"pytest"},  # a pytest plugin
    "gradcheck/testing.py": {"pytest"},  # builds pytest tests
}
SPECS_EXTRA = {"reference"}  # the catalog's NumPy float64 oracle (itself numpy-only)
REFERENCE_ALLOWED = STDLIB | {"numpy", "reference"}


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imported_roots(path: Path) -> dict[str, int]:
    """Top-level module names imported anywhere in ``path`` (inside functions too), including
    ``importlib.import_module("literal")`` and ``__import__("literal")``, with a line number."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        for name in names:
            found.setdefault(name.split(".")[0], node.lineno)
    return found


def _violations(package: str, allowed_for) -> list[str]:
    bad = []
    for path in _files(package):
        rel = path.relative_to(ROOT).as_posix()
        allowed = allowed_for(rel)
        for root, line in _imported_roots(path).items():
            if root not in allowed:
                bad.append(f"{rel}:{line} imports {root}")
    return bad


def test_the_engine_imports_no_kernels_and_no_triton():
    def allowed(rel: str) -> set[str]:
        extra = ENGINE_EXTRA.get(rel, set()) | (SPECS_EXTRA if rel.startswith("gradcheck/specs/") else set())
        return ENGINE_ALLOWED | extra

    assert _violations("gradcheck", allowed) == []


def test_the_references_import_only_numpy():
    assert _violations("reference", lambda rel: REFERENCE_ALLOWED) == []


def test_the_kernels_never_import_the_engine():
    bad = [v for v in _violations("kernels", lambda rel: {"__all_but_gradcheck__"}) if v.endswith(" imports gradcheck")]
    assert bad == []


def test_the_rule_checker_sees_imports(tmp_path):
    """The checker itself: an import inside a function and a dynamic import are both seen."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\n\ndef f():\n    from kernels import _runtime\n    importlib.import_module('triton')\n"
    )
    assert set(_imported_roots(sample)) == {"os", "kernels", "triton"}


def test_importing_gradcheck_leaves_the_environment_alone():
    """``import gradcheck`` (and its catalog) imports no kernels and no triton and sets no variable."""
    code = (
        "import os, sys; before = dict(os.environ); import gradcheck; gradcheck.catalog();"
        "assert 'triton' not in sys.modules, 'triton'; assert 'kernels' not in sys.modules, 'kernels';"
        "assert 'TRITON_INTERPRET' not in os.environ; assert dict(os.environ) == before; print('ok')"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "GRADCHECK_INTERPRET")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.parametrize("module", ["reference.softmax", "reference.cross_entropy", "reference.conv"])
def test_a_reference_runs_without_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
