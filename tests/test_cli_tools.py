"""The CLI's operator commands: init, validate, bench, and a --help for every command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from openenv_ws.tools.cli import build_parser

from .conftest import ROOT

COMMANDS = ["serve", "envs", "build", "gc", "replay", "sessions", "validate", "init", "bench"]


def run(*args: str, cwd=ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def openenv_ws(*args: str, **kw) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "openenv_ws", *args, **kw)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: openenv-ws {command}")
    description = text.split("\n\n")[1]
    assert len(description) > 30, f"{command} --help has no description: {text}"


def test_the_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    assert all(f"    {command}" in text for command in COMMANDS)


def test_init_scaffolds_a_package_whose_own_test_passes(tmp_path):
    result = openenv_ws("init", "dice-game", "--dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    package = tmp_path / "dice_game"
    names = sorted(p.name for p in package.iterdir())
    assert names == ["Dockerfile", "README.md", "__init__.py", "environment.py", "models.py", "test_dice_game.py"]
    assert "class DiceGameEnvironment(Environment)" in (package / "environment.py").read_text()
    assert "dice_game.environment:DiceGameEnvironment --with-path dice_game" in (package / "Dockerfile").read_text()
    # Its own tests (a played game, then validate's checks through a real server), in a fresh process.
    tests = run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "dice_game", cwd=tmp_path)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout
    # Lint-clean as generated.
    ruff = [sys.executable, "-m", "ruff", "check", "--isolated", "--line-length", "120", "--select", "E,F,W,I,B,UP"]
    lint = run(*ruff, "dice_game", cwd=tmp_path)  # from its own directory: openenv_ws is a third-party import
    assert lint.returncode == 0, lint.stdout
    again = openenv_ws("init", "dice-game", "--dir", str(tmp_path))
    assert again.returncode == 2 and "not empty" in again.stderr
    bad = openenv_ws("init", "9lives", "--dir", str(tmp_path))
    assert bad.returncode == 2 and "starting with a letter" in bad.stderr


def test_validate_passes_a_conforming_env():
    result = openenv_ws("validate", "echo")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for check in ("schemas", "no step before reset", "reset", "step", "state", "bad action", "determinism"):
        assert any(line.strip().startswith(f"PASS  {check} ") for line in lines), result.stdout
    assert "ignoring state.episode_id" in result.stdout and lines[-1] == "all 7 checks passed"


def test_validate_checks_the_tools_of_an_env_of_tool_calls():
    result = openenv_ws("validate", "tests.helper_envs:NotesEnv")
    assert result.returncode == 0, result.stdout + result.stderr
    assert '3 steps with {"tool":"write","arguments":{"key":"a","text":"a"}}' in result.stdout
    assert "PASS  tools                  write, read, finish; an unknown tool is refused at $.tool" in result.stdout


def test_validate_finds_undeclared_nondeterminism(start_server):
    result = openenv_ws("validate", "tests.tooling_envs:CoinEnv")
    assert result.returncode == 1
    assert "FAIL  determinism" in result.stdout and "observation.nonce" in result.stdout
    assert "1 of 7 checks failed" in result.stdout
    # On a running server (--url), with the field ignored, and a valid action of our choosing.
    server = start_server("tests.tooling_envs:CoinEnv", "--sandbox", "subprocess")
    result = openenv_ws(
        "validate", "--url", server.url, "--ignore", "observation.nonce", "--action", '{"call": "tails"}'
    )
    assert result.returncode == 0, result.stdout
    assert 'with {"call":"tails"}' in result.stdout
    unknown = openenv_ws("validate", "nope", "--url", server.url)
    assert unknown.returncode == 1 and "does not serve 'nope'" in unknown.stdout


def test_bench_runs_from_the_cli_and_the_script():
    result = openenv_ws("bench", "--single-steps", "100", "--grid", "4", "--steps", "3", "--deadline", "30")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "single: {'steps': 100" in result.stdout and "| 4 x 3 |" in result.stdout
    script = run(sys.executable, "scripts/bench.py", "--help")
    assert script.returncode == 0 and "--single-steps" in script.stdout and "--multiplex" in script.stdout
