"""The session inspector: what a server holds, as a live table, a JSON snapshot, or one session's frames.

``openenv-ws sessions`` and ``scripts/inspect_sessions.py`` do the same:

- no option: a table of the server's sessions (id, env, backend, sandbox, state, age, steps,
  idle time, client), redrawn in place every ``--interval`` seconds until ``q`` or Ctrl-C
  (on a terminal; piped, each refresh is printed as plain text after the last);
- ``--json``: one snapshot (``{"server", "time", "health", "sessions"}``) for scripts;
- ``--follow ID``: the frames of session ``ID`` as they pass, read-only, until it ends
  (``--json`` prints them as the server sends them, one JSON object per line).

It reads ``GET /healthz``, ``GET /v1/sessions`` and ``WS /v1/sessions/{id}/watch``; with
``--token`` (or ``$OPENENV_WS_TOKEN``) it sends ``Authorization: Bearer ...``.

Exit status: 0; 1 when the server cannot be asked (unreachable, or it wants a token). With
``--follow``: 0 when the session ended, 1 when there is no such session, 2 when the server
cannot be reached.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote, urlsplit, urlunsplit

import anyio

from ..client.transport import ConnectionLost, WebSocket, auth_headers
from ..errors import AuthError, OpenEnvWSError

if TYPE_CHECKING:  # rich is imported when a table is drawn: the CLI imports this module for every command
    from rich.console import Group
    from rich.table import Table

DEFAULT_URL = "http://127.0.0.1:8000"

Out = Callable[[str], None]


class InspectorError(Exception):
    """The server cannot be asked (unreachable, refused, not openenv-ws)."""


def base_url(url: str, scheme: str = "http") -> str:
    """``ws://host:port/anything`` or ``http://host:port`` -> ``http://host:port`` (or ``ws://``)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    secure = parts.scheme in ("https", "wss")
    chosen = {"http": "https", "ws": "wss"}[scheme] if secure else scheme
    return urlunsplit((chosen, parts.netloc, "", "", ""))


def get_json(url: str, path: str, token: str | None = None, timeout: float = 5.0) -> Any:
    request = urllib.request.Request(base_url(url) + path, headers=auth_headers(None, token))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise AuthError("the server wants a token: pass --token or set OPENENV_WS_TOKEN") from None
        if exc.code == 503 and path == "/healthz":  # draining: the body still describes the server
            return json.loads(exc.read())
        raise InspectorError(f"GET {path}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise InspectorError(f"cannot reach {base_url(url)}: {getattr(exc, 'reason', exc)}") from None


def snapshot(url: str, token: str | None = None) -> dict[str, Any]:
    return {
        "server": base_url(url),
        "time": round(time.time(), 3),
        "health": get_json(url, "/healthz", token),
        "sessions": get_json(url, "/v1/sessions", token)["sessions"],
    }


# ---------------------------------------------------------------- the table


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


COLUMNS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("ID", lambda s: s["id"]),
    ("ENV", lambda s: s["env"]),
    ("BACKEND", lambda s: s["backend"]),
    ("SANDBOX", lambda s: str(s.get("sandbox") or "-")),
    ("STATE", lambda s: s["state"] + (f" +{s['watchers']}w" if s.get("watchers") else "")),
    ("AGE", lambda s: duration(s["age_s"])),
    ("STEPS", lambda s: str(s["steps"])),
    ("IDLE", lambda s: duration(s["idle_s"])),
    ("CLIENT", lambda s: s.get("client") or "-"),
]
_RIGHT = {"AGE", "STEPS", "IDLE"}
_STATE_STYLE = {"active": "green", "busy": "yellow", "detached": "dim"}


def headline(snap: dict[str, Any]) -> str:
    """The server in one line: status, backend, sessions held of the maximum, the time of the snapshot."""
    health = snap["health"]
    backend = health.get("backend", {})
    backend_name = backend.get("name", "?") if isinstance(backend, dict) else backend
    clock = time.strftime("%H:%M:%S", time.localtime(snap["time"]))
    return (
        f"{snap['server']}  {health.get('status', '?')}  backend {backend_name}  "
        f"sessions {len(snap['sessions'])}/{health.get('max_sessions', '?')} "
        f"(busy {health.get('busy', 0)}, detached {health.get('detached', 0)}, opening {health.get('opening', 0)})"
        f"  {clock}"
    )


_OPTIONAL = ("BACKEND", "SANDBOX", "IDLE", "AGE")
"""Columns left out, in this order, when the terminal is too narrow (the backend is in the headline too)."""
_GAP = 2


def table(snap: dict[str, Any], width: int | None = None) -> Table:
    """The sessions, oldest first, as a rich table (drawn by :func:`live`) that fits ``width`` columns."""
    from rich import box
    from rich.table import Table

    sessions = sorted(snap["sessions"], key=lambda s: -s["age_s"])
    rows = [[cell(session) for _, cell in COLUMNS] for session in sessions]
    names = [name for name, _ in COLUMNS]
    widths = {name: max([len(name)] + [len(row[i]) for row in rows]) for i, name in enumerate(names)}
    shown = list(names)
    for name in _OPTIONAL:
        if width is None or sum(widths[n] for n in shown) + _GAP * (len(shown) - 1) <= width:
            break
        shown.remove(name)
    grid = Table(
        box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False, show_edge=False, header_style="bold"
    )
    for name in shown:
        grid.add_column(name, justify="right" if name in _RIGHT else "left", no_wrap=True, overflow="ellipsis")
    for session, row in zip(sessions, rows, strict=True):
        style = _STATE_STYLE.get(session["state"], "") if session["state"] != "active" else ""
        grid.add_row(*(value for name, value in zip(names, row, strict=True) if name in shown), style=style)
    if not sessions:
        grid.caption = "(no sessions)"
    return grid


def screen(snap: dict[str, Any] | None, error: str | None, hint: str, width: int | None = None) -> Group:
    """One refresh: the headline, the table (or why there is none), the keys."""
    from rich.console import Group
    from rich.text import Text

    if snap is None:
        return Group(Text(error or "", style="red"), Text(hint, style="dim"))
    return Group(Text(headline(snap), style="bold"), table(snap, width), Text(hint, style="dim"))


@contextlib.contextmanager
def _keys(stream: TextIO) -> Iterator[bool]:
    """Single key presses from a terminal (cbreak mode, restored after); False when not a terminal."""
    if not stream.isatty():
        yield False
        return
    import termios
    import tty

    saved = termios.tcgetattr(stream.fileno())
    try:
        tty.setcbreak(stream.fileno())
        yield True
    finally:
        termios.tcsetattr(stream.fileno(), termios.TCSADRAIN, saved)


def _quit_pressed(stream: TextIO, interactive: bool, wait: float) -> bool:
    """Wait up to ``wait`` seconds; True when ``q`` was pressed."""
    if not interactive:
        time.sleep(wait)
        return False
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([stream], [], [], left)
        if ready and os.read(stream.fileno(), 1).lower() == b"q":
            return True
    return False


def live(url: str, token: str | None, interval: float, count: int | None, out: TextIO = sys.stdout) -> int:
    """Refresh every ``interval`` seconds until ``q``, Ctrl-C, or ``count`` refreshes.

    On a terminal the table is redrawn in place (rich's ``Live``); elsewhere each refresh is
    printed after the last as plain text, without escape codes.
    """
    from rich.console import Console
    from rich.live import Live

    console = Console(file=out, width=None if out.isatty() else 10_000)
    shown = 0
    with _keys(sys.stdin) as interactive:
        hint = f"every {interval:g}s; " + ("q: quit" if interactive else "Ctrl-C: quit")
        with contextlib.ExitStack() as stack:
            display = None
            if console.is_terminal:
                display = stack.enter_context(Live(console=console, auto_refresh=False, vertical_overflow="crop"))
            try:
                while count is None or shown < count:
                    try:
                        view = screen(snapshot(url, token), None, hint, console.width if console.is_terminal else None)
                    except InspectorError as exc:
                        view = screen(None, f"{base_url(url)}: {exc} (retrying every {interval:g}s)", hint)
                    if display is not None:
                        display.update(view, refresh=True)
                    else:
                        console.print(view)
                        console.print()
                    shown += 1
                    if (count is None or shown < count) and _quit_pressed(sys.stdin, interactive, interval):
                        break
            except KeyboardInterrupt:
                pass
    return 0


# ---------------------------------------------------------------- following one session


def _short(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_frame(message: dict[str, Any]) -> str:
    """One line for a message of the watch socket."""
    kind = message.get("kind")
    if kind != "frame":
        rest = {k: v for k, v in message.items() if k != "kind"}
        return f"-- {kind}: {_short(rest, 400)}"
    frame = message["frame"]
    tag = frame.get("t", "?")
    arrow = "->" if message.get("dir") == "c2s" else "<-"
    head = f"{message.get('ts', 0):9.3f}s {arrow} {tag:<6} seq={frame.get('seq', 0):<4}"
    match tag:
        case "reset":
            body = f"seed={frame.get('seed')} options={_short(frame.get('options'))}"
        case "step":
            body = f"action={_short(frame.get('action'))}"
        case "event":
            body = f"#{frame.get('index', 0)} {_short(frame.get('data'))}"
        case "result":
            flags = [f for f in ("terminated", "truncated") if frame.get(f)]
            body = f"reward={frame.get('reward')} {' '.join(flags)} obs={_short(frame.get('observation'))}".replace(
                "  ", " "
            )
        case "state":
            body = _short(frame.get("state"))
        case "error":
            where = f" at {frame['path']}" if frame.get("path") else ""
            body = f"{frame.get('code')}{where}: {frame.get('message')}{' (fatal)' if frame.get('fatal') else ''}"
        case "closed":
            body = frame.get("reason", "")
        case _:
            body = ""
    return f"{head} {body}".rstrip()


async def follow(url: str, session_id: str, token: str | None = None, as_json: bool = False, out: Out = print) -> int:
    """Print session ``session_id``'s frames until it ends (0), or say why it cannot be followed (1)."""
    address = f"{base_url(url, 'ws')}/v1/sessions/{quote(session_id, safe='')}/watch"
    try:
        ws = await WebSocket.connect(address, headers=auth_headers(None, token))
    except (ConnectionLost, OSError) as exc:
        out(f"cannot follow {session_id}: {exc}")
        return 2
    status = 1
    try:
        while True:
            try:
                text = await ws.receive()
            except ConnectionLost:
                return status
            message = json.loads(text)
            out(text if as_json else describe_frame(message))
            if message.get("kind") == "closed":
                status = 0
            elif message.get("kind") == "error":
                status = 1
    finally:
        await ws.aclose()


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the server (http:// or ws://; default {DEFAULT_URL})")
    parser.add_argument("--token", help="bearer token of a server run with --token (default: $OPENENV_WS_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print one snapshot as JSON (with --follow: raw frames)")
    parser.add_argument("--follow", metavar="ID", help="tail the frames of session ID live, read-only, until it ends")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes of the table")
    parser.add_argument("--count", type=int, help="stop after this many refreshes (default: until q or Ctrl-C)")


def run(args: argparse.Namespace) -> int:
    try:
        if args.follow:
            return anyio.run(follow, args.url, args.follow, args.token, args.json)
        if args.json:
            print(json.dumps(snapshot(args.url, args.token), indent=2))
            return 0
        return live(args.url, args.token, args.interval, args.count)
    except (InspectorError, OpenEnvWSError) as exc:
        print(f"openenv-ws sessions: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inspect_sessions.py", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
