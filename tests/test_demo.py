"""The README's main job (scripts/demo.py) runs end to end: server up, episodes, graceful stop."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT


def test_demo_runs_episodes_and_exits_0():
    cmd = [sys.executable, "scripts/demo.py", "--episodes", "2", "--steps", "3"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: all episodes completed" in result.stdout
    assert "server stopped gracefully (exit code 0)" in result.stdout
    assert result.stdout.count("-> truncated") == 2  # each episode ran to its max_steps
    # A clean run warns of nothing (the server's stop used to report its fork-server as dead).
    output = result.stdout + result.stderr
    assert [line for line in output.splitlines() if "WARNING" in line or "ERROR" in line] == [], output
