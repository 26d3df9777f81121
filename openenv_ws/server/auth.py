"""Bearer-token authentication (``serve --token``, ``--token-file``), for every route but ``/healthz``.

An HTTP request without a known ``Authorization: Bearer <token>`` gets 401 with a JSON body
(``{"detail": ..., "code": "unauthorized"}``) and ``WWW-Authenticate: Bearer``. A WebSocket
handshake gets the same 401 as its HTTP answer instead of being accepted (the ASGI
``websocket.http.response`` extension, which uvicorn has), so a client learns why before
any frame; a server without that extension closes with 1008 ``unauthorized`` instead.
``/healthz`` stays open for load balancers and container health checks; it shows only
counts and names, never a session's content. So do the web console's own files (``/ui``): the
package's static files, without data; the console sends the token with every request it makes,
on its WebSockets as a subprotocol (:mod:`openenv_ws.server.browser_auth`).

A known token's :class:`~openenv_ws.server.identity.Identity` (its name and scope) goes
into the ASGI scope for the routes (:func:`~openenv_ws.server.identity.identity_of`): what
it may do with each session is decided there (:mod:`openenv_ws.server.access`).

A pure ASGI middleware: a route pays one header lookup per request or per WebSocket, never
per frame. Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import logging
from typing import Any

from ..protocol import ErrorCode
from .browser_auth import is_console_file, subprotocol_token
from .connection import CLOSE_POLICY
from .http_errors import error_body, error_headers
from .identity import IDENTITY_KEY, TokenTable
from .metrics import Metrics, NullMetrics

log = logging.getLogger("openenv_ws.server")

TOKEN_ENV = "OPENENV_WS_TOKEN"
OPEN_PATHS = frozenset({"/healthz"})


def bearer_token(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The credentials of an ``Authorization: Bearer ...`` header, if there is one."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.partition(b" ")
            if scheme.lower() == b"bearer":
                return credentials.strip()
    return None


class TokenAuth:
    def __init__(self, app: Any, tokens: TokenTable, metrics: Metrics | None = None) -> None:
        if not len(tokens):
            raise ValueError("no tokens would let everyone in")
        self.app = app
        self._tokens = tokens
        self._metrics = metrics if metrics is not None else NullMetrics()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or scope["path"] in OPEN_PATHS or is_console_file(scope["path"]):
            await self.app(scope, receive, send)
            return
        given = bearer_token(scope["headers"])
        if given is None:
            given = subprotocol_token(scope)  # the web console's sockets (browsers send no header there)
        identity = self._tokens.identify(given) if given is not None else None
        if identity is not None:
            await self.app({**scope, IDENTITY_KEY: identity}, receive, send)
            return
        await self._refuse(scope, receive, send, "missing" if given is None else "wrong")

    async def _refuse(self, scope: dict[str, Any], receive: Any, send: Any, what: str) -> None:
        self._metrics.auth_failed()
        client = scope.get("client") or ("?", 0)
        log.warning("refused %s %s from %s:%s: %s bearer token", scope["type"], scope["path"], *client, what)
        message = f"unauthorized: {what} bearer token (send 'Authorization: Bearer <token>')"
        body = error_body(message, ErrorCode.UNAUTHORIZED)
        headers = error_headers(body, [(b"www-authenticate", b'Bearer realm="openenv-ws"')])
        if scope["type"] == "http":  # and the connection closes: a stranger's body is not read on
            headers.append((b"connection", b"close"))
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await receive()  # websocket.connect
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": CLOSE_POLICY, "reason": "unauthorized"})
