"""What a server started with a state directory keeps of its sessions, so a restarted one resumes them.

The state directory (``serve --state-dir DIR``) holds two files, both MessagePack, versioned and
documented in docs/recording.md ("Server state"):

- ``state.msgpack``: every live session as it was when the file was written (at start, at a
  graceful hand-off, and when the journal has grown past :data:`COMPACT_BYTES`), written
  atomically (a temporary file, fsync, rename). It names the journal that continues it.
- ``journal-<n>.msgpack``: what happened since, appended as it happens: a session opened, a
  request answered (the request and its reply, as the frames' bytes), a session closed. One
  ``write()`` per answered request, to the page cache: it survives ``kill -9`` of the server (not a
  crash of the host, where the sandboxes die too); the file is fsynced on a short timer and at a
  hand-off. A record cut short by a crash is ignored on reading.

A resume token is kept only as its SHA-256: whoever reads the directory cannot resume a session.
Streamed events are not kept: a repeat after a restart gets the request's reply only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from ..core.history import EpisodeHistory
from ..protocol import Request, ServerFrame, decode_server, encode

STATE_FORMAT = "openenv-ws/state"
STATE_VERSION = 1
STATE_FILE = "state.msgpack"
LOCK_FILE = "lock"
"""Held (``flock``) by the one server using the directory; a successor waits for it (a hand-off in progress)."""
LOCK_WAIT = 120.0
"""How long a server waits for the directory's previous holder to hand off before giving up."""

log = logging.getLogger("openenv_ws.server")
COMPACT_BYTES = 64 << 20
"""A journal past this size is folded into a new state file (and a new journal started)."""
FSYNC_INTERVAL = 1.0
"""Seconds between fsyncs of the journal (a ``kill -9`` loses nothing written; this is for the host)."""

_REQUEST = msgspec.msgpack.Decoder(Request)
_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder().decode


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class SavedSession:
    """One session as the state directory holds it."""

    id: str
    token_hash: str
    env: str
    options: dict[str, Any]
    owner: str | None
    sandbox: dict[str, Any]
    """The backend's handle on the sandbox (Docker: its container and socket directory), to adopt it."""
    open_key: str | None = None
    applied: int = 0
    steps: int = 0
    replies: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    """The last answered requests, by number: (request, reply) as the frames' bytes."""
    history: list[tuple[bytes, bytes]] = field(default_factory=list)
    """The episode's last reset and every step since, with their replies (what a replay applies)."""
    history_dropped: bool = False
    history_steps: int = 0
    history_started: bool = False

    def to_map(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "token_hash": self.token_hash,
            "env": self.env,
            "options": self.options,
            "owner": self.owner,
            "sandbox": self.sandbox,
            "open_key": self.open_key,
            "applied": self.applied,
            "steps": self.steps,
            "replies": [[seq, req, rep] for seq, (req, rep) in self.replies.items()],
            "history": [list(pair) for pair in self.history],
            "history_dropped": self.history_dropped,
            "history_steps": self.history_steps,
            "history_started": self.history_started,
        }

    @classmethod
    def from_map(cls, m: dict[str, Any]) -> SavedSession:
        return cls(
            id=m["id"],
            token_hash=m["token_hash"],
            env=m["env"],
            options=m.get("options") or {},
            owner=m.get("owner"),
            sandbox=m.get("sandbox") or {},
            open_key=m.get("open_key"),
            applied=m.get("applied", 0),
            steps=m.get("steps", 0),
            replies={seq: (req, rep) for seq, req, rep in m.get("replies", [])},
            history=[(req, rep) for req, rep in m.get("history", [])],
            history_dropped=m.get("history_dropped", False),
            history_steps=m.get("history_steps", 0),
            history_started=m.get("history_started", False),
        )

    # ------------------------------------------------------------ what the journal says happened

    def answered(self, seq: int, request: bytes, reply: bytes, keep: int, max_history: int) -> None:
        self.applied = max(self.applied, seq)
        self.replies[seq] = (request, reply)
        while len(self.replies) > keep:
            del self.replies[next(iter(self.replies))]
        frame = _REQUEST.decode(request)
        kind = type(frame).__name__
        ok = decode_server(reply).__class__.__name__ == "Result"
        if kind == "Step" and ok:
            self.steps += 1
        if kind == "Reset":
            if not ok:
                return
            self.history, self.history_dropped, self.history_steps, self.history_started = [], False, 0, True
        elif kind == "Step":
            self.history_steps += ok
        else:
            return
        if self.history_dropped:
            return
        self.history.append((request, reply))
        if sum(len(a) + len(b) for a, b in self.history) > max_history:
            self.history, self.history_dropped = [], True

    def episode(self, max_bytes: int) -> EpisodeHistory:
        """The episode's history as a session keeps it."""
        history = EpisodeHistory(max_bytes)
        for request, reply in self.history:
            history.record(_REQUEST.decode(request), decode_server(reply), len(request) + len(reply))  # type: ignore[arg-type]
        history.dropped = self.history_dropped
        history.steps = self.history_steps
        history.started = self.history_started
        return history

    def cached(self) -> list[tuple[int, ServerFrame, bytes]]:
        """The kept replies, oldest first: (number, frame, bytes)."""
        return [(seq, decode_server(rep), rep) for seq, (_, rep) in sorted(self.replies.items())]


@dataclass
class SavedState:
    instance: str | None
    """The backend instance whose sandboxes the sessions live in (Docker: the containers' server label)."""
    sessions: dict[str, SavedSession]
    written_at: float = 0.0


class StateError(Exception):
    """The state directory is of another format or version, or unreadable."""


class Journal:
    """The state directory of one server: read once at start, then appended to."""

    def __init__(self, directory: str | Path, *, reply_cache: int, max_history_bytes: int) -> None:
        self.dir = Path(directory)
        self.keep = reply_cache
        self.max_history = max_history_bytes
        self._fd: int | None = None
        self._generation = 0
        self.size = 0
        self.dirty = False
        self.closed = False
        """After a hand-off: nothing more is written (the successor owns the directory)."""
        self.writes = 0
        self._lock: int | None = None

    # ------------------------------------------------------------ reading (at start, blocking)

    def _acquire(self, wait: float) -> None:
        """Hold the directory: one server at a time; a successor started early waits for the hand-off."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # episodes' data: the server's user only
        fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock = fd
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise StateError(f"another server still holds {self.dir} after {wait:g}s") from None
                if not told:
                    log.info("waiting for the server holding %s to hand off", self.dir)
                    told = True
                time.sleep(0.05)

    def load(self, wait: float = LOCK_WAIT) -> SavedState | None:
        """What the directory holds, journal applied; None for an empty directory (holds the directory)."""
        if self._lock is None:
            self._acquire(wait)
        path = self.dir / STATE_FILE
        try:
            body = _unpack(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, msgspec.DecodeError) as exc:
            raise StateError(f"{path} is unreadable: {exc}") from None
        if not isinstance(body, dict) or body.get("format") != STATE_FORMAT or body.get("version") != STATE_VERSION:
            raise StateError(f"{path} is not an {STATE_FORMAT} file of version {STATE_VERSION}")
        self._generation = body.get("journal", 0)
        sessions = {m["id"]: SavedSession.from_map(m) for m in body.get("sessions", [])}
        state = SavedState(body.get("instance"), sessions, body.get("written_at", 0.0))
        for record in self._records(self._journal_path(self._generation)):
            self._apply(state, record)
        return state

    def _records(self, path: Path) -> list[list[Any]]:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        records, at = [], 0
        while at + 4 <= len(data):
            size = int.from_bytes(data[at : at + 4], "big")
            if at + 4 + size > len(data):
                break  # cut short by a crash: what follows was never acknowledged
            try:
                records.append(_unpack(data[at + 4 : at + 4 + size]))
            except msgspec.DecodeError:
                break
            at += 4 + size
        return records

    def _apply(self, state: SavedState, record: list[Any]) -> None:
        kind = record[0]
        if kind == "open":
            saved = SavedSession.from_map(record[1])
            state.sessions[saved.id] = saved
            return
        saved = state.sessions.get(record[1])
        if saved is None:
            return
        if kind == "reply":
            saved.answered(record[2], record[3], record[4], self.keep, self.max_history)
        elif kind == "close":
            del state.sessions[saved.id]
        elif kind == "key":
            saved.open_key = record[2]
        elif kind == "sandbox":
            saved.sandbox = record[2]

    # ------------------------------------------------------------ writing

    def _journal_path(self, generation: int) -> Path:
        return self.dir / f"journal-{generation}.msgpack"

    def write_state(self, instance: str | None, sessions: list[SavedSession]) -> None:
        """A new state file holding ``sessions`` and a new, empty journal after it (blocking)."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        old = self._generation
        self._generation += 1
        body = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "instance": instance,
            "written_at": time.time(),
            "journal": self._generation,
            "sessions": [s.to_map() for s in sessions],
        }
        new_journal = self._journal_path(self._generation)
        fd = os.open(new_journal, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        _write_atomically(self.dir / STATE_FILE, _pack(body))
        self._close_fd()
        self._fd, self.size, self.dirty = fd, 0, False
        if old != self._generation:
            with contextlib.suppress(FileNotFoundError):
                self._journal_path(old).unlink()

    def _append(self, record: list[Any]) -> None:
        if self._fd is None or self.closed:
            return
        data = _pack(record)
        os.write(self._fd, len(data).to_bytes(4, "big") + data)
        self.size += 4 + len(data)
        self.dirty = True
        self.writes += 1

    def opened(self, saved: SavedSession) -> None:
        self._append(["open", saved.to_map()])

    def answered(self, session_id: str, request: Request, reply: bytes) -> None:
        """A request was answered: before its reply is sent (so a repeat after a restart finds it)."""
        if self._fd is None or self.closed:
            return
        self._append(["reply", session_id, request.seq, encode(request), reply])

    def keyed(self, session_id: str, open_key: str) -> None:
        self._append(["key", session_id, open_key])

    def moved(self, session_id: str, sandbox: dict[str, Any]) -> None:
        self._append(["sandbox", session_id, sandbox])

    def closed_session(self, session_id: str) -> None:
        self._append(["close", session_id])

    @property
    def needs_compaction(self) -> bool:
        return self.size > COMPACT_BYTES

    def sync(self) -> None:
        """fsync the journal if anything was written since the last time (blocking)."""
        fd = self._fd
        if fd is not None and self.dirty:
            self.dirty = False
            with contextlib.suppress(OSError):
                os.fsync(fd)

    def stop(self) -> None:
        """No more writes (a hand-off: the state file just written is the last word)."""
        self.closed = True
        self._close_fd()
        lock, self._lock = self._lock, None
        if lock is not None:
            os.close(lock)  # the successor may take the directory now

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
