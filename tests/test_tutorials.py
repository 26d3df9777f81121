"""The tutorials (docs/tutorials/) run as written, against real servers, and show their real output.

Each one is run by scripts/run_tutorials.py in a fresh directory, as a reader would follow it: its
commands, its files, its servers; a command's output must match the output the tutorial shows.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT

TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("[0-9][0-9]-*.md"))


def test_there_is_a_series():
    names = [path.name for path in TUTORIALS]
    assert names == [
        "01-first-episodes.md",
        "02-train-style.md",
        "03-build-an-environment.md",
        "04-from-openenv.md",
    ]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("tutorial", TUTORIALS, ids=[path.stem for path in TUTORIALS])
def test_the_tutorial_runs_as_written(tutorial):
    cmd = [sys.executable, "scripts/run_tutorials.py", str(tutorial.relative_to(ROOT))]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=880)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"ok   docs/tutorials/{tutorial.name}")


def test_a_tutorial_whose_output_changed_fails(tmp_path):
    """The check can fail: a tutorial that shows other output than its command prints."""
    stale = tmp_path / "stale.md"
    stale.write_text("```bash\necho 'real output'\n```\n\n```text\nwhat the tutorial claims\n```\n")
    result = subprocess.run(
        [sys.executable, "scripts/run_tutorials.py", str(stale)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "the output differs from the tutorial's" in result.stderr and "real output" in result.stderr
