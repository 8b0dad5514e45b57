"""The code base stays ruff-clean (rules in pyproject.toml).

ruff is found through the Python running the tests (``python -m ruff``, as ``pip install -e ".[test]"``
puts it in the venv), so CI's ``.venv/bin/python -m pytest`` runs this test without ruff on PATH.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def ruff_command() -> list[str] | None:
    """``python -m ruff`` with this interpreter, else a ``ruff`` on PATH, else None."""
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    found = shutil.which("ruff")
    return [found] if found else None


def test_ruff_check_passes():
    ruff = ruff_command()
    if ruff is None:
        pytest.skip("ruff is not installed (bash scripts/setup.sh --test)")
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([*ruff, "check", "--no-cache", str(root)], capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stdout[-3000:]


def test_ruff_is_found_through_the_interpreter_without_path(monkeypatch):
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed in this interpreter (bash scripts/setup.sh --test)")
    monkeypatch.setenv("PATH", "")
    assert ruff_command() == [sys.executable, "-m", "ruff"]
