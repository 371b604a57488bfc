"""The house rules that tooling does not check by itself (ruff and import-linter run in CI)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

MAX_FUNCTION_LINES = 100


def project_files() -> list[Path]:
    return [p for p in ROOT.rglob("*.py") if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]


def test_no_function_is_over_100_lines():
    long = []
    for path in project_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


@pytest.mark.slow
def test_the_commands_work_from_any_folder(tmp_path):
    """`pip install -e .` (done by scripts/setup.sh) makes the packages and commands importable anywhere."""
    for module, prog in (
        ("separation", "python -m separation"),
        ("eval", "python -m eval"),
        ("training", "python -m training"),
    ):
        res = subprocess.run([sys.executable, "-m", module, "--version"], cwd=tmp_path, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == f"{prog} 0.1.0"
    res = subprocess.run([sys.executable, "-m", "training", "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert "python -m training export RUN DEST" in res.stdout and "python -m training push RUN" in res.stdout
    assert "(default: 1000)" in res.stdout  # defaults shown


@pytest.mark.slow
def test_importing_app_py_starts_nothing():
    """app.py is the Space's entry point: importing it (as tools and tests do) must not launch a server."""
    code = "import runpy, sys; sys.argv = ['x']; import importlib; importlib.import_module('app'); print('ok')"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
