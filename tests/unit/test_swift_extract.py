"""The extraction request (a PUT whose answer body the client reads) is
retried as swiftclient retries its own: a new token after a 401, again
after a refused connection, never after a timeout."""

import http.server
import json
import threading

import pytest
from swiftclient.client import Connection

from mlstorlets.client.swift import Swift, SwiftError

ANSWER = {"Response Status": "201 Created", "Number Files Created": 3, "Errors": []}


@pytest.fixture(autouse=True)
def one_connection(monkeypatch):
    # The gateway's per-thread clone would authenticate against a real
    # auth URL: here the connection itself serves, its get_auth faked.
    monkeypatch.setattr("mlstorlets.client.swift.clone_connection", lambda conn: conn)


@pytest.fixture
def server():
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):
            seen.append((self.path, self.headers["X-Auth-Token"]))
            if self.headers["X-Auth-Token"] != "fresh":
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = json.dumps(ANSWER).encode()
            self.send_response(201)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, seen
    httpd.shutdown()
    httpd.server_close()


def _connection(url, token, auths):
    conn = Connection(preauthurl=url, preauthtoken=token, retries=2)

    def get_auth():
        auths.append(True)
        return url, "fresh"

    conn.get_auth = get_auth
    return conn


def test_an_expired_token_is_renewed_once(server):
    httpd, seen = server
    url = "http://127.0.0.1:%d/v1/AUTH_t" % httpd.server_address[1]
    auths = []
    swift = Swift(_connection(url, "expired", auths))
    answer = swift.storlet_extract("c", "clip.avi", "c", "frames", "video_frames.py")
    assert answer == ANSWER
    assert [token for _, token in seen] == ["expired", "fresh"] and len(auths) == 1
    assert seen[-1][0] == "/v1/AUTH_t/c/frames"


def test_a_refused_connection_is_tried_again_then_named(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    # Nothing listens on port 9 (discard) here: every attempt is refused.
    swift = Swift(_connection("http://127.0.0.1:9/v1/AUTH_t", "t", []))
    tries = []
    real = swift.parent.http_connection

    def counted(*args, **kwargs):
        tries.append(True)
        return real(*args, **kwargs)

    swift.conn.http_connection = counted
    with pytest.raises(SwiftError, match="c/clip.avi: cannot reach Swift"):
        swift.storlet_extract("c", "clip.avi", "c", "frames", "video_frames.py")
    assert len(tries) == 3
