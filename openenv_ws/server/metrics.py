"""Prometheus metrics (``GET /metrics``), in the text exposition format, written by hand.

The step path only adds to plain integers (a dict increment, a bisect into the latency
buckets); what can be read when scraped is read then, from a :class:`ServerSnapshot` the
session manager takes: sessions by state, the backend's own numbers (containers, warm
pools) from its ``describe()``, and the process's memory and files. With metrics off the
server holds a :class:`NullMetrics`, whose methods do nothing: no ``None`` checks anywhere.
"""

from __future__ import annotations

import os
import resource
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..protocol import Checkpoint, Close, Error, ErrorCode, Fork, GetState, Request, Reset, Result, Step
from ..record import WRITER
from ..version import __version__

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
START_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
POOL_COUNTERS = {"hit": "hits", "miss": "misses", "refill": "refills", "discard": "discarded"}
"""Warm pool events (``openenv_ws.sandbox.base.POOL_EVENTS``) and the counter each one adds to."""

_KIND: dict[type, str] = {
    Reset: "reset",
    Step: "step",
    GetState: "state",
    Close: "close",
    Fork: "fork",
    Checkpoint: "checkpoint",
}


class Histogram:
    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def samples(self, name: str, labels: str = "") -> Iterator[str]:
        """``labels``: ``key="value",`` pairs (with the trailing comma) put before ``le``."""
        cumulative = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            cumulative += count
            yield f'{name}_bucket{{{labels}le="{bound:g}"}} {cumulative}'
        yield f'{name}_bucket{{{labels}le="+Inf"}} {self.count}'
        own = "{" + labels.rstrip(",") + "}" if labels else ""
        yield f"{name}_sum{own} {self.sum:.6f}"
        yield f"{name}_count{own} {self.count}"


@dataclass(slots=True)
class ServerSnapshot:
    """What a scrape reads from the server at that moment (taken by the session manager)."""

    backend: dict[str, Any]
    """The backend's ``describe()``: its name, and numbers such as containers and pools."""
    max_sessions: int
    opening: int = 0
    sessions: dict[str, int] = field(default_factory=dict)
    """Sessions held, by shown state (active, busy, detached)."""
    watchers: int = 0
    watch_dropped: int = 0
    """Frames dropped for the watchers alive now (those gone are counted in the metrics)."""


ExtraMetric = tuple[str, str, str, "float | list[tuple[dict[str, str], float]]"]
"""``(name, kind, help, value)`` from an extension: one number, or ``(labels, number)`` samples;
exposed as ``openenv_ws_<name>``."""


class Metrics:
    """The server's counters: plain numbers, added to by the methods below on the hot paths."""

    enabled = True

    def __init__(self) -> None:
        self.started = time.time()
        self.requests = dict.fromkeys(_KIND.values(), 0)
        self.steps = 0
        self.errors: dict[str, int] = {}
        self.step_seconds = Histogram(STEP_BUCKETS)
        self.sessions_opened = 0
        self.sessions_closed = 0
        self.resumes = 0
        self.capacity_rejections = 0
        self.sandbox_starts = 0
        self.sandbox_start_failures = 0
        self.sandbox_start_seconds = Histogram(START_BUCKETS)
        self.stage_seconds: dict[str, Histogram] = {}
        """Seconds of each stage of a sandbox start (``openenv_ws.sandbox.base.START_STAGES``)."""
        self.pool_events: dict[tuple[str, str], int] = {}
        """(env, event) -> count, for the warm pools."""
        self.sandbox_crashes = 0
        self.watch_dropped = 0
        self.auth_failures = 0
        self.connections = {"session": 0, "mux": 0}
        self.access_denials = 0
        self.sources: list[Callable[[], Iterable[ExtraMetric]]] = []
        """Metrics of extensions (e.g. the cluster view), read when scraped."""

    def applied(self, frame: Request, reply: Any, seconds: float) -> None:
        """One request answered (called on the step path)."""
        kind = _KIND[type(frame)]
        self.requests[kind] += 1
        if kind == "step":
            self.step_seconds.observe(seconds)
            if type(reply) is Result:
                self.steps += 1
        if type(reply) is Error:
            self.error(reply.code)

    def error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1
        if code == ErrorCode.SANDBOX_CRASHED:
            self.sandbox_crashes += 1

    def sandbox_started(self, seconds: float) -> None:
        self.sandbox_starts += 1
        self.sandbox_start_seconds.observe(seconds)

    def sandbox_start_failed(self) -> None:
        self.sandbox_start_failures += 1

    def stage(self, stage: str, seconds: float) -> None:
        """One stage of a sandbox start took ``seconds`` (the backend's ``StartTimings``)."""
        histogram = self.stage_seconds.get(stage)
        if histogram is None:
            histogram = self.stage_seconds[stage] = Histogram(STAGE_BUCKETS)
        histogram.observe(seconds)

    def pool_event(self, env: str, event: str) -> None:
        self.pool_events[env, event] = self.pool_events.get((env, event), 0) + 1

    def session_opened(self) -> None:
        self.sessions_opened += 1

    def session_closed(self) -> None:
        self.sessions_closed += 1

    def resumed(self) -> None:
        self.resumes += 1

    def capacity_rejected(self) -> None:
        self.capacity_rejections += 1

    def auth_failed(self) -> None:
        self.auth_failures += 1

    def connection_accepted(self, kind: str) -> None:
        self.connections[kind] += 1

    def access_denied(self) -> None:
        self.access_denials += 1

    def watcher_gone(self, dropped: int) -> None:
        self.watch_dropped += dropped

    def render(self, snapshot: ServerSnapshot) -> str:
        return "\n".join(self._lines(snapshot)) + "\n"

    def _lines(self, snapshot: ServerSnapshot) -> Iterator[str]:
        by_state = {"active": 0, "busy": 0, "detached": 0, **snapshot.sessions}
        watchers, dropped = snapshot.watchers, snapshot.watch_dropped
        backend_name = str(snapshot.backend.get("name", "?"))
        info = [(_labels(version=__version__, backend=backend_name), 1)]
        table: list[tuple[str, str, str, float | list[Sample]]] = [
            ("info", "gauge", "Version and sandbox backend of this server.", info),
            ("sessions", "gauge", "Sessions held now, by state.", [(_labels(state=k), v) for k, v in by_state.items()]),
            ("sessions_opening", "gauge", "Sessions whose sandbox is starting.", snapshot.opening),
            ("sessions_max", "gauge", "Sessions the server holds at most.", snapshot.max_sessions),
            ("sessions_opened_total", "counter", "Sessions opened.", self.sessions_opened),
            ("sessions_closed_total", "counter", "Sessions ended, for any reason.", self.sessions_closed),
            ("resumes_total", "counter", "Sessions resumed on a new connection.", self.resumes),
            (
                "connections_total",
                "counter",
                "WebSocket connections accepted, by kind (more than sessions: clients reconnected).",
                _by("kind", self.connections),
            ),
            ("capacity_rejections_total", "counter", "Opens refused at capacity.", self.capacity_rejections),
            ("requests_total", "counter", "Requests applied, by kind.", _by("kind", self.requests)),
            ("steps_total", "counter", "Steps that returned a result.", self.steps),
            ("errors_total", "counter", "Error replies, by code.", _by("code", self.errors)),
            ("sandbox_starts_total", "counter", "Sandboxes started.", self.sandbox_starts),
            (
                "sandbox_start_failures_total",
                "counter",
                "Sandboxes (or envs) that failed to start.",
                self.sandbox_start_failures,
            ),
            ("sandbox_crashes_total", "counter", "Sandboxes that died under a session.", self.sandbox_crashes),
            ("watchers", "gauge", "Live session watchers (inspector --follow).", watchers),
            ("watch_dropped_total", "counter", "Frames dropped for slow watchers.", self.watch_dropped + dropped),
            ("recorded_lines_total", "counter", "Recording lines written.", WRITER.lines),
            ("recording_errors_total", "counter", "Recording files that failed.", WRITER.errors),
            ("recorded_bytes_total", "counter", "Recording bytes written.", WRITER.bytes),
            ("recordings_cut_total", "counter", "Recording files stopped at the disk budget.", WRITER.cut),
            ("auth_failures_total", "counter", "Requests refused: missing or wrong token.", self.auth_failures),
            ("access_denied_total", "counter", "Requests refused: the token's scope or identity.", self.access_denials),
        ]
        for name, kind, help_text, value in table:
            yield from _metric("openenv_ws_" + name, kind, help_text, value)
        yield from _histogram("openenv_ws_step_seconds", "Time to apply one step in its sandbox.", self.step_seconds)
        yield from _histogram(
            "openenv_ws_sandbox_start_seconds",
            "From asking for a sandbox to its env being ready.",
            self.sandbox_start_seconds,
        )
        name = "openenv_ws_sandbox_start_stage_seconds"
        yield f"# HELP {name} Each stage of a sandbox start (openenv_ws.sandbox.base.START_STAGES)."
        yield f"# TYPE {name} histogram"
        for stage, histogram in sorted(self.stage_seconds.items()):
            yield from histogram.samples(name, f'stage="{stage}",')
        for event, counter in POOL_COUNTERS.items():
            samples = [(_labels(env=env), n) for (env, kind), n in sorted(self.pool_events.items()) if kind == event]
            yield from _metric(f"openenv_ws_pool_{counter}_total", "counter", f"Warm pool {event} events.", samples)
        yield from _backend_lines(snapshot.backend)
        for source in self.sources:
            for name, kind, help_text, value in source():
                samples = value if isinstance(value, int | float) else [(_labels(**k), v) for k, v in value]
                yield from _metric("openenv_ws_" + name, kind, help_text, samples)
        yield from _process_lines(self.started)


class NullMetrics(Metrics):
    """Metrics switched off (``serve --no-metrics``): every count is dropped."""

    enabled = False

    def applied(self, frame: Request, reply: Any, seconds: float) -> None:
        pass

    def error(self, code: str) -> None:
        pass

    def sandbox_started(self, seconds: float) -> None:
        pass

    def sandbox_start_failed(self) -> None:
        pass

    def stage(self, stage: str, seconds: float) -> None:
        pass

    def pool_event(self, env: str, event: str) -> None:
        pass

    def session_opened(self) -> None:
        pass

    def session_closed(self) -> None:
        pass

    def resumed(self) -> None:
        pass

    def capacity_rejected(self) -> None:
        pass

    def auth_failed(self) -> None:
        pass

    def connection_accepted(self, kind: str) -> None:
        pass

    def access_denied(self) -> None:
        pass

    def watcher_gone(self, dropped: int) -> None:
        pass


Sample = tuple[str, float]


def _labels(**labels: str) -> str:
    def escape(value: str) -> str:
        return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def _by(label: str, counts: dict[str, int]) -> list[Sample]:
    return [(_labels(**{label: k}), v) for k, v in sorted(counts.items())]


def _histogram(name: str, help_text: str, histogram: Histogram) -> Iterator[str]:
    yield f"# HELP {name} {help_text}"
    yield f"# TYPE {name} histogram"
    yield from histogram.samples(name)


def _metric(name: str, kind: str, help_text: str, value: float | Iterable[Sample]) -> Iterator[str]:
    yield f"# HELP {name} {help_text}"
    yield f"# TYPE {name} {kind}"
    samples = [("", value)] if isinstance(value, int | float) else value
    for labels, number in samples:
        yield f"{name}{labels} {_number(number)}"


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _backend_lines(description: dict[str, Any]) -> Iterator[str]:
    """The backend's numbers: ``openenv_ws_backend_<key>``, and ``openenv_ws_pool_<key>{env=...}`` per warm pool."""
    name = str(description.get("name", "?"))
    for key, value in description.items():
        if _is_number(value):
            help_text = f"{key}, as the backend describes itself."
            yield from _metric(f"openenv_ws_backend_{key}", "gauge", help_text, [(_labels(backend=name), value)])
    pools = description.get("pools")
    if isinstance(pools, dict):
        dicts = [pool for pool in pools.values() if isinstance(pool, dict)]
        keys = sorted({key for pool in dicts for key, value in pool.items() if _is_number(value)})
        for key in keys:
            samples = [
                (_labels(env=env), pool[key])
                for env, pool in pools.items()
                if isinstance(pool, dict) and _is_number(pool.get(key))
            ]
            yield from _metric(f"openenv_ws_pool_{key}", "gauge", f"Warm pool: {key}, per environment.", samples)


def _process_lines(started: float) -> Iterator[str]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    yield from _metric(
        "process_cpu_seconds_total", "counter", "User and system CPU time.", usage.ru_utime + usage.ru_stime
    )
    yield from _metric("process_resident_memory_bytes", "gauge", "Resident memory.", _rss_bytes())
    try:
        open_fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        open_fds = 0
    yield from _metric("process_open_fds", "gauge", "Open file descriptors.", open_fds)
    yield from _metric("process_start_time_seconds", "gauge", "When the server started (unix time).", started)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
