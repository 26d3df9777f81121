"""Replay every recorded episode in tests/replays/ against fresh sessions (CI runs it: tests/test_replays.py).

    python scripts/replay_episodes.py                   # exit 0 when every answer matches the recording
    python scripts/replay_episodes.py --sandbox subprocess
    python scripts/replay_episodes.py --record          # re-record them all from the scripts below
    python scripts/replay_episodes.py --record shell    # re-record one environment's

A recording is re-made (``--record``) when an environment changes its answers on purpose:
the scripted episodes below are played through a server run with ``--record``, and the
recording of each replaces ``tests/replays/<env>.jsonl``. Review the diff before committing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

from openenv_ws import connect
from openenv_ws.errors import OpenEnvWSError
from openenv_ws.server.local import local_config, local_server
from openenv_ws.tools.replay import replay_files

ROOT = Path(__file__).resolve().parent.parent
REPLAYS = ROOT / "tests" / "replays"

Script = list[tuple[str, Any]]
"""("reset", (seed, options)), ("step", action), ("state", None): played in order."""

EPISODES: dict[str, tuple[dict[str, Any], Script]] = {
    # env: (session options, requests). Bad actions are part of the script: their errors are recorded too.
    "echo": (
        {"max_steps": 4},
        [
            ("reset", (1, None)),
            ("step", {"message": "hello"}),
            ("step", {"message": "streamed word by word", "stream": True}),
            ("step", {"message": 3}),
            ("state", None),
            ("step", {"message": "x"}),
            ("step", {"message": "the fourth step truncates"}),
        ],
    ),
    "textgames": (
        {"game": "number"},
        [
            ("reset", (7, None)),
            ("step", {"move": "50"}),
            ("step", {"move": "not a number"}),
            ("step", {"move": "25"}),
            ("state", None),
            ("reset", (3, {"game": "tictactoe"})),
            ("step", {"move": "b2"}),
            ("step", {"move": "b2"}),
            ("step", {"move": "a1"}),
            ("step", {"tool": "play", "arguments": {"move": "c3"}}),  # the same move, as a tool call
            ("step", {"tool": "play", "arguments": {"square": "c1"}}),
        ],
    ),
    "coding": (
        {"task": "fizzbuzz"},
        [
            ("reset", (0, None)),
            ("step", {"code": "x = 6 * 7\nprint(x)"}),
            ("step", {"code": "x / 0"}),
            ("step", {"code": "import random\nrandom.random()"}),
            (
                "step",
                {
                    "code": "def fizzbuzz(n):\n"
                    "    return 'FizzBuzz' if n % 15 == 0 else 'Fizz' if n % 3 == 0 else 'Buzz' if n % 5 == 0 else n"
                },
            ),
            ("step", {"tool": "run_python", "arguments": {"code": "print(fizzbuzz(15))"}}),
            ("step", {"tool": "run_python", "arguments": {"source": "1"}}),
            ("state", None),
            (
                "step",
                {"tool": "submit", "arguments": {"code": "fizzbuzz = lambda n: [str(i) for i in range(1, n + 1)]"}},
            ),
        ],
    ),
    "shell": (
        {},
        [
            ("reset", (0, None)),
            ("step", {"command": "echo hello; printf 'a\\nb\\nc\\n' > lines.txt"}),
            ("step", {"command": "wc -l < lines.txt"}),
            ("step", {"command": "cat missing.txt"}),
            ("step", {"command": "mkdir -p sub && cd sub && ls ..; export X=1"}),
            ("step", {"command": "echo $X"}),
            ("step", {"tool": "write_file", "arguments": {"path": "notes/a.txt", "content": "one\ntwo\n"}}),
            ("step", {"tool": "read_file", "arguments": {"path": "notes/a.txt"}}),
            ("step", {"tool": "read_file", "arguments": {"path": "missing.txt"}}),
            ("step", {"tool": "run", "arguments": {"command": "cat notes/a.txt | wc -l"}}),
            ("step", {"tool": "run", "arguments": {"command": 7}}),
            ("state", None),
        ],
    ),
    "web": (
        {"task": "login-user"},
        [
            ("reset", (1, None)),  # MiniWoB++ login-user: "vina" / "US" into [3] and [5], then [6] Login
            ("step", {"action": "click", "id": 999}),
            ("step", {"action": "press", "key": "Ctrl+c"}),
            ("step", {"action": "type", "id": 3, "text": "vina"}),
            ("step", {"action": "type", "id": 5, "text": "US"}),
            ("state", None),
            ("step", {"action": "click", "id": 6}),
            ("reset", (0, {"task": "shop-cheapest-mug"})),
            ("step", {"action": "goto", "path": "/search?q=mug"}),
            ("step", {"action": "click", "id": 31}),  # Small Red Mug
            ("step", {"action": "type", "id": 68, "text": "2"}),  # its quantity
            ("step", {"action": "click", "id": 69}),  # Add to cart
            ("step", {"action": "back"}),
            ("state", None),
            ("step", {"tool": "goto", "arguments": {"path": "/cart"}}),  # the same actions, as tool calls
            ("step", {"tool": "click", "arguments": {"id": 999}}),  # an unknown id: an error result
            ("step", {"tool": "press", "arguments": {"key": "Ctrl+c"}}),  # refused: $.arguments.key
            ("step", {"tool": "back", "arguments": {}}),
        ],
    ),
    "gym": (
        {"env_id": "CartPole-v1"},
        [
            ("reset", (42, None)),
            *[("step", {"action": a}) for a in (0, 1, 1, 0, 1, 0, 0, 1)],
            ("step", {"action": 7}),
            ("state", None),
        ],
    ),
}


async def play(url: str, env: str, options: dict[str, Any], script: Script) -> None:
    async with connect(url, env, options=options) as session:
        for kind, argument in script:
            try:
                if kind == "reset":
                    await session.reset(*argument)
                elif kind == "step":
                    await session.step(argument)
                else:
                    await session.state()
            except OpenEnvWSError as exc:
                if exc.fatal:
                    raise
                # recorded as the answer; the episode goes on


async def record(envs: list[str], sandbox: str) -> list[str]:
    """Play the scripts with a recording server; returns the envs that could not be recorded."""
    failed = []
    with tempfile.TemporaryDirectory(prefix="openenv-ws-record-") as tmp:
        for env in envs:
            options, script = EPISODES[env]
            directory = Path(tmp) / env
            try:
                async with local_server([env], backend=sandbox, config=local_config(record_dir=str(directory))) as url:
                    await play(url, env, options, script)
            except Exception as exc:  # an env that does not work (yet) is reported, not fatal
                print(f"could not record {env}: {type(exc).__name__}: {exc}", file=sys.stderr)
                failed.append(env)
                continue
            files = sorted(directory.glob("*.jsonl"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
            target = REPLAYS / f"{env}.jsonl"
            REPLAYS.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:  # the session's episodes, in order, in one file
                for path in files:
                    with path.open("rb") as src:
                        shutil.copyfileobj(src, out)
            print(f"recorded {target.relative_to(ROOT)}: {len(files)} episode(s)")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--record", nargs="*", metavar="ENV", help="re-record (all, or these envs) instead of replaying"
    )
    parser.add_argument("--sandbox", default="inprocess", choices=["inprocess", "subprocess"])
    parser.add_argument("files", nargs="*", type=Path, help="replay these (default: tests/replays/*.jsonl)")
    args = parser.parse_args(argv)
    if args.record is not None:
        unknown = sorted(set(args.record) - set(EPISODES))
        if unknown:
            parser.error(f"no scripted episode for {', '.join(unknown)} (known: {', '.join(EPISODES)})")
        failed = anyio.run(record, args.record or list(EPISODES), args.sandbox)
        return 1 if failed else 0
    files = args.files or sorted(REPLAYS.glob("*.jsonl"))
    if not files:
        print(f"no recordings in {REPLAYS}", file=sys.stderr)
        return 2
    return anyio.run(lambda: replay_files(files, sandbox=args.sandbox, keep_going=True))


if __name__ == "__main__":
    sys.exit(main())
