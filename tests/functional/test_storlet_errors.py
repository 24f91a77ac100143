"""A storlet's errors reach the user who ran it, on the real cluster.

tests/storlets/raiser.py logs two lines holding a mark of the test's, then
raises ``ValueError("some detail")`` (or, ``how=hostile``, a message of
100 KB holding CR/LF, a ``Set-Cookie`` and another object's name).  The
client gets the exception's type and message in the protocol's headers,
on a GET (the storlet on an object server or on the proxy) and on a copy;
with ``X-Storlet-Generate-Log: True`` the log lines and the traceback are
one object of the account's log container, which the answer names;
without it nothing is written, and no other account sees a log.
"""

import http.client
import os
import shutil
import tempfile
import urllib.parse
import uuid

import pytest

from mlstorlets.client.deploy import deploy
from mlstorlets.sandbox import protocol

RAISER = "raiser.py"
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def raw(conn, method, path, headers):
    """(status, raw header block, body, headers) of one request, with
    nothing between the test and the wire."""
    url, token = conn.get_auth()
    parsed = urllib.parse.urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    try:
        connection.request(
            method, parsed.path + path, headers=dict(headers, **{"X-Auth-Token": token})
        )
        resp = connection.getresponse()
        body = resp.read()
        return resp.status, resp.msg.as_string(), body, dict(resp.getheaders())
    finally:
        connection.close()


def invoke(conn, container, how="value", where="object", log=False, copy=False, **params):
    """Run the raiser over ``container/in.txt``; a mark of its own is in
    its log lines.  (status, raw headers, body, headers, mark)."""
    mark = uuid.uuid4().hex
    headers = {
        "X-Run-Storlet": RAISER,
        "X-Storlet-Parameter-1": "how:" + how,
        "X-Storlet-Parameter-2": "mark:" + mark,
    }
    for i, (key, value) in enumerate(sorted(params.items()), 3):
        headers["X-Storlet-Parameter-%d" % i] = "%s:%s" % (key, value)
    if where == "proxy":
        headers["X-Storlet-Run-On-Proxy"] = ""
    if log:
        headers[protocol.GENERATE_LOG_HEADER] = "True"
    if copy:
        headers.update({"X-Copy-From": "%s/in.txt" % container, "Content-Length": "0"})
        return raw(conn, "PUT", "/%s/out.txt" % container, headers) + (mark,)
    return raw(conn, "GET", "/%s/in.txt" % container, headers) + (mark,)


def logs(conn):
    return {o["name"] for o in conn.get_container("log", full_listing=True)[1]}


def log_object(conn, named):
    """The body of the log object an answer named (``log/<name>``)."""
    value = urllib.parse.unquote(named[protocol.LOG_OBJECT_HEADER])
    container, _, name = value.partition("/")
    assert container == "log" and name.startswith(RAISER + "/")
    return name, conn.get_object(container, name)[1].decode("utf-8", "replace")


@pytest.fixture
def source(conn, container):
    conn.put_object(container, "in.txt", b"hello")
    return container


@pytest.fixture(scope="module")
def other_raiser(other_conn):
    with tempfile.TemporaryDirectory() as directory:
        shutil.copy(os.path.join(HERE, "storlets", RAISER), directory)
        deploy(other_conn, directory, library=False, log=lambda msg: None)


def assert_raised(status, named, detail="ValueError: some detail"):
    assert status == 502
    assert named[protocol.ERROR_HEADER] == protocol.FAILED
    assert protocol.failed_detail(named) == detail
    assert detail in urllib.parse.unquote(named[protocol.REASON_HEADER])


@pytest.mark.parametrize("where", ["object", "proxy"])
def test_what_the_storlet_raised_reaches_the_client_on_get(conn, source, where):
    before = logs(conn)
    status, _, body, named, _ = invoke(conn, source, where=where)
    print("GET on the %s: %d %s" % (where, status, body.strip()))
    assert_raised(status, named)
    assert b"ValueError: some detail" in body
    assert not protocol.log_headers(named)
    # Not asked: nothing written.
    assert logs(conn) == before


def test_what_the_storlet_raised_reaches_the_client_on_copy(conn, source):
    before = logs(conn)
    status, _, body, named, _ = invoke(conn, source, copy=True)
    print("copy: %d %s" % (status, body.strip()))
    assert_raised(status, named)
    assert [o["name"] for o in conn.get_container(source)[1]] == ["in.txt"]
    assert logs(conn) == before


@pytest.mark.parametrize(
    "where, copy",
    [("object", False), ("proxy", False), ("object", True)],
    ids=["get", "proxy", "copy"],
)
def test_the_asked_log_holds_the_lines_and_the_traceback(conn, source, where, copy):
    before = logs(conn)
    status, _, _, named, mark = invoke(conn, source, where=where, log=True, copy=copy)
    assert_raised(status, named)
    name, text = log_object(conn, named)
    print("log object %s:\n%s" % (name, text))
    assert logs(conn) - before == {name}
    assert "outcome: failed: ValueError: some detail" in text
    assert "raiser line 0 %s\n" % mark in text and "raiser line 1 %s\n" % mark in text
    assert "Traceback (most recent call last):" in text
    assert 'raise ValueError("some detail")' in text
    assert text.endswith("ValueError: some detail\n")


def test_a_successful_run_logs_when_asked_and_stores_no_log_metadata(conn, source):
    status, _, _, named, mark = invoke(conn, source, how="none", log=True, copy=True)
    assert status == 201
    _, text = log_object(conn, named)
    assert "outcome: done" in text and "raiser line 1 %s" % mark in text
    assert "Traceback" not in text
    headers = conn.head_object(source, "out.txt")
    assert not [k for k in headers if "log" in k.lower()]
    status, _, body, named, _ = invoke(conn, source, how="none", log=True)
    assert status == 200 and body == b"hello"
    assert protocol.LOG_OBJECT_HEADER in named
    assert not [k for k in named if k.lower().startswith("x-object-meta-mlstorlets")]


def test_without_the_header_a_successful_run_writes_no_log(conn, source):
    before = logs(conn)
    status, _, body, named, _ = invoke(conn, source, how="none")
    assert (status, body) == (200, b"hello") and not protocol.log_headers(named)
    assert logs(conn) == before


def test_a_second_account_never_sees_the_firsts_log(conn, other_conn, source, other_raiser):
    _, _, _, named, _ = invoke(conn, source, log=True)
    name, _ = log_object(conn, named)
    assert name not in logs(other_conn)
    status = raw(other_conn, "GET", "/log/" + urllib.parse.quote(name), {})[0]
    assert status == 404
    # The other account's own run logs in its own container only.
    other_conn.put_container("errors-other")
    try:
        other_conn.put_object("errors-other", "in.txt", b"hi")
        before = logs(conn)
        status, _, _, other_named, _ = invoke(other_conn, "errors-other", log=True)
        other_name, _ = log_object(other_conn, other_named)
        assert other_name in logs(other_conn) and other_name not in logs(conn)
        assert logs(conn) == before
    finally:
        other_conn.delete_object("errors-other", "in.txt")
        other_conn.delete_container("errors-other")


def test_a_missing_log_container_is_said_not_failed(other_conn, other_raiser):
    other_conn.put_container("errors-nolog")
    saved = [
        (o["name"], other_conn.get_object("log", o["name"])[1])
        for o in other_conn.get_container("log", full_listing=True)[1]
    ]
    for name, _ in saved:
        other_conn.delete_object("log", name)
    other_conn.delete_container("log")
    try:
        other_conn.put_object("errors-nolog", "in.txt", b"hi")
        status, _, body, named, _ = invoke(other_conn, "errors-nolog", how="none", log=True)
        print(named.get(protocol.LOG_ERROR_HEADER))
        assert (status, body) == (200, b"hi")
        assert protocol.LOG_OBJECT_HEADER not in named
        assert "no log container" in urllib.parse.unquote(named[protocol.LOG_ERROR_HEADER])
        status, _, _, named, _ = invoke(other_conn, "errors-nolog", log=True)
        assert_raised(status, named)
        assert "no log container" in urllib.parse.unquote(named[protocol.LOG_ERROR_HEADER])
    finally:
        other_conn.put_container("log")
        for name, body in saved:
            other_conn.put_object("log", name, body)
        other_conn.delete_object("errors-nolog", "in.txt")
        other_conn.delete_container("errors-nolog")


@pytest.mark.parametrize("where, copy", [("object", False), ("proxy", False), ("object", True)])
def test_a_hostile_message_stays_one_bounded_header_line(conn, source, where, copy):
    status, lines, body, named, _ = invoke(
        conn, source, how="hostile", where=where, copy=copy, log=True
    )
    print(
        "hostile, %s%s: %d, %d bytes of headers"
        % (where, " copy" if copy else "", status, len(lines))
    )
    assert status == 502 and named[protocol.ERROR_HEADER] == protocol.FAILED
    assert not any(line.lower().startswith("set-cookie") for line in lines.splitlines())
    # The object named is never the storlet's word.
    assert protocol.OBJECT_HEADER not in named
    assert len(lines) < 8192 and len(body) < 4096
    for header in (protocol.REASON_HEADER, protocol.DETAIL_HEADER):
        assert len(named[header]) <= 3 * protocol.MAX_REASON
    detail = protocol.failed_detail(named)
    assert detail.startswith("ValueError: first line\\r\\nSet-Cookie: stolen=1\\r\\n")
    assert "\\x00\\x1b[31mAAAA" in detail and detail.endswith("...")
    # The whole message is in the log, which is bounded too.
    _, text = log_object(conn, named)
    assert text.endswith("A" * 100 * 1024 + "\n")


def test_a_log_over_its_bound_is_cut_and_says_so(conn, source):
    status, _, _, named, mark = invoke(conn, source, log=True, lines=1500, pad=1000)
    assert_raised(status, named)
    name, text = log_object(conn, named)
    size = len(conn.get_object("log", name)[1])
    print("a log of 1.5 MB stored as %d bytes" % size)
    assert size <= protocol.MAX_LOG
    assert "raiser line 0 %s" % mark in text
    assert "bytes of the log left out here" in text
    assert text.endswith("ValueError: some detail\n")


UNLOADABLE = {
    # A module that does not exist, and an import that raises the hostile
    # message: CR/LF, a Set-Cookie, 100 KB.
    "unloadable.py": "import no_such_module_of_the_tenant\n",
    "unloadable_hostile.py": (
        'raise RuntimeError("bad\\r\\nSet-Cookie: stolen=1\\r\\n" + "y" * 100000)\n'
    ),
}
CLASS = """

class {name}Storlet(object):
    def __init__(self, logger):
        pass

    def __call__(self, in_files, out_files, params):
        pass
"""


@pytest.fixture(scope="module")
def unloadable(conn):
    with tempfile.TemporaryDirectory() as directory:
        for name, head in UNLOADABLE.items():
            title = "".join(part.title() for part in name[:-3].split("_"))
            with open(os.path.join(directory, name), "w") as f:
                f.write(head + CLASS.format(name=title))
        deploy(conn, directory, library=False, log=lambda msg: None)


@pytest.mark.parametrize("where", ["object", "proxy"])
def test_a_storlet_that_cannot_be_loaded_says_what_it_raised(conn, source, unloadable, where):
    headers = {"X-Run-Storlet": "unloadable.py"}
    if where == "proxy":
        headers["X-Storlet-Run-On-Proxy"] = ""
    status, _, body, named = raw(conn, "GET", "/%s/in.txt" % source, headers)
    print("GET on the %s: %d %s" % (where, status, body.strip()))
    detail = "ModuleNotFoundError: No module named 'no_such_module_of_the_tenant'"
    assert status == 502 and named[protocol.ERROR_HEADER] == protocol.FAILED
    reason = urllib.parse.unquote(named[protocol.REASON_HEADER])
    assert protocol.NOT_LOADED + detail in reason
    assert detail.encode() in body
    headers["X-Run-Storlet"] = "unloadable_hostile.py"
    status, block, body, named = raw(conn, "GET", "/%s/in.txt" % source, headers)
    assert status == 502 and named[protocol.ERROR_HEADER] == protocol.FAILED
    # One line, bounded: no header of the storlet's.
    assert not any(line.lower().startswith("set-cookie") for line in block.splitlines())
    assert len(block) < 8192
    reason = urllib.parse.unquote(named[protocol.REASON_HEADER])
    assert protocol.NOT_LOADED + "RuntimeError: bad\\r\\nSet-Cookie" in reason
    assert len(reason) <= protocol.MAX_REASON
    assert len(body) < 4 * protocol.MAX_REASON
