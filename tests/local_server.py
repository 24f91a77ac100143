"""What the tests' stand-ins for web APIs (tests/dropbox_server.py,
tests/gdrive_server.py) share: a threaded HTTP server on 127.0.0.1, run by
``with``, and one-shot faults that cut a connection."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LocalServer(ThreadingHTTPServer):
    """Serves ``handler`` on a free port of 127.0.0.1 while in a ``with``.

    A fault is armed by :meth:`cut` for a kind of request (a route, an
    upload or a download) and a name, and taken by the handler with
    :meth:`take_cut`.
    """

    daemon_threads = True

    def __init__(self, handler):
        super().__init__(("127.0.0.1", 0), handler)
        self._cuts = {}  # (kind, name) -> times left
        self.lock = threading.RLock()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()

    def fold(self, name):
        """The name faults are keyed by (a case-insensitive store folds
        case)."""
        return name

    def cut(self, kind, name, times=1):
        self._cuts[(kind, self.fold(name))] = times

    def take_cut(self, kind, name):
        """True (once per time armed) when this request is to be cut."""
        with self.lock:
            key = (kind, self.fold(name))
            left = self._cuts.get(key, 0)
            if left:
                self._cuts[key] = left - 1
            return bool(left)


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1, silent, with helpers to answer and to cut the
    connection."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status, body, content_type="application/json", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status, obj, headers=()):
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _drop(self):
        self.close_connection = True
        self.wfile.flush()
        self.connection.shutdown(2)
