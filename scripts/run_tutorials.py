"""Run the tutorials in docs/tutorials/ as a reader would, and check that each shows its real output.

A tutorial is Markdown. Its ``bash`` blocks are run in order, in a fresh directory, with this
Python's ``openenv-ws`` and ``python`` first on PATH. A ``python`` (or any other) block preceded
by ``<!-- tutorial: file NAME -->`` is written to ``NAME`` there, as the reader saves it. A
``text`` block right after a ``bash`` block is that command's expected output (stdout and
stderr): the run fails when the real output differs. Other comments before a block:

- ``<!-- tutorial: background -->``: a server the reader leaves running; started in the
  background, waited for (until ``/healthz`` on its ``--port`` answers), stopped with SIGTERM
  when the tutorial ends;
- ``<!-- tutorial: skip -->``: shown, not run (an install command);
- ``<!-- tutorial: exit N -->``: the command is expected to exit N (default 0);
- ``<!-- tutorial: timeout S -->``: seconds the command may take (default 120).

Ports 8000-8009 in the text become free loopback ports when run, and back in the output.
Expected output may hold ``...`` (any text within a line; a line of only ``...``: any lines).
What always differs between runs is compared loosely on both sides: session ids, process ids,
loopback client ports, durations and container ids. Docker builds use the local base image
(``OPENENV_WS_BASE_IMAGE``, default ``openenv-ws/python-base:3.11``, from scripts/setup_docker.sh).

    python scripts/run_tutorials.py docs/tutorials/*.md          # exit 0: every tutorial as written
    python scripts/run_tutorials.py --show docs/tutorials/01-first-episodes.md   # print what ran
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORT = re.compile(r"\b(800\d)\b")
DIRECTIVE = re.compile(r"<!--\s*tutorial:\s*(.*?)\s*-->")
FENCE = re.compile(r"^```([\w-]*)\s*$")
NO_GRADIO = ROOT / "scripts" / "tutorial_site"
"""On PYTHONPATH when tutorials run: keeps OpenEnv's optional Gradio UI from loading (seconds per import)."""
VOLATILE = [
    (re.compile(r"\bs-[0-9a-f]{16}\b"), "s-<id>"),
    (re.compile(r"\bpid:\d+\b"), "pid:<n>"),
    (re.compile(r"\b127\.0\.0\.1:\d{4,5}\b"), "127.0.0.1:<port>"),
    (re.compile(r"\b\d+(\.\d+)?\s?(ms|us|µs|s)\b"), "<time>"),
    (re.compile(r"\b[0-9a-f]{12}\b"), "<container>"),
]


class TutorialError(Exception):
    pass


@dataclass
class Block:
    lang: str
    text: str
    line: int
    directives: list[str] = field(default_factory=list)
    expected: str | None = None


def parse(markdown: str) -> list[Block]:
    """The fenced blocks, each with the directives just above it and, for commands, its output block."""
    blocks: list[Block] = []
    pending: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        found = DIRECTIVE.fullmatch(line.strip())
        if found:
            pending.append(found.group(1))
        elif (fence := FENCE.match(line)) is not None:
            start = i
            body: list[str] = []
            i += 1
            while i < len(lines) and lines[i].rstrip() != "```":
                body.append(lines[i])
                i += 1
            block = Block(fence.group(1), "\n".join(body) + "\n", start + 1, pending)
            pending = []
            previous = blocks[-1] if blocks else None
            if block.lang == "text" and previous is not None and previous.lang == "bash" and previous.expected is None:
                previous.expected = block.text
            else:
                blocks.append(block)
        elif line.strip():
            pending = []
        i += 1
    return blocks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def normalize(text: str) -> str:
    for pattern, replacement in VOLATILE:
        text = pattern.sub(replacement, text)
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def matches(expected: str, actual: str) -> bool:
    """``expected`` (with ``...`` wildcards) against ``actual``, both normalized."""
    want, got = normalize(expected).splitlines(), normalize(actual).splitlines()

    def line_ok(pattern: str, line: str) -> bool:
        parts = [re.escape(part) for part in pattern.split("...")]
        return re.fullmatch(".*".join(parts), line) is not None

    def match(w: int, g: int) -> bool:
        if w == len(want):
            return g == len(got)
        if want[w].strip() == "...":
            return any(match(w + 1, k) for k in range(g, len(got) + 1))
        return g < len(got) and line_ok(want[w], got[g]) and match(w + 1, g + 1)

    return match(0, 0)


class Run:
    """One tutorial's run: its directory, its ports, the servers it left running."""

    def __init__(self, path: Path, show: bool) -> None:
        self.path = path
        self.show = show
        self.ports: dict[str, str] = {}
        self.background: list[subprocess.Popen] = []
        self.dir = Path(tempfile.mkdtemp(prefix="tutorial-"))
        bin_dir = str(Path(sys.executable).parent)
        self.env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""), PYTHONUNBUFFERED="1")
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(NO_GRADIO), os.environ.get("PYTHONPATH")]))
        for name in ("COLUMNS", "LINES", "OPENENV_WS_TOKEN"):
            self.env.pop(name, None)
        # Docker builds start from the local base image (scripts/setup_docker.sh) unless told otherwise.
        self.env.setdefault("OPENENV_WS_BASE_IMAGE", "openenv-ws/python-base:3.11")

    def localize(self, text: str) -> str:
        def swap(found: re.Match[str]) -> str:
            return self.ports.setdefault(found.group(1), str(_free_port()))

        return PORT.sub(swap, text)

    def publish(self, text: str) -> str:
        for shown, real in self.ports.items():
            text = re.sub(rf"\b{real}\b", shown, text)
        return text.replace(str(self.dir) + "/", "").replace(str(self.dir), ".")

    def run(self) -> None:
        try:
            for block in parse(self.path.read_text()):
                self.block(block)
        finally:
            self.stop()
            shutil.rmtree(self.dir, ignore_errors=True)

    def block(self, block: Block) -> None:
        words = [d.split() for d in block.directives]
        if ["skip"] in words:
            return
        target = next((w[1] for w in words if w[0] == "file" and len(w) == 2), None)
        if target is not None:
            path = self.dir / target
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.localize(block.text))
            return
        if block.lang != "bash":
            return
        command = self.localize(block.text)
        if ["background"] in words:
            self.start(command, block)
            return
        status = next((int(w[1]) for w in words if w[0] == "exit" and len(w) == 2), 0)
        limit = next((float(w[1]) for w in words if w[0] == "timeout" and len(w) == 2), 120.0)
        where = f"{self.path.name}:{block.line}"
        try:
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", command],
                cwd=self.dir,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=limit,
            )
        except subprocess.TimeoutExpired as exc:
            raise TutorialError(f"{where}: still running after {limit:g}s:\n{block.text}") from exc
        output = self.publish(done.stdout)
        if self.show:
            print(f"$ {block.text.strip()}\n{output}")
        if done.returncode != status:
            raise TutorialError(f"{where}: exit {done.returncode} (expected {status}):\n{block.text}\n{output}")
        if block.expected is not None and not matches(block.expected, output):
            raise TutorialError(
                f"{where}: the output differs from the tutorial's\n--- shown\n{block.expected}--- real\n{output}"
            )

    def start(self, command: str, block: Block) -> None:
        log = open(self.dir / f".background-{len(self.background)}.log", "w+")  # noqa: SIM115
        process = subprocess.Popen(
            ["bash", "-c", "exec " + command.strip()],
            cwd=self.dir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.background.append(process)
        port = re.search(r"--port\s+(\d+)", command)
        if port is None:
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log.seek(0)
                raise TutorialError(f"{self.path.name}:{block.line}: the server exited:\n{log.read()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/healthz", timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # it answers (a server of another kind: OpenEnv's has /health instead)
            except OSError:
                time.sleep(0.1)
        raise TutorialError(f"{self.path.name}:{block.line}: the server did not answer in 60s")

    def stop(self) -> None:
        for process in self.background:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tutorials", nargs="+", type=Path, help="Markdown files (docs/tutorials/*.md)")
    parser.add_argument("--show", action="store_true", help="print each command and its real output")
    args = parser.parse_args(argv)
    failed = 0
    for path in args.tutorials:
        started = time.monotonic()
        try:
            Run(path, args.show).run()
        except TutorialError as exc:
            failed += 1
            print(f"FAIL {path}: {exc}", file=sys.stderr)
            continue
        print(f"ok   {path} ({time.monotonic() - started:.1f}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
