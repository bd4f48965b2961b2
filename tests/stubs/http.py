"""The HTTP plumbing every API stub shares: a threaded server on a free loopback port that
records each request and hands it to the stub's ``respond``."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class Recorded:
    """One request as the stub received it (body decoded by the stub's ``decode_body``)."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


class StubServer:
    """Base of the API stubs: use as a context manager; ``url`` is the server's base URL.

    Subclasses implement ``respond(method, path, query, body, headers) -> (status, obj, content type)``
    (a ``str`` obj is sent as is, anything else as JSON) and may override ``decode_body``.
    """

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.stub = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Any:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def decode_body(self, raw: bytes, headers: Any) -> Any:
        return json.loads(raw) if raw else None

    def respond(self, method: str, path: str, query: dict[str, list[str]], body: Any,
                headers: Any) -> tuple[int, Any, str]:
        raise NotImplementedError


class _Server(ThreadingHTTPServer):
    stub: StubServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: Any) -> None:  # quiet
        return

    def _handle(self, method: str) -> None:
        stub = self.server.stub
        url = urlparse(self.path)
        query = parse_qs(url.query)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = stub.decode_body(raw, self.headers)
        stub.requests.append(Recorded(method, url.path, query, body))
        status, obj, ctype = stub.respond(method, url.path, query, body, self.headers)
        data = obj.encode() if isinstance(obj, str) else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")
