"""Server limits and timings. Every bound the server enforces is named here."""

from __future__ import annotations

from dataclasses import dataclass

from .identity import TokenGrant

DEFAULT_STEP_TIMEOUT = 600.0
"""Seconds a request may take when neither the server nor the environment says otherwise."""


@dataclass
class ServerConfig:
    max_sessions: int = 1024
    """Sessions held at once (detached ones count); beyond it opens get a capacity error."""
    idle_timeout: float = 300.0
    """A session with no request for this long is closed."""
    openenv_ws_idle_timeout: float | None = None
    """OpenEnv's ``/ws`` sessions: None (default) closes them after ``idle_timeout`` like ours, and
    keeps the socket open so that the client's next request is told its episode is gone (OpenEnv's
    client would otherwise reconnect silently into a new session); 0 never closes them while their
    socket is open (OpenEnv's own behaviour: no idle timeout); a number, that many seconds."""
    resume_grace: float = 60.0
    """A session whose connection dropped waits this long for the client to resume."""
    max_frame_bytes: int = 1 << 20
    """Largest frame accepted; larger ones get a ``frame_too_large`` error."""
    step_timeout: float | None = None
    """Deadline of one reset/step/state; past it the sandbox is stopped and the client gets a
    ``timeout`` error (the session ends). None: the environment's own ``step_timeout``, else
    ``DEFAULT_STEP_TIMEOUT``."""
    max_queue: int = 8
    """Requests of one session waiting behind the one being applied. On a plain session socket it also
    bounds the messages read while a request runs (``max_queue + 1``); past it the server stops reading
    that socket until the request ends, so a client sending meanwhile is held back by TCP."""
    reply_cache: int = 8
    """Answered requests per session kept for repeats after a resume."""
    reply_cache_bytes: int = 16 << 20
    """Bytes of frames one session keeps for repeats; past it, older replies go first and a
    request's further events are sent live only (its reply is always kept)."""
    max_events_per_request: int = 100_000
    """Events one request may stream; more ends the session (``output_limit``, the sandbox stopped)."""
    max_event_bytes_per_request: int = 256 << 20
    """Bytes of events one request may stream; more ends the session the same way."""
    max_sandbox_frame_bytes: int = 64 << 20
    """Largest frame a sandbox worker may send the server; a larger one is a crashed sandbox."""
    max_mux_buffer_bytes: int = 32 << 20
    """Bytes queued for a multiplexed connection that does not read; past it the connection is
    closed (1013) and its sessions wait, detached, for their client to resume them."""
    max_history_bytes: int = 4 << 20
    """Bytes of an episode's reset and steps a session keeps so the episode can be copied by replay
    (fork, checkpoint); a longer episode can be copied only by snapshot until its next reset."""
    max_forks: int = 64
    """Children one fork request may ask for."""
    checkpoint_dir: str | None = None
    """Where checkpoints are kept (None: checkpoints are off). Servers that share it share checkpoints."""
    max_checkpoint_bytes: int = 64 << 20
    """Largest checkpoint file; a larger one is refused (``not_copyable``)."""
    checkpoint_ttl: float = 7 * 24 * 3600.0
    """Seconds a checkpoint is kept; older ones are refused and removed."""
    max_sessions_per_connection: int = 8192
    """Sessions (channels) one multiplexed connection may hold; more get a capacity error."""
    max_starting: int = 16
    """Sandboxes starting at once; later opens wait in order."""
    start_wait: float = 60.0
    """How long an open may wait for a starting slot before a capacity error."""
    open_timeout: float = 10.0
    """How long a new connection has to send its ``open`` frame."""
    ws_ping_interval: float = 20.0
    """Seconds between the server's keepalive pings on a WebSocket (0: none)."""
    ws_ping_timeout: float = 60.0
    """How long a pong may take before the connection counts as dead. Generous on purpose: a
    trainer running thousands of sessions in one loop answers late when it is busy, and a
    dropped connection costs a resume; a dead peer is still found within interval + timeout."""
    state_dir: str | None = None
    """Keep what the sessions need to survive a restart here (``serve --state-dir``; docs/operations.md)."""
    handoff: bool = False
    """On SIGTERM, hand the sessions (and their sandboxes) to the next server on ``state_dir`` instead
    of closing them (``serve --handoff``)."""
    adopt_grace: float = 300.0
    """With ``state_dir``: seconds a sandbox whose server is gone waits for the next one (Docker), then ends."""
    drain_timeout: float = 30.0
    """On shutdown, how long in-flight requests may take to finish."""
    drain_sessions: float = 0.0
    """On shutdown, how long open sessions may go on (new ones are refused) before they are handed back.

    Episodes that end within it are not cut; ``/healthz`` says ``draining`` meanwhile, so clients
    of a cluster place new sessions elsewhere. A rolling update sets it (docs/swarm.md)."""
    node: str | None = None
    """The cluster node this server runs on: session ids name it, and resumes of ids naming
    another node are refused with the owner's name. None outside a cluster."""
    retry_after: float = 1.0
    """What a capacity error suggests as the wait before trying again."""
    reap_interval: float = 1.0
    # ---- operator tooling (recording, inspector, metrics, auth)
    record_dir: str | None = None
    """Record every episode into this directory, one JSON-lines file each (docs/recording.md)."""
    token: str | None = None
    """Require ``Authorization: Bearer <token>`` on every route but ``/healthz`` (an operator's token)."""
    metrics: bool = True
    """Count requests, latencies and starts for ``GET /metrics`` (plain integers on the step path)."""
    watch_buffer: int = 1024
    """Frames queued for one session watcher; a slower watcher loses frames (counted), never the session."""
    # ---- access and client limits (issue #12: scopes, HTTP bodies, per-client caps, recording disk)
    tokens: tuple[TokenGrant, ...] = ()
    """More bearer tokens, each with a scope and a name (``serve --token-file``); ``token`` is one more."""
    max_body_bytes: int = 1 << 20
    """Largest HTTP request body on any route; a larger one gets 413 before more of it is read."""
    max_sessions_per_client: int | None = None
    """Sessions one client holds at once (a client: a token's name, or an IP address on a server without
    tokens); beyond it opens get a capacity error. None: only ``max_sessions`` bounds them."""
    max_watchers: int = 4
    """Live watchers (``/v1/sessions/{id}/watch``) of one session; more are refused with a capacity error."""
    record_max_bytes: int | None = 10 << 30
    """Disk the recordings in ``record_dir`` may use, files already there included; past it recording
    stops (logged once, counted) and the sessions go on. None or 0: no bound."""
