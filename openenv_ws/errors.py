"""The exception hierarchy users catch, and its mapping to and from :class:`Error` frames."""

from __future__ import annotations

from .protocol import Error, ErrorCode


class OpenEnvWSError(Exception):
    """Base of every error this package raises on purpose."""

    code: str = ErrorCode.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        path: str | None = None,
        fatal: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.path = path
        self.fatal = fatal
        self.retry_after = retry_after

    def to_frame(self, seq: int = 0) -> Error:
        return Error(
            seq=seq,
            code=self.code,
            message=self.message,
            path=self.path,
            fatal=self.fatal,
            retry_after=self.retry_after,
        )

    def __str__(self) -> str:
        where = f" (at {self.path})" if self.path else ""
        return f"[{self.code}] {self.message}{where}"


class ProtocolError(OpenEnvWSError):
    """A peer sent something this side cannot understand."""

    code = ErrorCode.MALFORMED_FRAME


class CapacityError(OpenEnvWSError):
    """The server is full (or draining); ``retry_after`` says when to try again."""

    code = ErrorCode.CAPACITY


class UnknownEnvError(OpenEnvWSError):
    code = ErrorCode.UNKNOWN_ENV


class SessionLostError(OpenEnvWSError):
    """The session is gone: it expired, was closed, or could not be resumed."""

    code = ErrorCode.SESSION_NOT_FOUND


class NodeLostError(SessionLostError):
    """The cluster node that held the session stopped answering; the session is given up."""

    code = ErrorCode.NODE_LOST


class ValidationError(OpenEnvWSError, ValueError):
    """An action (or option) did not match the environment's schema; ``path`` names the field."""

    code = ErrorCode.VALIDATION


class EpisodeStateError(OpenEnvWSError):
    """A step before ``reset()`` or after the episode ended."""

    code = ErrorCode.NO_EPISODE


class EnvError(OpenEnvWSError):
    """The environment's own code raised; the session goes on."""

    code = ErrorCode.ENV_ERROR


class SandboxCrashedError(OpenEnvWSError):
    """The sandbox that ran the episode died; the reason says how (signal, out of memory...)."""

    code = ErrorCode.SANDBOX_CRASHED


class OutputLimitError(OpenEnvWSError):
    """A request produced more than the server accepts (events, bytes); the session has ended."""

    code = ErrorCode.OUTPUT_LIMIT


class NotCopyableError(OpenEnvWSError):
    """The environment cannot be forked or checkpointed that way (see ``Environment.state_capture``)."""

    code = ErrorCode.NOT_COPYABLE


class ReplayDivergedError(OpenEnvWSError):
    """Restoring an episode by replay saw a different answer than the recorded one; the message names
    the step and the fields, ``path`` the first of them."""

    code = ErrorCode.REPLAY_DIVERGED


class SandboxLostError(SessionLostError):
    """The server restarted, the session's sandbox did not survive it, and the episode could not be
    restored in a new one (by replay): the message says why."""

    code = ErrorCode.SANDBOX_LOST


class CheckpointError(OpenEnvWSError):
    """No such checkpoint (unknown, expired, unreadable, or of an environment this server does not serve)."""

    code = ErrorCode.CHECKPOINT_NOT_FOUND


class SandboxStartError(OpenEnvWSError):
    code = ErrorCode.SANDBOX_START_FAILED


class AuthError(OpenEnvWSError):
    """The server wants a token (``Authorization: Bearer ...``) and got none or a wrong one."""

    code = ErrorCode.UNAUTHORIZED


class ForbiddenError(AuthError):
    """The token is valid, but its scope does not allow this (an observer opening a session, a trainer
    acting on another trainer's session): retrying with the same token cannot help."""

    code = ErrorCode.FORBIDDEN


class RequestTimeoutError(OpenEnvWSError, TimeoutError):
    """A request took longer than its deadline."""

    code = ErrorCode.TIMEOUT


_BY_CODE: dict[str, type[OpenEnvWSError]] = {
    ErrorCode.MALFORMED_FRAME: ProtocolError,
    ErrorCode.FRAME_TOO_LARGE: ProtocolError,
    ErrorCode.UNSUPPORTED_VERSION: ProtocolError,
    ErrorCode.UNEXPECTED_FRAME: ProtocolError,
    ErrorCode.STALE_SEQ: ProtocolError,
    ErrorCode.UNKNOWN_ENV: UnknownEnvError,
    ErrorCode.BAD_OPTIONS: ValidationError,
    ErrorCode.CAPACITY: CapacityError,
    ErrorCode.SHUTTING_DOWN: CapacityError,
    ErrorCode.QUEUE_FULL: CapacityError,
    ErrorCode.SESSION_NOT_FOUND: SessionLostError,
    ErrorCode.SESSION_CLOSED: SessionLostError,
    ErrorCode.NODE_LOST: NodeLostError,
    ErrorCode.VALIDATION: ValidationError,
    ErrorCode.NO_EPISODE: EpisodeStateError,
    ErrorCode.EPISODE_ENDED: EpisodeStateError,
    ErrorCode.ENV_ERROR: EnvError,
    ErrorCode.SANDBOX_CRASHED: SandboxCrashedError,
    ErrorCode.SANDBOX_START_FAILED: SandboxStartError,
    ErrorCode.TIMEOUT: RequestTimeoutError,
    ErrorCode.OUTPUT_LIMIT: OutputLimitError,
    ErrorCode.NOT_COPYABLE: NotCopyableError,
    ErrorCode.REPLAY_DIVERGED: ReplayDivergedError,
    ErrorCode.CHECKPOINT_NOT_FOUND: CheckpointError,
    ErrorCode.SANDBOX_LOST: SandboxLostError,
    ErrorCode.UNAUTHORIZED: AuthError,
    ErrorCode.FORBIDDEN: ForbiddenError,
}


def from_frame(frame: Error) -> OpenEnvWSError:
    """The exception a client raises for an :class:`Error` frame."""
    cls = _BY_CODE.get(frame.code, OpenEnvWSError)
    return cls(
        frame.message,
        code=frame.code,
        path=frame.path,
        fatal=frame.fatal,
        retry_after=frame.retry_after,
    )
