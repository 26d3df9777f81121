"""The local web server the browser talks to: on 127.0.0.1 inside the sandbox, on a port of its own.

It serves the MiniWoB++ pages of the installed ``miniwob`` package under ``/wob/``, the environment's
test pages under ``/_test/`` (only with the ``test_pages`` option), and everything else from the
shop (``shop.py``). It runs on threads of the environment's process (the standard library's
threading HTTP server), so a page the browser is loading never waits for the environment's event
loop, and the shop's state is plain Python the environment reads to grade an episode.
"""

from __future__ import annotations

import functools
import importlib.util
import mimetypes
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

from .shop import Reply, Shop

MAX_BODY_BYTES = 64 * 1024
"""A form post larger than this is refused (413)."""
HANG_S = 120.0
"""How long ``/_test/hang-load`` keeps a request waiting (far past any step deadline)."""

TEST_PAGES = {
    "/_test/": (
        "<title>Test pages</title><h1>Test pages</h1>"
        '<a href="/_test/hang-script">a page whose button never returns</a><br>'
        '<a href="/_test/hang-load">a page that never finishes loading</a><br>'
        '<a href="/_test/dialog">a page that asks for confirmation</a><br>'
        '<a href="/_test/long">a long page</a>'
    ),
    "/_test/hang-script": (
        "<title>Endless script</title><h1>Endless script</h1>"
        "<button onclick=\"document.title = 'looping'; for (;;) {}\">Loop forever</button>"
        '<p id=count>0</p><button onclick="count.textContent = +count.textContent + 1">Count</button>'
    ),
    "/_test/dialog": (
        "<title>Dialogs</title>"
        "<button onclick=\"document.title = confirm('Sure?') ? 'confirmed' : 'refused'\">Ask</button>"
    ),
    "/_test/long": "<title>Long</title>" + "".join(f"<p>Paragraph {n}</p>" for n in range(1, 301)),
}


def miniwob_root() -> Path | None:
    """The ``html`` folder of the installed ``miniwob`` package (found without importing it: its import
    pulls in gymnasium and numpy, of which only the pages are needed here)."""
    spec = importlib.util.find_spec("miniwob")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "html"
    return root if (root / "miniwob").is_dir() else None


class SiteServer:
    """The HTTP server of one session; ``shop`` is replaced at every reset."""

    def __init__(self, shop: Shop, *, test_pages: bool = False) -> None:
        self.shop = shop
        self.test_pages = test_pages
        self.miniwob = miniwob_root()
        self.closing = threading.Event()
        handler = type("Handler", (_Handler,), {"site": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        serve = functools.partial(self._server.serve_forever, poll_interval=0.05)  # shutdown() waits one interval
        self._thread = threading.Thread(target=serve, name="web-site", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def static(self, path: str) -> Reply:
        """A file of the MiniWoB++ package, below its ``html`` folder only."""
        if self.miniwob is None:
            return Reply.page(404, "Not found", "<p>MiniWoB++ is not installed (pip install miniwob).</p>")
        file = (self.miniwob / unquote(path)).resolve()
        if not file.is_relative_to(self.miniwob) or not file.is_file():
            return Reply.page(404, "Not found", "<p>No such page.</p>")
        kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        return Reply(200, file.read_bytes(), kind)

    def test_page(self, path: str) -> Reply | None:
        if not self.test_pages or not path.startswith("/_test/"):
            return None
        if path == "/_test/hang-load":
            self.closing.wait(HANG_S)  # on a thread of its own: holds only this request
            return Reply.page(200, "Finally", "<p>Loaded at last.</p>")
        body = TEST_PAGES.get(path)
        return Reply(200, body.encode(), "text/html; charset=utf-8") if body else None


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a browser that went away mid-answer (killed, or a load stopped) is no news


class _Handler(BaseHTTPRequestHandler):
    site: ClassVar[SiteServer]
    protocol_version = "HTTP/1.1"
    server_version = "openenv-web"

    def log_message(self, format: str, *args: object) -> None:
        pass  # a request log would only fill the worker's stderr

    def do_GET(self) -> None:
        self._answer(None)

    def do_POST(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        if size > MAX_BODY_BYTES:
            self._send(Reply.page(413, "Too large", f"<p>A form may carry {MAX_BODY_BYTES} bytes.</p>"))
            self.close_connection = True
            return
        form = parse_qs(self.rfile.read(size).decode(errors="replace"), keep_blank_values=True)
        self._answer({key: values[-1] for key, values in form.items()})

    def _answer(self, form: dict[str, str] | None) -> None:
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
        if url.path.startswith("/wob/") and form is None:
            reply = self.site.static(url.path.removeprefix("/wob/"))
        else:
            reply = self.site.test_page(url.path) or self.site.shop.handle(url.path, query, form)
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status, HTTPStatus(reply.status).phrase)
        if reply.location:
            self.send_header("Location", reply.location)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(reply.body)
