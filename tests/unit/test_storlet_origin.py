"""storlet_origin against a fake Swift app: object servers run only the
invocations a storlet proxy checked (tests/functional/test_topology.py
sends one past an unconfigured proxy in the real cluster)."""

import pytest
from fake_swift import FakeSwift, call
from swift.common.swob import Request

from mlstorlets.sandbox import protocol
from mlstorlets.server.middleware import storlet_origin
from mlstorlets.server.middleware.storlet_origin import CHECKED_HEADER

OBJ = "/d1/1/AUTH_a/c/o"
RUN = {"X-Run-Storlet": "probe.py"}


@pytest.fixture
def swift():
    fake = FakeSwift()
    yield fake
    assert fake.all_closed, "a response body was left unclosed"


def origin(swift, role):
    return storlet_origin.filter_factory({}, execution_server=role)(swift)


def test_a_proxy_marks_what_its_storlet_handler_passed_on(swift):
    swift.register("GET", "/v1/AUTH_a/c/o", "200 OK", {}, b"out")
    got, _headers, body = call(origin(swift, "proxy"), Request.blank("/v1/AUTH_a/c/o", headers=RUN))
    assert (got, body) == (200, b"out")
    assert swift.calls[0][2][CHECKED_HEADER] == "true"


def test_a_proxy_leaves_other_requests_unmarked(swift):
    swift.register("GET", "/v1/AUTH_a/c/o", "200 OK", {}, b"data")
    call(origin(swift, "proxy"), Request.blank("/v1/AUTH_a/c/o"))
    assert CHECKED_HEADER not in swift.calls[0][2]


def test_an_object_server_refuses_an_invocation_no_storlet_proxy_checked(swift):
    got, headers, body = call(origin(swift, "object"), Request.blank(OBJ, headers=RUN))
    assert got == 403
    assert headers[protocol.ERROR_HEADER] == protocol.REFUSED
    assert b"storlet proxy" in body
    assert swift.calls == []


def test_a_client_cannot_forge_the_mark_past_a_proxy_without_storlets(swift):
    """Swift's gatekeeper, first in every proxy, drops a client's
    X-Backend-* headers: through a proxy without the storlet middleware the
    forged mark never reaches the object server."""
    from swift.common.middleware import gatekeeper

    unconfigured = gatekeeper.filter_factory({})(origin(swift, "object"))
    forged = dict(RUN, **{CHECKED_HEADER: "true"})
    got, _headers, _body = call(unconfigured, Request.blank(OBJ, headers=forged))
    assert got == 403 and swift.calls == []


@pytest.mark.parametrize("headers", [dict(RUN, **{CHECKED_HEADER: "true"}), {}])
def test_an_object_server_passes_checked_invocations_and_plain_requests(swift, headers):
    swift.register("GET", OBJ, "200 OK", {}, b"x")
    got, _headers, body = call(origin(swift, "object"), Request.blank(OBJ, headers=headers))
    assert (got, body) == (200, b"x")


def test_a_role_other_than_proxy_or_object_is_refused(swift):
    with pytest.raises(ValueError):
        origin(swift, "container")
