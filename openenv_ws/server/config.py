"""Server limits and timings. Every bound the server enforces is named here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServerConfig:
    max_sessions: int = 1024
    """Sessions held at once (detached ones count); beyond it opens get a capacity error."""
    idle_timeout: float = 300.0
    """A session with no request for this long is closed."""
    resume_grace: float = 60.0
    """A session whose connection dropped waits this long for the client to resume."""
    max_frame_bytes: int = 1 << 20
    """Largest frame accepted; larger ones get a ``frame_too_large`` error."""
    step_timeout: float | None = None
    """Deadline of one reset/step/state; past it the sandbox is stopped and the session ends."""
    max_queue: int = 8
    """Requests of one session waiting behind the one being applied."""
    reply_cache: int = 8
    """Answered requests per session kept for repeats after a resume."""
    max_starting: int = 16
    """Sandboxes starting at once; later opens wait in order."""
    start_wait: float = 60.0
    """How long an open may wait for a starting slot before a capacity error."""
    open_timeout: float = 10.0
    """How long a new connection has to send its ``open`` frame."""
    drain_timeout: float = 30.0
    """On shutdown, how long in-flight requests may take to finish."""
    retry_after: float = 1.0
    """What a capacity error suggests as the wait before trying again."""
    reap_interval: float = 1.0
    # ---- operator tooling (recording, inspector, metrics, auth)
    record_dir: str | None = None
    """Record every episode into this directory, one JSON-lines file each (docs/recording.md)."""
    token: str | None = None
    """Require ``Authorization: Bearer <token>`` on every route but ``/healthz``."""
    metrics: bool = True
    """Count requests, latencies and starts for ``GET /metrics`` (plain integers on the step path)."""
    watch_buffer: int = 1024
    """Frames queued for one session watcher; a slower watcher loses frames (counted), never the session."""
