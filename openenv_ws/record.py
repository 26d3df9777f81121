"""Episode recordings: the file format, the writer that appends to it, and the reader.

A recording is a JSON-lines file (``docs/recording.md`` documents it): a ``header`` record
starts each episode (env, backend, image, seed, options, versions, creation time), then one
``frame`` record per protocol frame in the order the recorder saw them (requests ``c2s``,
streamed events and replies ``s2c``, with seconds since the episode started), then an
``end`` record when the episode ends. A reset starts a new episode.

Recording never blocks the event loop: the loop only puts ``(file, item)`` on a queue, and
one writer thread per process turns frames into JSON and appends them, flushing as soon as
the queue is empty, so a killed process loses at most what was still queued (normally the
frame being written). Only :mod:`.protocol` is imported here: the server and the client both
record through this module.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
import msgspec

from .protocol import PROTOCOL_VERSION, Close, Frame, GetState, Opened, Reset, Step, encode
from .version import __version__

FORMAT = "openenv-ws/episode"
VERSION = 1
C2S = "c2s"
"""Direction of a frame the client sent (a request)."""
S2C = "s2c"
"""Direction of a frame the server sent (an event or a reply)."""
SUFFIX = ".jsonl"

log = logging.getLogger("openenv_ws.record")

_json = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()
_msgpack = msgspec.msgpack.Decoder()


class RecordingError(ValueError):
    """A file that is not a readable recording: not JSON lines, another format, a newer version."""


def utc_iso(timestamp: float | None = None) -> str:
    """``2026-11-25T10:21:41.123Z``: now, or the given unix time."""
    moment = datetime.now(UTC) if timestamp is None else datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def frame_record(ts: float, direction: str, data: bytes) -> dict[str, Any]:
    """The record of one canonical (MessagePack) frame, its payloads decoded to plain values."""
    return {"kind": "frame", "ts": round(ts, 6), "dir": direction, "frame": _msgpack.decode(data)}


def to_json_line(record: dict[str, Any]) -> bytes:
    try:
        return _json.encode(record) + b"\n"
    except (TypeError, msgspec.EncodeError):  # e.g. a MessagePack extension type: kept as text
        return _json.encode(msgspec.to_builtins(record, enc_hook=repr)) + b"\n"


# ---------------------------------------------------------------- writing


class DiskBudget:
    """The bytes the recordings of one directory may take on disk (``serve --record-max-bytes``).

    ``used`` starts at what the directory's files hold already and grows with every line the
    writer thread writes there; the line that would pass ``limit`` is not written, and the
    file it was for stops there (see :meth:`Writer._apply`). Only the writer thread changes it.
    """

    __slots__ = ("directory", "limit", "reported", "used")

    def __init__(self, directory: str, limit: int, used: int = 0) -> None:
        self.directory = directory
        self.limit = limit
        self.used = used
        self.reported = False

    def take(self, size: int) -> bool:
        """Count ``size`` more bytes, if they fit."""
        if self.used + size > self.limit:
            return False
        self.used += size
        return True


def directory_bytes(directory: str | os.PathLike[str]) -> int:
    """What the files directly inside ``directory`` hold (0 if it does not exist yet)."""
    total = 0
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    pass  # removed meanwhile
    except OSError:
        return 0
    return total


class RecordFile:
    """One file being written; only the writer thread touches ``handle``."""

    __slots__ = ("append", "budget", "failed", "handle", "path")

    def __init__(self, path: Path, append: bool = False, budget: DiskBudget | None = None) -> None:
        self.path = path
        self.append = append
        self.budget = budget
        self.handle: Any = None
        self.failed = False
        """Written no more (the disk failed, or the budget ran out); the recorder stops queueing for it."""


_CLOSE = object()


class Writer:
    """Appends every recording of the process, on one thread of its own.

    :meth:`put` costs a deque append on the caller's thread (the event loop), plus waking the
    thread when ``wake``; the thread encodes and writes everything queued, then flushes each
    file it wrote to. A request is queued without waking the thread: it goes out with its
    first event or its reply, one wake-up and one write per step. A file that cannot be
    written is logged once and dropped; the session goes on. So is a file whose next line
    would pass its directory's :class:`DiskBudget` (:meth:`set_budget`).
    """

    def __init__(self) -> None:
        self._items: deque[tuple[RecordFile | None, Any]] = deque()
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()  # one token per wake-up (C-level: cheap)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.lines = 0
        self.bytes = 0
        self.errors = 0
        self.cut = 0
        """Files stopped at their directory's disk budget."""
        self._budgets: dict[str, DiskBudget] = {}

    def put(self, file: RecordFile, item: Any, wake: bool = True) -> None:
        """Queue a frame ``(ts, direction, bytes)``, a record (a dict), or :data:`_CLOSE`."""
        if self._thread is None:
            self._start()
        self._items.append((file, item))
        if wake:
            self._wake.put(None)

    def close(self, file: RecordFile) -> None:
        self.put(file, _CLOSE)

    def set_budget(self, directory: str, limit: int | None) -> DiskBudget | None:
        """Bound what recordings in ``directory`` may take (files already there count); None: no bound.

        Reads the directory's size once, here: call it at start-up, not on the event loop's hot path.
        """
        if limit is None:
            self._budgets.pop(directory, None)
            return None
        budget = self._budgets[directory] = DiskBudget(directory, limit, directory_bytes(directory))
        return budget

    def budget_of(self, directory: str) -> DiskBudget | None:
        """The budget :meth:`set_budget` gave ``directory`` (the same string), if any."""
        return self._budgets.get(directory)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait (at most ``timeout``) until everything queued so far is on disk."""
        if self._thread is None:
            return True
        done = threading.Event()
        self._items.append((None, done))
        self._wake.put(None)
        return done.wait(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="openenv-ws-recorder", daemon=True)
                thread.start()
                self._thread = thread
                atexit.register(self.flush)

    def _run(self) -> None:
        dirty: set[RecordFile] = set()
        items = self._items
        while True:
            self._wake.get()
            try:
                while True:  # every token: what they announced is drained below at once
                    self._wake.get_nowait()
            except queue.Empty:
                pass
            while items:
                file, item = items.popleft()
                if file is None:
                    self._flush(dirty)
                    item.set()
                else:
                    self._apply(file, item, dirty)
            self._flush(dirty)

    def _apply(self, file: RecordFile, item: Any, dirty: set[RecordFile]) -> None:
        if file.failed:
            return
        try:
            if item is _CLOSE:
                dirty.discard(file)
                if file.handle is not None:
                    file.handle.close()
                    file.handle = None
                return
            record = item if isinstance(item, dict) else frame_record(*item)
            line = to_json_line(record)
            if file.budget is not None and not file.budget.take(len(line)):
                self._cut(file)  # before the file is created: past the budget, not even an empty file
                dirty.discard(file)
                return
            if file.handle is None:
                file.path.parent.mkdir(parents=True, exist_ok=True)
                file.handle = open(file.path, "ab" if file.append else "wb")  # noqa: SIM115
            file.handle.write(line)
            self.lines += 1
            self.bytes += len(line)
            dirty.add(file)
        except Exception as exc:  # a full disk must not take the session (or the thread) down
            self._fail(file, exc)
            dirty.discard(file)

    def _flush(self, dirty: set[RecordFile]) -> None:
        for file in dirty:
            try:
                file.handle.flush()
            except Exception as exc:
                self._fail(file, exc)
        dirty.clear()

    def _fail(self, file: RecordFile, exc: Exception) -> None:
        self.errors += 1
        log.error("recording to %s stopped: %s", file.path, exc)
        self._stop(file)

    def _cut(self, file: RecordFile) -> None:
        budget = file.budget
        assert budget is not None
        self.cut += 1
        if not budget.reported:  # once per directory: every later file stops the same way
            budget.reported = True
            log.error(
                "recordings in %s reached their disk budget of %d bytes (record_max_bytes): "
                "recording stops there, the sessions go on",
                budget.directory,
                budget.limit,
            )
        self._stop(file)

    def _stop(self, file: RecordFile) -> None:
        file.failed = True
        if file.handle is not None:
            try:
                file.handle.close()
            except OSError:
                pass
            file.handle = None


WRITER = Writer()
"""The process's writer (started on first use)."""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "env"


_REQUESTS = (Reset, Step, GetState, Close)


class EpisodeRecorder:
    """Cuts one session's frames into episodes (each reset starts one) and queues them for the writer.

    ``target`` is a directory (one file per episode, ``<env>-<session>-<n>.jsonl``) or a file
    (every episode of the session in it, one after another). ``header`` is what is known of
    the session (env, backend, options...); each episode adds its seed and reset options.
    Frames before the first reset belong to no episode and are not recorded.
    """

    def __init__(
        self,
        target: str | os.PathLike[str],
        header: dict[str, Any],
        *,
        writer: Writer = WRITER,
        budget: DiskBudget | None = None,
    ) -> None:
        self.target = Path(target)
        self.per_episode = self.target.is_dir() or str(target).endswith(("/", os.sep))
        self.header = header
        self.writer = writer
        self.budget = budget
        self.episodes = 0
        self.path: Path | None = None
        """The file being written (the last one, once the session ended)."""
        self._file: RecordFile | None = None
        self._single: RecordFile | None = None
        self._t0 = 0.0

    def request(self, frame: Frame, data: bytes | None = None) -> None:
        """A request the session applies (``data``: its MessagePack bytes, when already encoded).

        Other frames (``open``, ``ping``) are not part of an episode and are skipped.
        """
        if not isinstance(frame, _REQUESTS):
            return
        if isinstance(frame, Reset):
            self._begin(frame)
        file = self._file
        if file is not None and not file.failed:  # written with what answers it (one wake-up per step)
            item = (time.monotonic() - self._t0, C2S, encode(frame) if data is None else data)
            self.writer.put(file, item, wake=False)

    def reply(self, data: bytes) -> None:
        """A frame the server sent for the session (event, reply, or the server ending it)."""
        file = self._file
        if file is not None and not file.failed:
            self.writer.put(file, (time.monotonic() - self._t0, S2C, data))

    def close(self, reason: str) -> None:
        """The session ended: end the episode and close its file."""
        self._end(reason)
        if self._single is not None:
            self.writer.close(self._single)
            self._single = None

    async def aclose(self, reason: str) -> None:
        """:meth:`close`, then wait (on a worker thread) until the file is on disk."""
        self.close(reason)
        await anyio.to_thread.run_sync(self.writer.flush)

    def _begin(self, frame: Reset) -> None:
        self._end("reset")
        self.episodes += 1
        if self.per_episode:
            name = f"{_slug(str(self.header.get('env', 'env')))}-{self.header.get('session_id', 'session')}"
            file = RecordFile(self.target / f"{name}-{self.episodes}{SUFFIX}", budget=self.budget)
        else:
            if self._single is None:
                self._single = RecordFile(self.target, budget=self.budget)
            file = self._single
        self.path = file.path
        self._t0 = time.monotonic()
        self._file = file
        header = {
            "kind": "header",
            "format": FORMAT,
            "version": VERSION,
            "episode": self.episodes,
            **self.header,
            "seed": frame.seed,
            "reset_options": frame.options,
            "protocol": PROTOCOL_VERSION,
            "created": utc_iso(),
        }
        self.writer.put(file, header)

    def _end(self, reason: str) -> None:
        file = self._file
        if file is None:
            return
        self._file = None
        self.writer.put(file, {"kind": "end", "ts": round(time.monotonic() - self._t0, 6), "reason": reason})
        if file is not self._single:
            self.writer.close(file)


def client_recorder(target: str | os.PathLike[str], opened: Opened, options: dict[str, Any]) -> EpisodeRecorder:
    """The recorder of ``connect(..., record=target)``: what the client knows of its session."""
    header = {
        "env": opened.env,
        "backend": opened.backend,
        "session_id": opened.session_id,
        "options": options,
        "recorder": "client",
        "server_version": None,
        "client_version": __version__,
    }
    return EpisodeRecorder(target, header)


# ---------------------------------------------------------------- reading


@dataclass
class FrameRecord:
    ts: float
    dir: str
    frame: dict[str, Any]

    @property
    def tag(self) -> str:
        return self.frame.get("t", "")

    @property
    def seq(self) -> int:
        return self.frame.get("seq", 0)


@dataclass
class Episode:
    """One recorded episode: its header, its frames in order, and how it ended (if it did)."""

    path: Path
    number: int
    header: dict[str, Any]
    frames: list[FrameRecord] = field(default_factory=list)
    end: dict[str, Any] | None = None
    cut: bool = False
    """The file ends in the middle of a line (the recorder was killed while writing it)."""

    @property
    def env(self) -> str:
        return self.header.get("env", "")

    def describe(self) -> str:
        number = self.header.get("episode", self.number)
        return f"{self.path}: episode {number} ({self.env}, seed {self.header.get('seed')})"


def read_episodes(path: str | os.PathLike[str]) -> list[Episode]:
    """Every episode of a recording. A last line cut short (a crash mid-write) is dropped."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RecordingError(f"cannot read {path}: {exc.strerror or exc}") from None
    lines = data.split(b"\n")
    episodes: list[Episode] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = _json_decoder.decode(line)
        except msgspec.DecodeError as exc:
            if number == len(lines) and episodes:  # no newline after it: the writer was cut off
                episodes[-1].cut = True
                break
            raise RecordingError(f"{path}:{number}: not JSON: {exc}") from None
        kind = record.get("kind") if isinstance(record, dict) else None
        if kind == "header":
            _check_header(path, number, record)
            episodes.append(Episode(path, len(episodes) + 1, record))
        elif not episodes:
            raise RecordingError(f"{path}:{number}: not an openenv-ws recording (the first record must be a header)")
        elif kind == "frame":
            episodes[-1].frames.append(FrameRecord(record.get("ts", 0.0), record.get("dir", ""), record["frame"]))
        elif kind == "end":
            episodes[-1].end = record
        # other kinds: added by a later minor version; skipped
    if not episodes:
        raise RecordingError(f"{path}: empty: no episode recorded")
    return episodes


def _check_header(path: Path, number: int, header: dict[str, Any]) -> None:
    if header.get("format") != FORMAT:
        raise RecordingError(f"{path}:{number}: format {header.get('format')!r} is not {FORMAT!r}")
    version = header.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise RecordingError(
            f"{path}:{number}: recorded in format version {version}; this openenv-ws reads up to {VERSION}"
        )
