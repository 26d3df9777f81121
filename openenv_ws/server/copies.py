"""Copies of a live episode: forks (new sessions now) and checkpoints (a file, a session later).

An episode is copied by **snapshot** when its environment implements ``snapshot()``/``restore()``
(the state travels server <-> sandbox only, never to a client), else by **replay**: a fresh
sandbox is reset with the episode's seed and options and given the same actions again, and
every answer is checked against the recorded one, so a copy is either exact (but for the
environment's ``nondeterministic_fields``) or refused with the step and fields that differed.

Checkpoint files (``serve --checkpoint-dir``) are MessagePack maps, versioned and documented in
docs/recording.md: a recording prefix (the episode's reset and steps with their replies) plus an
optional snapshot.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio
import msgspec

from ..core.history import Entry, EpisodeHistory
from ..env import capture_method
from ..errors import CheckpointError, NotCopyableError, ReplayDivergedError, ValidationError
from ..fields import FieldFilter, compare
from ..protocol import (
    Checkpoint,
    Checkpointed,
    Error,
    Event,
    Fork,
    Forked,
    ForkedSession,
    Reset,
    RestoreSnapshot,
    Result,
    ServerFrame,
    Snapshotted,
    Step,
    TakeSnapshot,
    decode_server,
    encode,
    unpack,
)
from ..registry import EnvSpec
from ..sandbox import Sandbox
from ..version import __version__

CHECKPOINT_FORMAT = "openenv-ws/checkpoint"
CHECKPOINT_VERSION = 1
_ID = re.compile(r"^c-[0-9a-f]{32}$")
_REQUEST = msgspec.msgpack.Decoder(Reset | Step)

Restore = Callable[[Sandbox], Awaitable[None]]
"""Makes a freshly started sandbox hold the copied episode (raises a typed error if it cannot)."""


class Copyable(Protocol):
    """What the copier reads of a session (``server.sessions.Session``)."""

    id: str
    token: str
    owner: str | None
    spec: EnvSpec
    options: dict[str, Any]
    sandbox: Sandbox
    history: EpisodeHistory

    async def close(self, reason: str, notify: bool = True, code: int = 1000) -> None: ...


NewSession = Callable[[EnvSpec, dict[str, Any], Restore, EpisodeHistory, str | None], Awaitable[Copyable]]
"""The manager's way to start a sandbox, restore it and hold it as a new session awaiting its client."""


@dataclass(frozen=True, slots=True)
class CopyLimits:
    max_forks: int = 64
    """Children one fork request may ask for."""
    checkpoint_dir: str | None = None
    max_checkpoint_bytes: int = 64 << 20
    checkpoint_ttl: float = 7 * 24 * 3600.0
    """Seconds a checkpoint file is kept; older ones are refused and removed."""


@dataclass(frozen=True, slots=True)
class Plan:
    """How to make a new session hold a copied episode."""

    method: str
    step: int
    restore: Restore
    history: EpisodeHistory


# ---------------------------------------------------------------- restoring a sandbox


async def _drop(event: Event) -> None:
    pass  # a copy's replayed events were seen by the original's client already


def _answer(frame: ServerFrame) -> dict[str, Any]:
    if isinstance(frame, Result):
        return {
            "observation": unpack(frame.observation),
            "reward": frame.reward,
            "terminated": frame.terminated,
            "truncated": frame.truncated,
            "info": unpack(frame.info) or {},
        }
    if isinstance(frame, Error):
        return {"error": {"code": frame.code, "path": frame.path}}
    return {type(frame).__name__: True}


def by_replay(entries: list[Entry], ignore: FieldFilter) -> Restore:
    async def restore(sandbox: Sandbox) -> None:
        steps = 0
        for number, entry in enumerate(entries, 1):
            request = msgspec.structs.replace(entry.request, seq=number)
            reply = await sandbox.request(request, _drop)
            if isinstance(request, Step):
                steps += 1
            where = "the reset" if isinstance(request, Reset) else f"step {steps}"
            differences = compare(_answer(entry.reply), _answer(reply), ignore)  # type: ignore[arg-type]
            if differences:
                shown = "; ".join(str(d) for d in differences[:5])
                more = f" (and {len(differences) - 5} more)" if len(differences) > 5 else ""
                raise ReplayDivergedError(
                    f"replaying the episode diverged at {where}: {shown}{more}", path=differences[0].path, fatal=True
                )

    return restore


def by_snapshot(snapshot: Snapshotted) -> Restore:
    async def restore(sandbox: Sandbox) -> None:
        reply = await sandbox.request(RestoreSnapshot(seq=1, data=snapshot.data, phase=snapshot.phase), _drop)
        if isinstance(reply, Error):
            raise NotCopyableError(f"the environment could not restore its snapshot: {reply.message}", fatal=True)

    return restore


async def take_snapshot(sandbox: Sandbox) -> Snapshotted:
    reply = await sandbox.request(TakeSnapshot(seq=1), _drop)
    if not isinstance(reply, Snapshotted):
        message = reply.message if isinstance(reply, Error) else type(reply).__name__
        raise NotCopyableError(f"the environment could not take a snapshot: {message}")
    return reply


# ---------------------------------------------------------------- the copier


class EpisodeCopier:
    def __init__(self, limits: CopyLimits, new_session: NewSession) -> None:
        self.limits = limits
        self._new_session = new_session

    async def _plan(self, session: Copyable, step: int | None) -> tuple[Plan, Snapshotted | None]:
        history = session.history
        now = history.steps
        step = now if step is None else step
        if not 0 <= step <= now:
            raise ValidationError(
                f"at_step must be between 0 and {now} (the episode's steps), not {step}", path="$.at_step"
            )
        if not history.started:
            raise NotCopyableError("nothing to copy yet: reset the episode first")
        method = capture_method(session.spec.cls)
        if method == "none":
            raise NotCopyableError(f"{session.spec.name} declares that its episodes cannot be copied")
        if method == "snapshot" and step == now:
            snapshot = await take_snapshot(session.sandbox)
            return Plan("snapshot", step, by_snapshot(snapshot), history.copy(step)), snapshot
        if history.dropped:
            raise NotCopyableError(
                f"the episode outgrew the history a replay needs ({history.max_bytes} bytes); "
                "copies by replay are possible again after the next reset"
            )
        ignore = FieldFilter(session.spec.cls.nondeterministic_fields)
        return Plan("replay", step, by_replay(history.prefix(step), ignore), history.copy(step)), None

    async def fork(self, session: Copyable, frame: Fork) -> Forked:
        if not 1 <= frame.count <= self.limits.max_forks:
            raise ValidationError(f"count must be between 1 and {self.limits.max_forks}", path="$.count")
        plan, _ = await self._plan(session, frame.at_step)
        children: list[Copyable] = []

        async def one() -> None:
            # A fork's children belong to whoever owns the episode.
            child = await self._new_session(session.spec, session.options, plan.restore, plan.history, session.owner)
            children.append(child)

        try:
            async with anyio.create_task_group() as tg:
                for _ in range(frame.count):
                    tg.start_soon(one)
        except BaseExceptionGroup as group:
            for child in children:  # all or nothing: no half-made fork
                await child.close("the fork it belonged to failed", notify=False)
            raise _first(group) from None
        sessions = [ForkedSession(session_id=c.id, resume_token=c.token) for c in children]
        return Forked(seq=frame.seq, sessions=sessions, method=plan.method, step=plan.step)

    # ------------------------------------------------------------ checkpoints

    def _path(self, checkpoint_id: str) -> Path:
        if self.limits.checkpoint_dir is None:
            raise NotCopyableError("checkpoints are off on this server (serve --checkpoint-dir DIR)")
        if not _ID.match(checkpoint_id):
            raise CheckpointError(f"{checkpoint_id!r} is not a checkpoint id")
        return Path(self.limits.checkpoint_dir) / f"{checkpoint_id}.ckpt"

    async def checkpoint(self, session: Copyable, frame: Checkpoint) -> Checkpointed:
        checkpoint_id = "c-" + secrets.token_hex(16)
        path = self._path(checkpoint_id)
        plan, snapshot = await self._plan(session, None)
        spec = session.spec
        body = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "header": {
                "env": spec.name,
                "target": spec.target,
                "options": session.options,
                "session_id": session.id,
                "created_at": time.time(),
                "nondeterministic_fields": list(spec.cls.nondeterministic_fields),
                "server_version": __version__,
            },
            "method": plan.method,
            "step": plan.step,
            "frames": [[encode(e.request), encode(e.reply)] for e in session.history.prefix(plan.step)],
            "snapshot": None if snapshot is None else {"data": snapshot.data, "phase": snapshot.phase},
        }
        data = msgspec.msgpack.encode(body)
        if len(data) > self.limits.max_checkpoint_bytes:
            raise NotCopyableError(
                f"the checkpoint would take {len(data)} bytes, over the limit of {self.limits.max_checkpoint_bytes}"
            )
        await anyio.to_thread.run_sync(_write_atomically, path, data)
        return Checkpointed(seq=frame.seq, checkpoint_id=checkpoint_id, method=plan.method, step=plan.step)

    async def load(self, checkpoint_id: str) -> tuple[str, dict[str, Any], Plan]:
        """The environment name, options and restore plan a checkpoint holds."""
        path = self._path(checkpoint_id)
        try:
            data, mtime = await anyio.to_thread.run_sync(_read, path)
        except FileNotFoundError:
            raise CheckpointError(f"no checkpoint {checkpoint_id} (unknown, expired or removed)", fatal=True) from None
        if time.time() - mtime > self.limits.checkpoint_ttl:
            await anyio.to_thread.run_sync(path.unlink, True)
            raise CheckpointError(f"checkpoint {checkpoint_id} has expired", fatal=True)
        try:
            body = msgspec.msgpack.decode(data)
            if body.get("format") != CHECKPOINT_FORMAT or body.get("version") != CHECKPOINT_VERSION:
                raise CheckpointError(f"checkpoint {checkpoint_id} is of another format or version", fatal=True)
            header = body["header"]
            entries = [Entry(_REQUEST.decode(req), decode_server(rep)) for req, rep in body["frames"]]
        except (KeyError, TypeError, ValueError, msgspec.DecodeError) as exc:
            raise CheckpointError(f"checkpoint {checkpoint_id} is unreadable: {exc}", fatal=True) from None
        history = EpisodeHistory(max_bytes=len(data) + (1 << 20))
        for entry in entries:
            history.record(entry.request, entry.reply, 0)
        if body["snapshot"] is not None:
            snapshot = Snapshotted(data=body["snapshot"]["data"], phase=body["snapshot"]["phase"])
            plan = Plan("snapshot", body["step"], by_snapshot(snapshot), history)
        else:
            ignore = FieldFilter(header.get("nondeterministic_fields") or ())
            plan = Plan("replay", body["step"], by_replay(entries, ignore), history)
        return header["env"], header.get("options") or {}, plan

    def sweep(self) -> int:
        """Remove expired checkpoint files (blocking: call it off the event loop); how many."""
        if self.limits.checkpoint_dir is None:
            return 0
        removed = 0
        cutoff = time.time() - self.limits.checkpoint_ttl
        for path in Path(self.limits.checkpoint_dir).glob("c-*.ckpt"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError:
                pass
        return removed


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _read(path: Path) -> tuple[bytes, float]:
    return path.read_bytes(), path.stat().st_mtime


def _first(group: BaseExceptionGroup) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group
