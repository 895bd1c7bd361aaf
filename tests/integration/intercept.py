"""An HTTP proxy that stops a client at a chosen request: tests kill a driver at an exact point of its work.

:func:`proxy` serves on a free port of 127.0.0.1 and forwards every request to ``upstream``. After the
upstream has answered a request, ``on_answered(method, path, body)`` runs before the answer is passed on;
when it returns True (it has killed the client, say) the answer is dropped. So a hook that kills on
``POST .../model-versions/create`` leaves the driver dead right after the server registered a version,
with no race against what the driver would do next. A request body must come with its Content-Length
(MLflow's client always sends one); answers are passed on whole.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import requests

Hook = Callable[[str, str, bytes], bool]
_HOP_BY_HOP = {
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "accept-encoding",
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, on_answered: Hook) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = upstream.rstrip("/")
        self.on_answered = on_answered


class _Forward(BaseHTTPRequestHandler):
    server: _Server

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        answer = requests.request(
            self.command,
            self.server.upstream + self.path,
            data=body,
            timeout=120,
            headers={**headers, "Accept-Encoding": "identity"},
            allow_redirects=False,
        )
        if self.server.on_answered(self.command, urlsplit(self.path).path, body):
            self.close_connection = True
            return
        self.send_response(answer.status_code)
        for key, value in answer.headers.items():
            if key.lower() not in _HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    def log_message(self, *args: object) -> None:
        """Quiet: the upstream server keeps its own log."""


@contextlib.contextmanager
def proxy(upstream: str, on_answered: Hook) -> Iterator[str]:
    """Yield the URL of a proxy to ``upstream`` that calls ``on_answered`` after each answer (module docstring)."""
    server = _Server(upstream, on_answered)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
