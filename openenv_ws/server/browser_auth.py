"""How a browser (the web console at ``/ui``) presents the bearer token where it cannot send a header.

A page's ``fetch`` sends ``Authorization: Bearer <token>`` like any client. A page's WebSocket
cannot: the browser API takes a URL and a list of subprotocols, nothing else. So the console
offers two subprotocols, ``openenv-ws.console`` and ``openenv-ws.bearer.<token, base64url>``,
and the token check (:class:`~openenv_ws.server.auth.TokenAuth`) reads the second one, only on
the sockets the console uses (:func:`is_console_socket`: a session's socket, a session's watch)
and only when no ``Authorization`` header came. :class:`ConsoleSockets`, on every server, takes
the token entry out of the scope before a route sees it and answers the handshake with
``openenv-ws.console`` (a browser drops a socket whose server picks none of the subprotocols it
offered, so this holds on a server without a token too).

Exposure: the token travels in a request header (``Sec-WebSocket-Protocol``), as it does in
``Authorization``: never in a URL, so not in browser history, proxies' access logs or the
server's; the server's log filter redacts its encoded form too (:func:`secret_forms`). The
console's own files (:data:`CONSOLE_PREFIX`) are served without a token: they are the package's
static files, the same for everyone, and hold no data; every request they make for data carries
the token. Nothing is a cookie, so no other site's page can make a browser send the token.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

CONSOLE_PREFIX = "/ui"
"""Where the web console's files are served (:mod:`openenv_ws.server.console`)."""
CONSOLE_SUBPROTOCOL = "openenv-ws.console"
"""The subprotocol the server answers on a socket the console opened with its token."""
TOKEN_SUBPROTOCOL_PREFIX = "openenv-ws.bearer."
"""Followed by the token in base64url without padding (subprotocol names allow no other characters safely)."""


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


class ConsoleSockets:
    """ASGI middleware: a socket the console opened loses its token entry and is answered as the console's.

    Runs inside the token check, on every server; costs one look at the offered subprotocols per
    WebSocket handshake, nothing per frame or per HTTP request.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket" or CONSOLE_SUBPROTOCOL not in (scope.get("subprotocols") or ()):
            await self.app(scope, receive, send)
            return
        offered = [p for p in scope["subprotocols"] if not p.startswith(TOKEN_SUBPROTOCOL_PREFIX)]

        async def answer_as_console(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.accept" and not message.get("subprotocol"):
                message = {**message, "subprotocol": CONSOLE_SUBPROTOCOL}
            await send(message)

        await self.app({**scope, "subprotocols": offered}, receive, answer_as_console)
