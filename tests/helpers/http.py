"""A loopback HTTP server for download tests: static files, byte ranges, and connections that die mid-body.

    with LoopbackServer(root, drop_after_bytes=100) as server:
        fetch(server.url + "data.bin", ...)      # first response dies after 100 body bytes
        assert server.requests[1].range == "bytes=100-"

Binds 127.0.0.1 on an ephemeral port only; the server thread is stopped and the socket closed on exit.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"^bytes=(\d+)-$")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it."""

    method: str
    path: str
    range: str | None


class LoopbackServer:
    """Serves files below ``root`` at ``self.url``; use as a context manager.

    ``drop_after_bytes``: the next ``drop_count`` GET responses send full headers but only this many body
    bytes, then the connection is closed (a dropped connection). Settable between requests.
    ``honour_range``: when False, ``Range`` is ignored and the full file is sent with 200.
    ``requests``: every request received, in order.
    """

    def __init__(
        self,
        root: Path,
        *,
        drop_after_bytes: int | None = None,
        drop_count: int = 1,
        honour_range: bool = True,
    ) -> None:
        self.root = Path(root).resolve()
        self.drop_after_bytes = drop_after_bytes
        self.drop_count = drop_count
        self.honour_range = honour_range
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def start(self) -> LoopbackServer:
        handler = _make_handler(self)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Called from handler threads.
    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _take_drop(self) -> int | None:
        """Body bytes to send before dropping this response, or None to send it all."""
        with self._lock:
            if self.drop_after_bytes is None or self.drop_count <= 0:
                return None
            self.drop_count -= 1
            return self.drop_after_bytes

    def _resolve(self, url_path: str) -> Path | None:
        relative = urllib.parse.unquote(urllib.parse.urlsplit(url_path).path).lstrip("/")
        candidate = (self.root / relative).resolve()
        if candidate != self.root and self.root not in candidate.parents:
            return None
        return candidate if candidate.is_file() else None


@contextmanager
def serve_directory(
    root: Path, *, drop_after_bytes: int | None = None, drop_count: int = 1
) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1 and yield its base URL (``http://127.0.0.1:<port>/``)."""
    with LoopbackServer(root, drop_after_bytes=drop_after_bytes, drop_count=drop_count) as server:
        yield server.url


def _make_handler(server: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_FileHandler):
        owner = server

    return Handler


class _FileHandler(BaseHTTPRequestHandler):
    owner: LoopbackServer
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request log lines on stderr."""

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def _serve(self, *, send_body: bool) -> None:
        range_header = self.headers.get("Range")
        self.owner._record(RecordedRequest(self.command, self.path, range_header))
        path = self.owner._resolve(self.path)
        if path is None:
            self.send_error(HTTPStatus.NOT_FOUND, "no such file")
            return
        data = path.read_bytes()
        start = self._range_start(range_header)
        if start is not None and start >= len(data):
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if start is not None:
            self.send_response(HTTPStatus.PARTIAL_CONTENT)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            body = data[start:]
        else:
            self.send_response(HTTPStatus.OK)
            body = data
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if send_body:
            self._send_body(body)

    def _range_start(self, header: str | None) -> int | None:
        if header is None or not self.owner.honour_range:
            return None
        match = _RANGE.match(header.strip())
        return int(match.group(1)) if match else None

    def _send_body(self, body: bytes) -> None:
        drop_after = self.owner._take_drop()
        if drop_after is None:
            self.wfile.write(body)
            return
        self.wfile.write(body[:drop_after])
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client may already have gone
            self.connection.shutdown(socket.SHUT_RDWR)
