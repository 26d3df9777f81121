"""Who may reach which session, and how many sessions one client may hold.

Every session belongs to the client that opened it (``Session.owner``): the name of the
caller's token (:mod:`openenv_ws.server.identity`), or its IP address on a server without
tokens. Then:

- opening needs a scope that opens sessions (operator, trainer), and a client holds at most
  ``max_sessions_per_client`` sessions at once (a ``capacity`` error with ``retry_after``):
  every live session it owns counts, forks included (a fork's children belong to the owner of
  the episode). An ``open`` repeated with its ``open_key`` (exactly-once open) opens nothing
  new and is not counted again, and one identity's keys are kept apart from another's;
- resuming needs the session's resume token (checked by the session manager) *and* the owner's
  identity or the operator scope: a resume token that leaked to another trainer does not hand
  it the session (``forbidden``);
- listing and watching need the owner's identity, a scope that sees every session (operator,
  observer) or the session's resume token (``X-Resume-Token``);
- OpenEnv's HTTP routes on a session need the owner's identity, the operator scope, or the
  session's resume token.

On a server without tokens every caller is an operator, so all of this reduces to the
per-client cap (by IP address). Every adapter (the session socket, ``/v1/mux``, OpenEnv's
``/ws`` and ``/reset``) opens sessions through :func:`open_as` only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from starlette.requests import HTTPConnection

from ..errors import CapacityError, ForbiddenError
from ..protocol import RESUME_TOKEN_HEADER, Open  # a session's own credential (also its MCP endpoint's)
from .identity import ANONYMOUS, identity_of
from .sessions import Session, SessionManager
from .sink import FrameSink


def client_of(connection: HTTPConnection) -> str:
    """Who owns what this caller opens: its token's name, or its IP address on a server without tokens."""
    identity = identity_of(connection.scope)
    if identity is not ANONYMOUS:
        return identity.name
    return connection.client.host if connection.client else "?"


def holds_credential(connection: HTTPConnection, session: Session) -> bool:
    """Whether the caller sent ``session``'s resume token (compared in constant time)."""
    given = connection.headers.get(RESUME_TOKEN_HEADER)
    return given is not None and session.holds_token(given)


def may_watch(connection: HTTPConnection, session: Session) -> bool:
    return identity_of(connection.scope).may_see(session.owner) or holds_credential(connection, session)


def may_act(connection: HTTPConnection, session: Session) -> bool:
    return identity_of(connection.scope).may_act(session.owner) or holds_credential(connection, session)


def described(session: Session) -> dict[str, Any]:
    """A session as the list and the watch socket show it: its own description, and its owner."""
    return {**session.describe(), "owner": session.owner}


def visible(connection: HTTPConnection, sessions: Iterable[Session]) -> list[Session]:
    """The sessions a listing shows this caller: all of them, or a trainer's own."""
    identity = identity_of(connection.scope)
    return [session for session in sessions if identity.may_see(session.owner)]


class ClientQuota:
    """``max_sessions_per_client``: the sessions a client holds (opened, forked, restored from a
    checkpoint: every live session it owns) plus those it is opening.

    Counted from the live sessions when a client opens one, and only when a limit is set: an
    open then costs one pass over the sessions (about 50 ns each), nothing is kept per client
    but its opens in flight, and nothing can drift.
    """

    def __init__(self, limit: int | None, live: Mapping[str, Session]) -> None:
        self.limit = limit
        self._live = live
        self._opening: dict[str, int] = {}

    def held(self, client: str) -> int:
        """Sessions ``client`` holds or is opening now."""
        owned = sum(1 for session in list(self._live.values()) if session.owner == client)
        return owned + self._opening.get(client, 0)

    def admit(self, client: str) -> bool:
        """Whether ``client`` may open one more session; if so it counts as opening until :meth:`settle`."""
        if self.limit is None:
            return True
        if self.held(client) >= self.limit:
            return False
        self._opening[client] = self._opening.get(client, 0) + 1
        return True

    def settle(self, client: str) -> None:
        """The open :meth:`admit` let through is over (the session, if made, is live and counted as such)."""
        if self.limit is None:
            return
        left = self._opening.pop(client) - 1
        if left:
            self._opening[client] = left


class SessionAccess:
    """A server's rules for opening and resuming, applied before the session manager is asked."""

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager
        config = manager.config
        self.quota = ClientQuota(config.max_sessions_per_client, manager.sessions)

    async def open(self, connection: HTTPConnection, frame: Open, sink: FrameSink) -> Session:
        identity = identity_of(connection.scope)
        if frame.session_id:
            session = self.manager.get(frame.session_id)
            if session is not None and not identity.may_act(session.owner):
                self.manager.metrics.access_denied()
                message = f"session {frame.session_id!r} belongs to another client: only its owner or an operator"
                message += " may resume it"
                raise ForbiddenError(message, fatal=True)
            return await self.manager.open(frame, sink)
        if not identity.opens_sessions:
            self.manager.metrics.access_denied()
            raise ForbiddenError(f"the {identity.scope} scope of token {identity.name!r} opens no sessions", fatal=True)
        client = client_of(connection)
        if frame.open_key and identity is not ANONYMOUS:
            frame.open_key = f"{client}\n{frame.open_key}"  # one identity's keys never find another's session
        if frame.open_key and self.manager.knows_open_key(frame.open_key):
            return await self.manager.open(frame, sink, owner=client)  # the same open again: nothing new
        if not self.quota.admit(client):
            self.manager.metrics.capacity_rejected()
            message = f"client {client!r} holds {self.quota.limit} sessions, the most one client may"
            raise CapacityError(
                message + " (max_sessions_per_client)", retry_after=self.manager.config.retry_after, fatal=True
            )
        try:
            return await self.manager.open(frame, sink, owner=client)
        finally:
            self.quota.settle(client)


async def open_as(connection: HTTPConnection, frame: Open, sink: FrameSink) -> Session:
    """Open (or resume) the session ``frame`` asks for, as whoever is at ``connection``: every adapter's way in."""
    access: SessionAccess = connection.app.state.access
    return await access.open(connection, frame, sink)


def open_failure(exc: Exception) -> str:
    """What a client is told when :func:`open_as` failed unexpectedly (the server's log has the traceback)."""
    return f"opening the session failed: {type(exc).__name__}: {exc}"
