"""Replaying recorded episodes (``openenv-ws replay``): the same requests, a fresh session, compared.

Each episode of each file is replayed in a new session of its environment, opened with the
recorded options: every recorded request (reset with its seed and options, each step's
action, each state request) is sent again in order, and each answer is compared field by
field with the recorded one: observation, reward, terminated, truncated, info, the events a
step streamed, the state, or the error code and field path. The first difference stops the
replay and is reported with the request and a field-level diff.

Fields an environment declares in ``nondeterministic_fields`` (ids, timestamps...) are not
compared; neither are fields named with ``--ignore``. Without ``--url``, the recorded
environments are served by a server started inside this process.

Exit status: 0 when every answer matched, 1 at a divergence, 2 when a replay cannot run
(an unreadable file, an unknown environment, an unreachable server). docs/recording.md
documents the file format.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..client.session import connect
from ..errors import OpenEnvWSError, UnknownEnvError
from ..fields import Difference, FieldFilter, compare, plain
from ..record import C2S, S2C, Episode, RecordingError, read_episodes
from ..registry import EnvSpec, builtin_envs, resolve

Out = Callable[[str], None]


# ---------------------------------------------------------------- answers on both sides


def recorded_answer(reply: dict[str, Any], events: list[Any]) -> dict[str, Any]:
    """The comparable part of a recorded reply frame."""
    kind = reply.get("t")
    if kind == "result":
        answer = {
            "observation": reply.get("observation"),
            "reward": reply.get("reward"),
            "terminated": reply.get("terminated", False),
            "truncated": reply.get("truncated", False),
            "info": reply.get("info") or {},
        }
    elif kind == "state":
        answer = {"state": reply.get("state")}
    elif kind == "error":
        answer = {"error": {"code": reply.get("code"), "path": reply.get("path")}}
    else:
        answer = {kind or "reply": True}
    if events:
        answer["events"] = events
    return answer


async def replayed_answer(session: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Send a recorded request again through the client; its answer in the recorded shape."""
    events: list[Any] = []
    try:
        match request.get("t"):
            case "reset":
                result = await session.reset(request.get("seed"), request.get("options"))
            case "step":
                result = await session.step(request.get("action"), on_event=events.append)
            case "state":
                return {"state": plain(await session.state())}
            case other:
                raise RecordingError(f"cannot replay a {other!r} request")
    except OpenEnvWSError as exc:
        answer: dict[str, Any] = {"error": {"code": exc.code, "path": exc.path}}
    else:
        answer = {
            "observation": plain(result.observation),
            "reward": result.reward,
            "terminated": result.terminated,
            "truncated": result.truncated,
            "info": plain(result.info or {}),
        }
    if events:
        answer["events"] = plain(events)
    return answer


# ---------------------------------------------------------------- one episode


@dataclass
class Exchange:
    """A recorded request with what the server answered then."""

    request: dict[str, Any]
    reply: dict[str, Any] | None
    events: list[Any] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.request.get("t", "?")


def exchanges(episode: Episode) -> tuple[list[Exchange], str | None]:
    """The episode's requests in order, each with its reply and events; and why it ends early, if it does."""
    requests: list[Exchange] = []
    by_seq: dict[int, Exchange] = {}
    seen_events: set[tuple[int, int]] = set()
    ended = None
    for record in episode.frames:
        frame = record.frame
        if record.dir == C2S:
            if record.tag in ("reset", "step", "state") and record.seq not in by_seq:
                by_seq[record.seq] = Exchange(frame, None)
                requests.append(by_seq[record.seq])
            continue
        if record.dir != S2C:
            continue
        exchange = by_seq.get(record.seq)
        if record.seq == 0 and record.tag in ("error", "closed"):
            why = f"{frame.get('code', '')} {frame.get('message') or frame.get('reason')}".strip()
            ended = f"the server ended the session: {why}"
        elif exchange is None or exchange.reply is not None:
            continue  # a reply to close, or a repeat sent after a resume
        elif record.tag == "event":
            if (record.seq, frame.get("index", 0)) not in seen_events:
                seen_events.add((record.seq, frame.get("index", 0)))
                exchange.events.append(frame.get("data"))
        else:
            exchange.reply = frame
    return requests, ended


@dataclass
class Report:
    episode: Episode
    matched: int = 0
    divergence: list[Difference] | None = None
    at: str = ""
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.divergence is None


async def replay_episode(url: str, episode: Episode, env: str, ignore: FieldFilter, **connect_options: Any) -> Report:
    report = Report(episode)
    requests, ended = exchanges(episode)
    steps = 0
    async with connect(url, env, options=episode.header.get("options") or {}, **connect_options) as session:
        for number, exchange in enumerate(requests, 1):
            steps += exchange.kind == "step"
            where = f"request {number} ({exchange.kind}{f' {steps}' if exchange.kind == 'step' else ''}, seq "
            where += f"{exchange.request.get('seq')})"
            if exchange.reply is None:
                report.note = f"the recording ends before the reply to {where}"
                return report
            recorded = recorded_answer(exchange.reply, exchange.events)
            replayed = await replayed_answer(session, exchange.request)
            differences = compare(recorded, replayed, ignore)
            if differences:
                report.divergence, report.at = differences, where
                return report
            report.matched += 1
    if ended:
        report.note = ended
    return report


# ---------------------------------------------------------------- many files


def spec_for(header: dict[str, Any]) -> EnvSpec:
    """The environment a recording names: its registered name, else its recorded import path."""
    name, target = header.get("env", ""), header.get("target")
    registered = builtin_envs().get(name)
    if registered is not None and (target is None or registered == target):
        return resolve(name)
    if target:
        try:
            return resolve(target)
        except UnknownEnvError:
            if registered is None:
                raise
            return resolve(name)  # moved since it was recorded (envs.echo:... is now openenv_ws_envs.echo:...)
    return resolve(name)


def ignored_fields(episode: Episode, spec: EnvSpec | None, extra: Iterable[str]) -> FieldFilter:
    declared = spec.cls.nondeterministic_fields if spec is not None else ()
    return FieldFilter([*episode.header.get("nondeterministic_fields", ()), *declared, *extra])


async def replay_files(
    paths: Sequence[str | Path],
    *,
    url: str | None = None,
    sandbox: str = "inprocess",
    ignore: Iterable[str] = (),
    keep_going: bool = False,
    out: Out = print,
    **connect_options: Any,
) -> int:
    """Replay every episode of ``paths``; 0 if all match, 1 at a divergence, 2 if one cannot run."""
    try:
        episodes = [episode for path in paths for episode in read_episodes(path)]
    except RecordingError as exc:
        out(f"error: {exc}")
        return 2
    specs: dict[int, EnvSpec | None] = {}
    for index, episode in enumerate(episodes):
        try:
            specs[index] = spec_for(episode.header)
        except OpenEnvWSError as exc:
            if url is None:
                out(f"error: {episode.describe()}: {exc.message}")
                return 2
            specs[index] = None  # the server at --url serves it; only the recorded declarations apply
    if url is not None:
        return await _replay_all(url, episodes, specs, ignore, keep_going, out, connect_options)
    from ..server.local import local_config, local_server

    served = list({spec.name: spec for spec in specs.values() if spec is not None}.values())
    async with local_server(served, backend=sandbox, config=local_config()) as local_url:
        return await _replay_all(local_url, episodes, specs, ignore, keep_going, out, connect_options)


async def _replay_all(
    url: str,
    episodes: list[Episode],
    specs: dict[int, EnvSpec | None],
    ignore: Iterable[str],
    keep_going: bool,
    out: Out,
    connect_options: dict[str, Any],
) -> int:
    status = 0
    ignore = list(ignore)
    for index, episode in enumerate(episodes):
        spec = specs[index]
        env = spec.name if spec is not None else episode.env
        fields = ignored_fields(episode, spec, ignore)
        try:
            report = await replay_episode(url, episode, env, fields, **connect_options)
        except OpenEnvWSError as exc:
            out(f"error: {episode.describe()}: {exc}")
            return 2
        if report.ok:
            note = f" ({report.note})" if report.note else ""
            out(f"ok    {episode.describe()}: {report.matched} requests matched{note}")
            continue
        out(f"FAIL  {episode.describe()}: diverged at {report.at}")
        for difference in report.divergence or []:
            out(f"      {difference}")
        status = 1
        if not keep_going:
            break
    return status
