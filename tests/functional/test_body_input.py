"""A GET's body as a storlet input (mlstorlets.server.middleware.body_input),
on the real cluster: in its place among the inputs, bounded, and a body cut
short fails the call without harming the proxy.
"""

import configparser
import http.client
import os
import socket
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from mlstorlets.client.swift import Swift, SwiftError
from mlstorlets.sandbox import protocol
from mlstorlets.server.aio import processes

PROBE = "probe.py"


@pytest.fixture
def source(conn, container):
    conn.put_object(container, "source.txt", b"hello")
    conn.put_object(container, "tail.txt", b" and more")
    return container


def storlet_request(conn, container, name, body, headers=None, method="GET"):
    url, token = conn.get_auth()
    head = {"X-Auth-Token": token, "X-Run-Storlet": PROBE, protocol.BODY_INPUT_HEADER: "true"}
    head.update(headers or {})
    return requests.request(
        method, "%s/%s/%s" % (url, container, name), data=body, headers=head, timeout=60
    )


def test_the_body_is_the_second_input_before_the_extra_resources(conn, source):
    # Over a pipe's size, so that the storlet reads while the client sends.
    body = os.urandom(700 << 10)
    headers, output = Swift(conn).storlet_get(
        source, "source.txt", PROBE, extra_resources=["/%s/tail.txt" % source], body=body
    )
    assert output == b"hello" + body + b" and more"
    assert headers["x-object-meta-probe-inputs"] == "3"
    # Alone with the object; an empty body is an input too.
    resp = storlet_request(conn, source, "source.txt", b"")
    assert resp.status_code == 200, resp.text
    assert (resp.content, resp.headers["X-Object-Meta-Probe-Inputs"]) == (b"hello", "2")
    # Nothing was stored.
    names = [o["name"] for o in conn.get_container(source)[1]]
    assert names == ["source.txt", "tail.txt"]


def test_the_cluster_publishes_its_bound_and_keeps_it(conn, source):
    limit = conn.get_capabilities()[protocol.INFO_KEY][protocol.MAX_BODY_INPUT_KEY]
    assert limit == protocol.DEFAULT_MAX_BODY_INPUT
    assert Swift(conn).limits().body_input == limit
    # Refused on the declared length alone, before any byte is read.
    url, token = conn.get_auth()
    parsed = urllib.parse.urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    try:
        connection.putrequest("GET", "%s/%s/source.txt" % (parsed.path, source))
        for key, value in {
            "X-Auth-Token": token,
            "X-Run-Storlet": PROBE,
            protocol.BODY_INPUT_HEADER: "true",
            "Content-Length": str(limit + 1),
        }.items():
            connection.putheader(key, value)
        connection.endheaders()
        resp = connection.getresponse()
        assert resp.status == 413
        assert b"at most %d bytes" % limit in resp.read()
    finally:
        connection.close()


def test_a_body_without_a_length_or_elsewhere_is_refused(conn, source):
    chunked = storlet_request(conn, source, "source.txt", iter([b"a", b"b"]))
    assert chunked.status_code == 411, chunked.text
    plain = storlet_request(conn, source, "source.txt", b"x", {"X-Run-Storlet": None})
    assert plain.status_code == 400 and protocol.BODY_INPUT_HEADER in plain.text
    put = storlet_request(conn, source, "put.txt", b"x", method="PUT")
    assert put.status_code == 400 and protocol.BODY_INPUT_HEADER in put.text
    assert "put.txt" not in [o["name"] for o in conn.get_container(source)[1]]


def test_a_body_cut_short_is_refused_and_the_storlet_never_runs(conn, source):
    url, token = conn.get_auth()
    parsed = urllib.parse.urlparse(url)
    sock = socket.create_connection((parsed.hostname, parsed.port), timeout=60)
    try:
        sock.sendall(
            (
                "GET %s/%s/source.txt HTTP/1.1\r\nHost: %s\r\nX-Auth-Token: %s\r\n"
                "X-Run-Storlet: %s\r\n%s: true\r\nContent-Length: %d\r\n\r\n"
                % (
                    parsed.path,
                    source,
                    parsed.netloc,
                    token,
                    PROBE,
                    protocol.BODY_INPUT_HEADER,
                    1 << 20,
                )
            ).encode()
            + b"x" * (64 << 10)
        )
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(1 << 16):
            answer += chunk
    finally:
        sock.close()
    # Never an output made of a sixteenth of the input.
    assert answer.split(b"\r\n", 1)[0].split()[1] == b"400", answer[:500]
    assert b"the request body ended after 65536 of its 1048576 bytes" in answer
    # The same proxy answers the next call.
    headers, output = Swift(conn).storlet_get(source, "source.txt", PROBE, body=b"!")
    assert output == b"hello!"


@pytest.mark.parametrize("storlet", ["probe.py", "raiser.py"])
def test_a_connection_serves_on_whatever_the_storlet_made_of_the_body(conn, source, storlet):
    # One keep-alive connection: a storlet that fails (probe, having read
    # everything; raiser, having read nothing), then a call that succeeds,
    # whose answer must be its own.
    url, token = conn.get_auth()
    parsed = urllib.parse.urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    headers = {
        "X-Auth-Token": token,
        "X-Run-Storlet": storlet,
        protocol.BODY_INPUT_HEADER: "true",
        "X-Storlet-Parameter-1": "action:fail" if storlet == "probe.py" else "read:none",
    }
    path = "%s/%s/source.txt" % (parsed.path, source)
    try:
        for _ in range(2):
            connection.request("GET", path, body=os.urandom(3 << 20), headers=headers)
            resp = connection.getresponse()
            assert resp.status == 502, resp.read()[:300]
            resp.read()
        connection.request(
            "GET",
            path,
            body=b" again",
            headers=dict(
                headers, **{"X-Run-Storlet": PROBE, "X-Storlet-Parameter-1": "action:copy"}
            ),
        )
        resp = connection.getresponse()
        assert (resp.status, resp.read()) == (200, b"hello again")
    finally:
        connection.close()


def test_a_refused_call_with_a_body_names_the_object(conn, source):
    with pytest.raises(SwiftError) as err:
        Swift(conn).storlet_get(
            source, "source.txt", PROBE, params={"action": "fail"}, body=b"state"
        )
    assert err.value.name == "%s/source.txt" % source
    assert err.value.status == 502 and err.value.kind == protocol.FAILED
    assert "probe asked to fail" in str(err.value)


@pytest.fixture
def one_body_held(cluster):
    """The proxy with room for one body of 1 MiB at a time."""
    path = cluster.layout.conf("proxy-server")
    with open(path) as f:
        saved = f.read()
    parser = configparser.RawConfigParser()
    parser.optionxform = str
    parser.read_string(saved)
    for key in ("max_body_input_bytes", "max_body_input_held_bytes"):
        parser.set("filter:storlet_handler", key, str(1 << 20))
    with open(path, "w") as f:
        parser.write(f)
    try:
        assert processes.stop(cluster.layout.run_dir, "proxy-server")
        cluster.up(log=lambda msg: None)
        yield 1 << 20
    finally:
        with open(path, "w") as f:
            f.write(saved)
        assert processes.stop(cluster.layout.run_dir, "proxy-server")
        cluster.up(log=lambda msg: None)


def test_a_body_past_what_the_proxy_holds_waits_unread(cluster, source, one_body_held):
    body = os.urandom(one_body_held)
    counter = {"X-Run-Storlet": "counter.py"}
    # The proxy's sandbox and the storlet's daemon started: the first call
    # below holds its body for its storlet's time only.
    Swift(cluster.connection()).storlet_get(source, "source.txt", "counter.py", body=b"warm")
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(
            Swift(cluster.connection()).storlet_get,
            source,
            "source.txt",
            "counter.py",
            params={"sleep": "2"},
            body=body,
        )
        time.sleep(0.5)  # its body held, its storlet asleep
        turned_away = storlet_request(cluster.connection(), source, "source.txt", body, counter)
        assert turned_away.status_code == 503, turned_away.text
        assert turned_away.headers["Retry-After"] == "1"
        assert turned_away.headers[protocol.NOT_RUN_HEADER] == "true"
        assert "holds %d bytes of request bodies" % len(body) in turned_away.text
        # The client waits as asked and sends it again, once there is room.
        headers, _ = Swift(cluster.connection()).storlet_get(
            source, "source.txt", "counter.py", body=body
        )
        assert first.done()
        assert headers["x-object-meta-counter-read"] == str(len(b"hello") + len(body))
        assert first.result()[0]["x-object-meta-counter-read"] == str(len(b"hello") + len(body))
