"""A web server on 127.0.0.1 for the download tests: serves bytes, honours Range, and can
misbehave on purpose (ignore Range, cut a response short)."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Site:
    """A local web server's content and behaviour, and the Range headers it received."""

    files: dict[str, bytes] = field(default_factory=dict)
    ranges: bool = True              # honour Range (206) or always send the whole file (200)
    drop_next_after: int | None = None  # cut the next response after this many body bytes
    requests: list = field(default_factory=list)
    progress: list = field(default_factory=list)  # (done, total), for tests that record it
    url: str = ""


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        site: Site = self.server.site
        asked = self.headers.get("Range")
        site.requests.append((self.path, asked))
        payload = site.files.get(self.path)
        if payload is None:
            return self.send_error(404)
        start = int(asked.removeprefix("bytes=").rstrip("-")) if asked and site.ranges else 0
        if start >= len(payload) > 0:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(payload)}")
            self.send_header("Content-Length", "0")
            return self.end_headers()
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        body = payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if site.drop_next_after is not None:
            body, site.drop_next_after = body[:site.drop_next_after], None
        self.wfile.write(body)  # HTTP/1.0: the connection closes after this

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving():
    """A running server on a free port; yields its Site."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.site = Site(url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server.site
    finally:
        server.shutdown()
        server.server_close()
