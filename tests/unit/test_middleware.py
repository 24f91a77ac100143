"""The mlstorlets middleware against a fake Swift app (no cluster).

Each test checks the status and headers the client gets, that nothing is
written on a failure, and that every response body the app handed out was
closed.  tests/functional/test_engine.py, test_timeouts.py and
test_tenancy.py run the same middleware in the real cluster.
"""

import urllib.parse

import pytest
from fake_swift import FakeSwift, call
from swift.common.swob import Request

from mlstorlets.sandbox import protocol
from mlstorlets.server.middleware import storlet_copy, storlet_failure, user_name

SRC = "/v1/AUTH_a/c/src"
DST = "/v1/AUTH_a/c/dst"
RUN = {"X-Run-Storlet": "probe.py"}
ERROR = protocol.ERROR_HEADER
REASON = protocol.REASON_HEADER


@pytest.fixture
def swift():
    fake = FakeSwift()
    yield fake
    assert fake.all_closed, "a response body was left unclosed"


def copy_app(swift):
    return storlet_copy.filter_factory({})(swift)


def get(path=SRC, headers=RUN, **kwargs):
    return Request.blank(path, headers=dict(headers), **kwargs)


def protocol_of(headers):
    return headers.get(ERROR), urllib.parse.unquote(headers.get(REASON, ""))


# -- storlet_copy: GET ---------------------------------------------------
def test_a_storlet_get_loses_the_sources_etag(swift):
    swift.register(
        "GET",
        SRC,
        "200 OK",
        {
            "Etag": "etag-of-the-source",
            "X-Object-Meta-Storlet-Output-Length": "6",
            "X-Object-Meta-Name": "x",
        },
        b"output",
    )
    status, headers, body = call(copy_app(swift), get())
    assert (status, body) == (200, b"output")
    assert "Etag" not in headers
    assert "X-Object-Meta-Storlet-Output-Length" not in headers
    assert headers["X-Object-Meta-Name"] == "x"


def test_what_a_storlet_get_drops_is_dropped_in_any_case(swift):
    swift.register(
        "GET",
        SRC,
        "200 OK",
        {"etag": "e", "x-object-meta-storlet-output-length": "6", "x-object-meta-name": "x"},
        b"output",
    )
    status, headers, body = call(copy_app(swift), get())
    assert (status, body) == (200, b"output")
    assert set(k.lower() for k in headers) >= {"x-object-meta-name"}
    assert not {"etag", "x-object-meta-storlet-output-length"} & set(k.lower() for k in headers)


def test_where_an_outputs_log_went_becomes_the_protocols_header(swift):
    from mlstorlets.sandbox import protocol

    swift.register(
        "GET",
        SRC,
        "200 OK",
        {"X-Object-Meta-Mlstorlets-Log-Object": "log/probe.py/x.log", "X-Object-Meta-Name": "x"},
        b"output",
    )
    status, headers, body = call(copy_app(swift), get())
    assert (status, body) == (200, b"output")
    assert headers[protocol.LOG_OBJECT_HEADER] == "log/probe.py/x.log"
    assert "X-Object-Meta-Mlstorlets-Log-Object" not in headers
    assert headers["X-Object-Meta-Name"] == "x"


def test_a_plain_get_is_left_alone(swift):
    swift.register("GET", SRC, "200 OK", {"Etag": "e"}, b"data")
    status, headers, body = call(copy_app(swift), get(headers={}))
    assert (status, headers["Etag"], body) == (200, "e", b"data")


def test_a_refusal_is_422_refused(swift):
    swift.register("GET", SRC, "200 OK", {"X-Object-Meta-Storlet-Error": "not an image"}, b"")
    status, headers, body = call(copy_app(swift), get())
    assert status == 422
    assert protocol_of(headers) == (
        protocol.REFUSED,
        "storlet probe.py refused c/src: not an image",
    )
    assert body == b"storlet probe.py refused c/src: not an image\n"


def test_a_refusal_names_the_input_it_is_about(swift):
    swift.register(
        "GET",
        SRC,
        "200 OK",
        {
            "X-Object-Meta-Storlet-Error": "no label",
            "X-Object-Meta-Storlet-Error-Object": "c/crop%201",
        },
        b"",
    )
    status, headers, body = call(copy_app(swift), get())
    assert status == 422
    assert protocol.failed_object(headers) == "c/crop%201"
    assert protocol_of(headers)[1] == (
        "storlet probe.py refused c/crop%201, an input of the call over c/src: no label"
    )
    # Never a header of the answer's own, nor stored.
    assert "X-Object-Meta-Storlet-Error-Object" not in headers


def test_a_refusal_of_the_source_names_it(swift):
    swift.register(
        "GET",
        SRC,
        "200 OK",
        {
            "X-Object-Meta-Storlet-Error": "not an image",
            "X-Object-Meta-Storlet-Error-Object": "c/src",
        },
        b"",
    )
    status, headers, body = call(copy_app(swift), get())
    assert protocol.failed_object(headers) == "c/src"
    assert protocol_of(headers)[1] == "storlet probe.py refused c/src: not an image"


@pytest.mark.parametrize(
    "kind,status,words",
    [
        (protocol.TIMED_OUT, 504, "timed out"),
        (protocol.FAILED, 502, "failed"),
        (protocol.OUT_OF_MEMORY, 507, "ran out of memory"),
        (protocol.UNAVAILABLE, 503, "could not run"),
    ],
)
def test_an_object_servers_protocol_answer_becomes_the_clients(swift, kind, status, words):
    swift.register("GET", SRC, "200 OK", {ERROR: kind, REASON: "the%20storlet%20x"}, b"")
    got, headers, body = call(copy_app(swift), get())
    assert got == status
    error, reason = protocol_of(headers)
    # In the words the client's errors use for the same kind.
    assert error == kind and reason == "storlet probe.py %s over c/src (the storlet x)" % words
    assert reason.encode() in body


@pytest.mark.parametrize(
    "status,upstream_body,kind,text",
    [
        (
            "500 Internal Error",
            b"Storlet execution timed out",
            protocol.TIMED_OUT,
            "storlet probe.py timed out over c/src",
        ),
        (
            # Swift's own, no object server answered: a failure whose
            # reason is Swift's status, not words blaming the storlet (the
            # proxy's storlets answer theirs in the protocol).
            "503 Service Unavailable",
            [b for b in storlet_failure.STORLET_FAILURES if b.startswith(b"<html>")][0],
            protocol.FAILED,
            "storlet probe.py failed over c/src (503 Service Unavailable)",
        ),
        (
            "500 Internal Error",
            b"Storlet execution failed",
            protocol.FAILED,
            "storlet probe.py failed over c/src (the storlet failed)",
        ),
    ],
)
def test_a_proxy_side_failure_speaks_the_protocol(swift, status, upstream_body, kind, text):
    swift.register("GET", SRC, status, {}, upstream_body)
    got, headers, body = call(copy_app(swift), get())
    assert got == protocol.STATUS[kind]
    error, reason = protocol_of(headers)
    assert error == kind and reason.startswith(text)


def test_a_call_the_proxy_could_not_take_now_stays_503_with_its_retry_after(swift):
    swift.register(
        "GET",
        SRC,
        "503 Service Unavailable",
        {"Retry-After": "1", protocol.NOT_RUN_HEADER: "true"},
        b"the proxy holds 9 bytes\n",
    )
    status, headers, body = call(copy_app(swift), get())
    assert (status, headers["Retry-After"], headers[protocol.NOT_RUN_HEADER]) == (503, "1", "true")
    assert body == b"storlet probe.py did not run over c/src (the proxy holds 9 bytes)\n"
    assert ERROR not in headers


def test_another_503_is_a_failure_whatever_its_retry_after(swift):
    swift.register("GET", SRC, "503 Service Unavailable", {"Retry-After": "1"}, b"busy\n")
    status, headers, _ = call(copy_app(swift), get())
    assert status == 502 and headers[ERROR] == protocol.FAILED
    assert protocol.NOT_RUN_HEADER not in headers


def test_a_missing_source_stays_404(swift):
    swift.register("GET", SRC, "404 Not Found", {}, b"Not Found")
    status, headers, body = call(copy_app(swift), get())
    assert status == 404 and ERROR not in headers
    assert b"source object not found" in body


def test_a_reason_that_is_not_ascii_is_quoted(swift):
    path = "/v1/AUTH_a/c/caf%C3%A9"
    swift.register("GET", path, "200 OK", {"X-Object-Meta-Storlet-Error": "not an image"}, b"")
    status, headers, body = call(copy_app(swift), get(path))
    assert status == 422
    assert headers[REASON].isascii()
    assert protocol_of(headers)[1] == "storlet probe.py refused c/caf\u00e9: not an image"
    assert body.decode("utf8").startswith("storlet probe.py refused c/caf\u00e9")


# -- storlet_copy: copies -------------------------------------------------
def copy_request(method="PUT", **headers):
    if method == "PUT":
        return Request.blank(
            DST,
            method="PUT",
            headers=dict(RUN, **{"X-Copy-From": "c/src", "Content-Length": "0"}, **headers),
        )
    return Request.blank(SRC, method="COPY", headers=dict(RUN, Destination="c/dst", **headers))


@pytest.mark.parametrize("method", ["PUT", "COPY"])
def test_a_copy_writes_the_output(swift, method):
    swift.register(
        "GET",
        SRC,
        "200 OK",
        {
            "X-Object-Meta-Storlet-Output-Length": "6",
            "X-Object-Meta-Name": "x",
            "Content-Type": "text/plain",
        },
        b"output",
    )
    swift.register("PUT", DST, "201 Created", {}, b"")
    status, headers, _ = call(
        copy_app(swift), copy_request(method, **{"X-Object-Meta-Extra": "kept"})
    )
    assert status == 201
    assert headers["X-Copied-From"] == "c/src"
    body, put_headers = swift.stored[DST]
    assert body == b"output"
    assert put_headers["X-Object-Meta-Name"] == "x"
    assert put_headers["X-Object-Meta-Extra"] == "kept"
    assert "X-Object-Meta-Storlet-Output-Length" not in put_headers


def test_an_output_the_put_refused_unread_is_closed(swift):
    # The swift fixture checks that the GET's output was closed.
    swift.register("GET", SRC, "200 OK", {"X-Object-Meta-Storlet-Output-Length": "6"}, b"output")
    swift.register("PUT", DST, "413 Request Entity Too Large", {}, b"", read=False)
    status, headers, body = call(copy_app(swift), copy_request())
    assert status == 502 and headers[ERROR] == protocol.FAILED
    assert b"could not be written" in body and DST not in swift.stored


def test_a_refused_copy_writes_nothing(swift):
    swift.register("GET", SRC, "200 OK", {"X-Object-Meta-Storlet-Error": "no face"}, b"")
    status, headers, body = call(copy_app(swift), copy_request())
    assert status == 422 and headers[ERROR] == protocol.REFUSED
    assert b"nothing was written to c/dst" in body
    assert [c[0] for c in swift.calls] == ["GET"]


def test_a_timed_out_copy_writes_nothing(swift):
    swift.register("GET", SRC, "200 OK", {ERROR: protocol.TIMED_OUT, REASON: "slow"}, b"")
    status, headers, body = call(copy_app(swift), copy_request("COPY"))
    assert status == 504 and headers[ERROR] == protocol.TIMED_OUT
    assert b"nothing was written to c/dst" in body
    assert swift.stored == {}


@pytest.mark.parametrize("chunks", [[b"out"], [b"output", b"and more"]])
def test_an_output_not_of_its_declared_length_is_not_stored(swift, chunks):
    swift.register("GET", SRC, "200 OK", {"X-Object-Meta-Storlet-Output-Length": "6"}, chunks)
    swift.register("PUT", DST, "201 Created", {}, b"")
    status, headers, body = call(copy_app(swift), copy_request())
    assert status == 502 and headers[ERROR] == protocol.FAILED
    assert b"nothing was written to c/dst" in body
    assert swift.stored == {}


def test_a_copy_with_a_body_is_refused(swift):
    req = copy_request()
    req.body = b"x"
    status, _, _ = call(copy_app(swift), req)
    assert status == 400 and swift.calls == []


# -- storlet_failure (object servers) ------------------------------------
OBJ = "/d0/1/AUTH_a/c/src"


def failure_app(swift):
    return storlet_failure.filter_factory({})(swift)


@pytest.mark.parametrize(
    "status,upstream_body,kind",
    [
        ("500 Internal Error", b"Storlet execution timed out", protocol.TIMED_OUT),
        ("500 Internal Error", b"Storlet execution failed", protocol.FAILED),
        ("503 Service Unavailable", next(iter(storlet_failure.STORLET_FAILURES)), protocol.FAILED),
    ],
)
def test_an_upstream_failure_is_a_200_the_proxy_will_not_retry(swift, status, upstream_body, kind):
    swift.register("GET", OBJ, status, {}, upstream_body)
    got, headers, body = call(failure_app(swift), get(OBJ))
    assert (got, body) == (200, b"")
    assert headers[ERROR] == kind
    assert "the storlet" in protocol_of(headers)[1]


def test_the_gateways_own_answer_keeps_its_reason(swift):
    swift.register(
        "GET",
        OBJ,
        "504 Gateway Timeout",
        {ERROR: protocol.TIMED_OUT, REASON: "no output within 3 s"},
        b"x",
    )
    got, headers, body = call(failure_app(swift), get(OBJ))
    assert (got, body) == (200, b"")
    assert protocol_of(headers) == (protocol.TIMED_OUT, "no output within 3 s")


@pytest.mark.parametrize(
    "status,headers",
    [
        ("500 Internal Error", RUN),  # Swift's own error
        ("200 OK", RUN),
        ("500 Internal Error", {}),  # not a storlet request
    ],
)
def test_other_answers_are_left_alone(swift, status, headers):
    swift.register("GET", OBJ, status, {}, b"Internal error")
    got, got_headers, body = call(failure_app(swift), get(OBJ, headers))
    assert got == int(status.split()[0]) and body == b"Internal error"
    assert ERROR not in got_headers


# -- user_name (after tempauth) ------------------------------------------
class Recorder(object):
    """The app after user_name: records the environ it was given."""

    def __init__(self):
        self.env = None

    def __call__(self, env, start_response):
        self.env = env
        start_response("204 No Content", [])
        return [b""]


def through_user_name(path="/v1/AUTH_a/c/o", method="GET", remote_user=None, **headers):
    app = Recorder()
    req = Request.blank(path, method=method, headers=headers)
    if remote_user:
        req.environ["REMOTE_USER"] = remote_user
    status, _, body = call(user_name.filter_factory({})(app), req)
    return status, app.env, body


def test_the_user_name_comes_from_tempauth_never_the_client():
    status, env, _ = through_user_name(
        remote_user="other,other:admin,AUTH_other",
        **{"X-User-Name": "forged", "X-Tenant-Name": "forged"},
    )
    assert env["HTTP_X_USER_NAME"] == "admin"
    assert env["HTTP_X_TENANT_NAME"] == "other"
    _, env, _ = through_user_name(**{"X-User-Name": "forged"})
    assert "HTTP_X_USER_NAME" not in env


def test_a_storlet_request_carries_the_qualified_identity():
    _, env, _ = through_user_name(remote_user="other,other:admin,AUTH_other", **RUN)
    assert env["HTTP_X_USER_NAME"] == "other-3aadmin"


@pytest.mark.parametrize(
    "grantee,written",
    [
        ("admin", "mlstorlets-3aadmin"),  # a user of the container's account
        ("other:admin", "other-3aadmin"),
        ("Bob_1:x", "-42ob-5f1-3ax"),
    ],
)
def test_a_grant_is_written_account_qualified(grantee, written):
    _, env, _ = through_user_name(
        "/v1/AUTH_mlstorlets/c",
        "POST",
        "mlstorlets,mlstorlets:admin",
        **{"X-Storlet-Container-Read": grantee, "X-Storlet-Name": "p.py"},
    )
    assert env["HTTP_X_STORLET_CONTAINER_READ"] == written


@pytest.mark.parametrize("grantee", ["a:b,c:d", ":admin", "other:", ""])
def test_a_grant_that_names_no_user_is_refused(grantee):
    status, env, body = through_user_name(
        "/v1/AUTH_a/c", "POST", "a,a:admin", **{"X-Storlet-Container-Read": grantee}
    )
    assert status == 400 and env is None
    assert b"account:user" in body


@pytest.mark.parametrize(
    "referer", ["//storlets.a-3aadmin_p.py", "http://STORLETS.a-3aadmin_p.py/x"]
)
def test_a_client_cannot_send_the_storlet_referrer(referer):
    status, env, _ = through_user_name(Referer=referer)
    assert status == 403 and env is None


def test_the_proxy_publishes_the_limits_clients_plan_by():
    from swift.common.registry import get_swift_info

    storlet_copy.filter_factory({}, max_extract_members="7")
    published = get_swift_info()[protocol.INFO_KEY]
    assert published == {
        "sbus_datagram_limit": protocol.SBUS_DATAGRAM_LIMIT,
        "max_extract_members": 7,
    }
