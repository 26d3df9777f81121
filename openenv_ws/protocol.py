"""The wire protocol: frames, their encodings and error codes.

Pure on purpose: no I/O and no event loop, so every layer (server, client, sandbox
worker) shares one definition and it can be tested without sockets.

Frames are msgspec Structs in two tagged unions (client -> server, server -> client),
tagged by the field ``t``. MessagePack in binary WebSocket frames is the canonical
encoding; JSON in text frames is accepted at the edge and converted (see
:func:`json_to_msgpack`). Payloads that the server only relays (actions,
observations, infos, states, event data) are :class:`msgspec.Raw`: they stay encoded
bytes from the sandbox to the socket.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

PROTOCOL_VERSION = 1

MCP_PATH = "/v1/sessions/{session_id}/mcp"
"""Where a session's tools are served over MCP (streamable HTTP)."""
RESUME_TOKEN_HEADER = "X-Resume-Token"
"""The HTTP header that carries a session's own credential, its resume token (MCP, watching, OpenEnv's HTTP)."""

Raw = msgspec.Raw

NIL = Raw(b"\xc0")
"""MessagePack ``nil``: the payload of a frame that carries nothing."""


class Frame(msgspec.Struct, tag_field="t", kw_only=True, omit_defaults=True):
    """Base of every frame. ``seq`` is the client's request number the frame belongs to."""

    seq: int = 0


# ---------------------------------------------------------------- client -> server


class Open(Frame, tag="open"):
    """Start a session (``env`` + ``options``) or resume one (``session_id`` + ``resume_token``).

    ``last_seen`` is the highest sequence number whose final reply the client holds; the
    server may forget replies up to it.

    ``open_key`` makes opening exactly-once: a client whose connection dropped before it got
    ``opened`` sends the same ``open`` again (same key) and lands on the same session and
    sandbox, never a second one.
    """

    version: int = PROTOCOL_VERSION
    env: str | None = None
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    session_id: str | None = None
    resume_token: str | None = None
    last_seen: int = 0
    open_key: str | None = None
    checkpoint: str | None = None
    """Open a new session from this checkpoint (see :class:`Checkpoint`) instead of a fresh episode."""


class Reset(Frame, tag="reset"):
    seed: int | None = None
    options: dict[str, Any] | None = None


class Step(Frame, tag="step"):
    action: Raw


class GetState(Frame, tag="state"):
    pass


class Close(Frame, tag="close"):
    pass


class Ping(Frame, tag="ping"):
    pass


class Fork(Frame, tag="fork"):
    """Copy this episode into ``count`` new sessions, each in a sandbox of its own, as it was after
    step ``at_step`` (None: now). Answered by :class:`Forked`; numbered and applied once like a step,
    so a repeated fork makes no second set of children."""

    at_step: int | None = None
    count: int = 1


class Checkpoint(Frame, tag="checkpoint"):
    """Save this episode as it is now; answered by :class:`Checkpointed` with the checkpoint's id."""


ClientFrame = Open | Reset | Step | GetState | Close | Ping | Fork | Checkpoint
Request = Reset | Step | GetState | Close | Fork | Checkpoint
"""The frames that are numbered, applied once, and answered from the reply cache."""

# ---------------------------------------------------------------- server -> client


class Opened(Frame, tag="opened"):
    """The session is open. ``tools``: the environment's tools (name, description, input_schema), when it has any."""

    session_id: str
    resume_token: str
    env: str
    backend: str = ""
    action_schema: Raw = msgspec.field(default_factory=lambda: NIL)
    observation_schema: Raw = msgspec.field(default_factory=lambda: NIL)
    resumed: bool = False
    last_applied: int = 0
    version: int = PROTOCOL_VERSION
    tools: Raw = NIL  # a plain default (not a factory): omitted from the frame when there are no tools


class Event(Frame, tag="event"):
    """Output streamed during a request, before its final reply. ``index`` counts from 0."""

    index: int
    data: Raw


class Result(Frame, tag="result"):
    observation: Raw
    reward: float | None = None
    terminated: bool = False
    truncated: bool = False
    info: Raw = msgspec.field(default_factory=lambda: NIL)


class StateReply(Frame, tag="state"):
    state: Raw


class Error(Frame, tag="error"):
    code: str
    message: str
    path: str | None = None
    fatal: bool = False
    retry_after: float | None = None


class Closed(Frame, tag="closed"):
    reason: str


class Pong(Frame, tag="pong"):
    pass


class ForkedSession(msgspec.Struct, kw_only=True):
    session_id: str
    resume_token: str


class Forked(Frame, tag="forked"):
    """The children of a :class:`Fork`: each a session waiting (``resume_grace``) for its client to
    resume it with its id and token. ``method``: ``snapshot`` or ``replay``."""

    sessions: list[ForkedSession]
    method: str
    step: int


class Checkpointed(Frame, tag="checkpointed"):
    checkpoint_id: str
    method: str
    step: int


ServerFrame = Opened | Event | Result | StateReply | Error | Closed | Pong | Forked | Checkpointed
Reply = Result | StateReply | Error | Closed | Forked | Checkpointed

# ---------------------------------------------------------------- server <-> sandbox only
#
# A sandbox's worker also takes these, never a client: a snapshot is the environment's private
# state (a hidden answer, a grader's secret), so it travels only between server and sandbox.


class TakeSnapshot(Frame, tag="take_snapshot"):
    pass


class RestoreSnapshot(Frame, tag="restore_snapshot"):
    data: bytes
    phase: str


class Snapshotted(Frame, tag="snapshotted"):
    data: bytes
    phase: str
    """The episode's phase: ``new``, ``running`` or ``ended``."""


SandboxRequest = Request | TakeSnapshot | RestoreSnapshot
SandboxReply = Reply | Snapshotted
"""The frames that end a request."""


class ErrorCode:
    """Codes carried by :class:`Error` frames. Strings, so they read well in JSON too."""

    MALFORMED_FRAME = "malformed_frame"
    FRAME_TOO_LARGE = "frame_too_large"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNEXPECTED_FRAME = "unexpected_frame"
    UNKNOWN_ENV = "unknown_env"
    BAD_OPTIONS = "bad_options"
    CAPACITY = "capacity"
    SHUTTING_DOWN = "shutting_down"
    SESSION_NOT_FOUND = "session_not_found"
    SESSION_CLOSED = "session_closed"
    NODE_LOST = "node_lost"
    QUEUE_FULL = "queue_full"
    STALE_SEQ = "stale_seq"
    VALIDATION = "validation"
    NO_EPISODE = "no_episode"
    EPISODE_ENDED = "episode_ended"
    ENV_ERROR = "env_error"
    SANDBOX_CRASHED = "sandbox_crashed"
    SANDBOX_START_FAILED = "sandbox_start_failed"
    TIMEOUT = "timeout"
    OUTPUT_LIMIT = "output_limit"
    NOT_COPYABLE = "not_copyable"
    REPLAY_DIVERGED = "replay_diverged"
    CHECKPOINT_NOT_FOUND = "checkpoint_not_found"
    SANDBOX_LOST = "sandbox_lost"
    """The session's sandbox did not survive a server restart and the episode could not be replayed."""
    UNAUTHORIZED = "unauthorized"
    INTERNAL = "internal"
    # Access and HTTP answers (per-session authorization, routes): see docs/operations.md.
    FORBIDDEN = "forbidden"
    """The token is valid, but its scope or identity does not allow this (another trainer's session...)."""
    NOT_FOUND = "not_found"
    """No such HTTP route."""
    METHOD_NOT_ALLOWED = "method_not_allowed"
    """The HTTP route exists, for other methods."""


class ProtocolViolation(Exception):
    """Raised by the decoders for bytes that are not a valid frame.

    The decoders turn *every* failure of decoding into this one exception (msgspec's errors,
    and also nesting too deep to decode, integers out of range, bad UTF-8), so that bad
    input gets a typed answer and never escapes as a traceback.
    """


# ---------------------------------------------------------------- codecs

_encoder = msgspec.msgpack.Encoder()
_client_decoder = msgspec.msgpack.Decoder(ClientFrame)
_server_decoder = msgspec.msgpack.Decoder(ServerFrame)
_to_sandbox_decoder = msgspec.msgpack.Decoder(Open | Ping | SandboxRequest)
_from_sandbox_decoder = msgspec.msgpack.Decoder(ServerFrame | Snapshotted)
_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()
_any_decoder = msgspec.msgpack.Decoder()


def encode(frame: Frame) -> bytes:
    return _encoder.encode(frame)


def pack(value: Any) -> Raw:
    """Encode any value (Struct, dict, list, scalar) as a MessagePack payload."""
    return Raw(_encoder.encode(value))


def unpack(raw: Raw | bytes | None, type: Any = Any) -> Any:
    """Decode a MessagePack payload, optionally into a typed Struct."""
    if raw is None:
        return None
    return msgspec.msgpack.decode(raw, type=type)


def _why(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, OverflowError):
        return f"a number out of range ({exc})"
    return str(exc)


def decode_client(data: bytes) -> ClientFrame:
    try:
        return _client_decoder.decode(data)
    except Exception as exc:
        raise ProtocolViolation(_why(exc)) from None


def decode_server(data: bytes) -> ServerFrame:
    try:
        return _server_decoder.decode(data)
    except Exception as exc:
        raise ProtocolViolation(_why(exc)) from None


def decode_to_sandbox(data: bytes) -> Open | Ping | SandboxRequest:
    """What a sandbox's worker reads: a client's requests, and the server's own."""
    try:
        return _to_sandbox_decoder.decode(data)
    except Exception as exc:
        raise ProtocolViolation(_why(exc)) from None


def decode_from_sandbox(data: bytes) -> ServerFrame | Snapshotted:
    try:
        return _from_sandbox_decoder.decode(data)
    except Exception as exc:
        raise ProtocolViolation(_why(exc)) from None


def json_to_msgpack(text: str | bytes) -> bytes:
    """Turn a JSON frame into the canonical MessagePack form (payloads included)."""
    try:
        return _encoder.encode(_json_decoder.decode(text))
    except Exception as exc:
        raise ProtocolViolation(f"invalid JSON: {_why(exc)}") from None


def json_value(data: bytes | str) -> Any:
    """Any JSON value (an HTTP body, an OpenEnv message); every failure becomes :class:`ProtocolViolation`."""
    try:
        return _json_decoder.decode(data)
    except Exception as exc:
        raise ProtocolViolation(f"invalid JSON: {_why(exc)}") from None


def msgpack_to_json(data: bytes) -> str:
    """Turn a canonical MessagePack frame into a JSON text frame."""
    return _json_encoder.encode(_any_decoder.decode(data)).decode()


_PATH = re.compile(r" - at `(\$[^`]*)`$")


def split_validation_error(exc: msgspec.ValidationError) -> tuple[str, str | None]:
    """Split msgspec's message into (message, field path), e.g. ("Expected `str`...", "$.message")."""
    text = str(exc)
    match = _PATH.search(text)
    if match is None:
        return text, None
    return text[: match.start()], match.group(1)


def guess_seq(data: bytes | str) -> int:
    """Best-effort ``seq`` of a frame that failed to decode, so its error can name it."""
    try:
        value = (_json_decoder if isinstance(data, str) else _any_decoder).decode(data)
    except Exception:
        return 0
    seq = value.get("seq") if isinstance(value, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < 1 << 63 else 0


# ---------------------------------------------------------------- multiplexed batches
#
# On a multiplexed connection (``/v1/mux``) every WebSocket message is a MessagePack
# array of ``[channel, frame]`` pairs: the channel names the session on that connection,
# the frame is an ordinary frame. One message carries whatever was ready in one loop
# turn, for any number of sessions: per-message costs are paid once per batch.

_batch_decoder = msgspec.msgpack.Decoder(list[tuple[int, Raw]])


def encode_batch(items: list[tuple[int, bytes]]) -> bytes:
    """Frame bytes already encoded are spliced in, not re-encoded."""
    n = len(items)
    if n < 16:
        head = bytes([0x90 | n])
    elif n < 1 << 16:
        head = b"\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\xdd" + n.to_bytes(4, "big")
    parts = [head]
    for channel, data in items:
        parts.append(b"\x92")
        parts.append(_encoder.encode(channel))
        parts.append(data)
    return b"".join(parts)


def decode_batch(data: bytes) -> list[tuple[int, Raw]]:
    """Split a batch into (channel, frame bytes); each frame is decoded on its own."""
    try:
        return _batch_decoder.decode(data)
    except Exception as exc:
        raise ProtocolViolation(f"malformed batch: {_why(exc)}") from None
