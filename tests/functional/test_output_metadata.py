"""A hostile storlet's output metadata never becomes someone else's headers.

Storlets are shared through ACLs, so one account's storlet answers another
user's requests.  tests/storlets/hostile.py (action ``headers``) sets
metadata meant to inject headers or a whole response (a CR/LF in a value or
a key, a NUL), to break the engine's reading (a lone surrogate) or to swell
the answer (200 keys, a 1000-byte value).  Each is refused, closed, by the
engine before anything is written: a 502 with the protocol's headers naming
the storlet and the rule, on the object server and on the proxy, for a GET
and for a copy (which writes nothing).  Each attack prints what it
achieved.
"""

import http.client
import time
import urllib.parse

import pytest

from mlstorlets.sandbox import protocol

HOSTILE = "hostile.py"
KINDS = ("value-crlf", "key-crlf", "smuggle", "nul", "many", "long", "surrogate")
RULES = {
    "value-crlf": "control character",
    "key-crlf": "HTTP token",
    "smuggle": "control character",
    "nul": "control character",
    "many": "more than 90 metadata keys",
    "long": "over 256 bytes",
    "surrogate": "is not text",
}


def injected(lines):
    """True when a header line of the answer is the storlet's."""
    return any(line.lower().startswith("set-cookie") for line in lines.splitlines())


def raw(conn, method, path, headers):
    """One request on a connection of its own: (status, raw header lines,
    body, seconds), with nothing between the test and the wire that could
    fold or hide a header."""
    url, token = conn.get_auth()
    parsed = urllib.parse.urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    started = time.monotonic()
    try:
        connection.request(
            method, parsed.path + path, headers=dict(headers, **{"X-Auth-Token": token})
        )
        resp = connection.getresponse()
        body = resp.read()
        return (
            resp.status,
            resp.msg.as_string(),
            body,
            time.monotonic() - started,
            dict(resp.getheaders()),
        )
    finally:
        connection.close()


@pytest.fixture
def source(conn, container):
    conn.put_object(container, "in.txt", b"hello")
    return container


@pytest.mark.parametrize("where", ["object", "proxy"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_storlets_headers_are_refused_on_get(conn, source, kind, where):
    headers = {
        "X-Run-Storlet": HOSTILE,
        "X-Storlet-Parameter-1": "action:headers",
        "X-Storlet-Parameter-2": "kind:" + kind,
    }
    if where == "proxy":
        headers["X-Storlet-Run-On-Proxy"] = ""
    status, lines, body, seconds, named = raw(conn, "GET", "/%s/in.txt" % source, headers)
    print(
        "%s on the %s: %d in %.1f s, Set-Cookie %s"
        % (kind, where, status, seconds, "reached the client" if injected(lines) else "absent")
    )
    assert status == 502
    assert not injected(lines) and b"HTTP/1.1" not in body
    assert named[protocol.ERROR_HEADER] == protocol.FAILED
    reason = urllib.parse.unquote(named[protocol.REASON_HEADER])
    assert "storlet hostile.py broke the protocol" in reason
    assert RULES[kind] in reason


@pytest.mark.parametrize("kind", ["value-crlf", "key-crlf", "long"])
def test_a_copy_with_bad_headers_writes_nothing(conn, source, kind):
    status, lines, _body, _s, named = raw(
        conn,
        "PUT",
        "/%s/out.txt" % source,
        {
            "X-Run-Storlet": HOSTILE,
            "X-Copy-From": "%s/in.txt" % source,
            "X-Storlet-Parameter-1": "action:headers",
            "X-Storlet-Parameter-2": "kind:" + kind,
            "Content-Length": "0",
        },
    )
    print("copy with %s: %d" % (kind, status))
    assert status == 502 and not injected(lines)
    assert named[protocol.ERROR_HEADER] == protocol.FAILED
    names = [o["name"] for o in conn.get_container(source)[1]]
    assert names == ["in.txt"]
    # The cluster keeps serving, the source untouched.
    assert conn.get_object(source, "in.txt")[1] == b"hello"


@pytest.mark.parametrize("where", ["object", "proxy"])
def test_metadata_a_storlet_forges_in_the_engines_pipe_is_refused(conn, source, where):
    # The storlet runs in the worker's process: it can write the pipe the
    # worker writes the output's metadata to, ahead of the worker.  Nested
    # arrays deep enough to exhaust a JSON parser's recursion.
    headers = {"X-Run-Storlet": HOSTILE, "X-Storlet-Parameter-1": "action:forge-metadata"}
    if where == "proxy":
        headers["X-Storlet-Run-On-Proxy"] = ""
    status, lines, body, _s, named = raw(conn, "GET", "/%s/in.txt" % source, headers)
    reason = urllib.parse.unquote(named.get(protocol.REASON_HEADER, ""))
    print("forged metadata on the %s: %d, %s" % (where, status, reason))
    assert status == 502 and not injected(lines)
    assert named[protocol.ERROR_HEADER] == protocol.FAILED
    # The engine's own answer, not a server's error turned into one.
    assert "storlet hostile.py" in reason and "failed before producing output" in reason
    assert conn.get_object(source, "in.txt")[1] == b"hello"
