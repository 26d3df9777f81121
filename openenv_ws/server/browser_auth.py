"""How a browser (the web console at ``/ui``) presents the bearer token where it cannot send a header.

A page's ``fetch`` sends ``Authorization: Bearer <token>`` like any client. A page's WebSocket
cannot: the browser API takes a URL and a list of subprotocols, nothing else. So the console
offers two subprotocols, ``openenv-ws.console`` and ``openenv-ws.bearer.<token, base64url>``,
and the token check (:class:`~openenv_ws.server.auth.TokenAuth`) reads the second one, only on
the sockets the console uses (:func:`is_console_socket`: a session's socket, a session's watch)
and only when no ``Authorization`` header came. :class:`ConsoleRequests`, on every server, takes
the token entry out of the scope before a route sees it and answers the handshake with
``openenv-ws.console`` (a browser drops a socket whose server picks none of the subprotocols it
offered, so this holds on a server without a token too).

Exposure: the token travels in a request header (``Sec-WebSocket-Protocol``), as it does in
``Authorization``: never in a URL, so not in browser history, proxies' access logs or the
server's; the server's log filter redacts its encoded form too (:func:`secret_forms`). The
console's own files (:data:`CONSOLE_PREFIX`) are served without a token: they are the package's
static files, the same for everyone, and hold no data; every request they make for data carries
the token. Nothing is a cookie, so no other site's page can make a browser send the token.

Operators only: on a server with scoped tokens (``--token-file``), the console is an operator's
tool. Its requests say they are the console's (the ``X-OpenEnv-WS-Console`` header on HTTP, the
``openenv-ws.console`` subprotocol on sockets) and :class:`ConsoleRequests` refuses them with 403
unless the token's scope is ``operator``, so a trainer's or an observer's token typed into the
console is told so at once. The routes themselves still answer those tokens as their scopes allow:
the check is on the console, not a second access policy.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from ..protocol import ErrorCode
from .http_errors import error_body, error_headers
from .identity import OPERATOR, identity_of

CONSOLE_PREFIX = "/ui"
"""Where the web console's files are served (:mod:`openenv_ws.server.console`)."""
CONSOLE_SUBPROTOCOL = "openenv-ws.console"
"""The subprotocol the server answers on a socket the console opened with its token."""
TOKEN_SUBPROTOCOL_PREFIX = "openenv-ws.bearer."
"""Followed by the token in base64url without padding (subprotocol names allow no other characters safely)."""
CONSOLE_HEADER = b"x-openenv-ws-console"
"""Sent (value ``1``) on every HTTP request the console makes."""


def is_console_file(path: str) -> bool:
    """The console's static files: served to anyone (they hold no data)."""
    return path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")


def is_console_socket(path: str) -> bool:
    """The sockets the console opens: ``/v1/sessions`` (play an environment) and ``/v1/sessions/{id}/watch``."""
    if path == "/v1/sessions":
        return True
    head, _, tail = path.rpartition("/")
    return tail == "watch" and head.startswith("/v1/sessions/") and "/" not in head.removeprefix("/v1/sessions/")


def encode_token(token: str) -> str:
    return base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def secret_forms(token: str) -> list[str]:
    """The token as it may appear in a request: as is, and as the console's subprotocol encodes it."""
    return [token, encode_token(token)]


def subprotocol_token(scope: dict[str, Any]) -> bytes | None:
    """The token a console socket offered as a subprotocol, if this is a console socket that did."""
    if scope["type"] != "websocket" or not is_console_socket(scope["path"]):
        return None
    for offered in scope.get("subprotocols") or ():
        if offered.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            text = offered.removeprefix(TOKEN_SUBPROTOCOL_PREFIX)
            try:
                return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            except (binascii.Error, ValueError):
                return b""  # offered, but not a token: refused as a wrong one
    return None


class ConsoleRequests:
    """ASGI middleware for what the console asks: operators only, and its sockets answered as the console's.

    Runs inside the token check (which puts the caller's identity in the scope), on every server.
    A console socket loses its token entry before a route sees it. Costs one look at the headers or
    the offered subprotocols per request or handshake, nothing per frame.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            if any(name == CONSOLE_HEADER for name, _ in scope["headers"]) and not self._allowed(scope):
                await self._refuse_http(scope, send)
                return
            await self.app(scope, receive, send)
            return
        if kind != "websocket" or CONSOLE_SUBPROTOCOL not in (scope.get("subprotocols") or ()):
            await self.app(scope, receive, send)
            return
        if not self._allowed(scope):
            await self._refuse_socket(scope, receive, send)
            return
        offered = [p for p in scope["subprotocols"] if not p.startswith(TOKEN_SUBPROTOCOL_PREFIX)]

        async def answer_as_console(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.accept" and not message.get("subprotocol"):
                message = {**message, "subprotocol": CONSOLE_SUBPROTOCOL}
            await send(message)

        await self.app({**scope, "subprotocols": offered}, receive, answer_as_console)

    @staticmethod
    def _allowed(scope: dict[str, Any]) -> bool:
        return identity_of(scope).scope == OPERATOR

    @staticmethod
    def _refusal(scope: dict[str, Any]) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        identity = identity_of(scope)
        message = (
            f"forbidden: the console is for operators; token {identity.name!r} has the {identity.scope} scope"
            " (its client may still use the API as that scope allows)"
        )
        body = error_body(message, ErrorCode.FORBIDDEN)
        return body, error_headers(body)

    async def _refuse_http(self, scope: dict[str, Any], send: Any) -> None:
        body, headers = self._refusal(scope)
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _refuse_socket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body, headers = self._refusal(scope)
        await receive()  # websocket.connect
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 403, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": "forbidden"})
