"""ruff lint and format are part of the test suite."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT


def test_ruff_check():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format():
    cmd = [sys.executable, "-m", "ruff", "format", "--check", "."]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
