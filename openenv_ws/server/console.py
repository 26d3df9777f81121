"""The web console at ``/ui``: the server's sessions live, one session's frames, an environment played by hand.

Plain HTML, CSS and JavaScript modules shipped in the package (``openenv_ws/server/ui/``), served
from it: no CDN and no build step, so an offline or air-gapped machine has the console as soon as
it has the package. The pages read only the server's public routes (``/healthz``, ``/v1/envs``,
``/v1/sessions``, ``/metrics``, ``WS /v1/sessions``, ``WS /v1/sessions/{id}/watch``) with the
token the user typed, so the console can do nothing a client with that token could not. How the
token travels and what is served without one: :mod:`openenv_ws.server.browser_auth`.

Every file goes out with a Content-Security-Policy that allows the console's own scripts,
styles and connections only (no inline script, no other origin) and no framing, and with
``Cache-Control: no-cache`` so an upgraded package's console is never mixed with a stale one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .browser_auth import CONSOLE_PREFIX

FILES = Path(__file__).with_name("ui")
"""The console's files, package data of ``openenv_ws.server``."""

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


class ConsoleFiles(StaticFiles):
    """The console's files with the security headers above."""

    def file_response(self, full_path: str | os.PathLike[str], *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(full_path, *args, **kwargs)
        response.headers.update(SECURITY_HEADERS)
        return response


def console_url(host: str, port: int) -> str:
    """Where a browser on this machine finds the console of a server listening on ``host:port``."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}{CONSOLE_PREFIX}/"


async def _to_index(request: Any) -> RedirectResponse:
    return RedirectResponse(CONSOLE_PREFIX + "/", status_code=308)


def console_routes() -> list[BaseRoute]:
    return [
        Route(CONSOLE_PREFIX, _to_index),
        Mount(CONSOLE_PREFIX, app=ConsoleFiles(directory=FILES, html=True), name="console"),
    ]
