"""storlet_extra_resources against a fake Swift app (no cluster).

tests/functional/test_extra_resources.py runs it in the real cluster,
behind upstream's storlet middleware.
"""

import urllib.parse

import pytest
from fake_swift import FakeSwift, call
from swift.common.swob import HTTPException, Request

from mlstorlets.sandbox import protocol
from mlstorlets.server.middleware import extra_resources

RESOURCE = "/v1/AUTH_a/c/extra.txt"


@pytest.fixture
def swift():
    fake = FakeSwift()
    yield fake
    assert fake.all_closed, "a response body was left unclosed"


def app(swift):
    return extra_resources.filter_factory({})(swift)


def subrequest(path=RESOURCE, agent="ST", **headers):
    return Request.blank(path, headers=dict(headers, **{"User-Agent": agent}))


def test_a_readable_resource_passes_through(swift):
    swift.register("GET", RESOURCE, "200 OK", {}, b"data")
    assert call(app(swift), subrequest())[::2] == (200, b"data")


@pytest.mark.parametrize(
    "status, code, kind",
    [
        ("404 Not Found", 422, protocol.REFUSED),
        ("403 Forbidden", 422, protocol.REFUSED),
        ("503 Service Unavailable", 502, protocol.FAILED),
    ],
)
def test_an_unreadable_resource_stops_the_invocation(swift, status, code, kind):
    swift.register("GET", RESOURCE, status, {}, b"<html>error page</html>")
    with pytest.raises(HTTPException) as raised:
        subrequest().get_response(app(swift))
    answer = raised.value
    assert answer.status_int == code
    assert answer.headers[protocol.ERROR_HEADER] == kind
    reason = urllib.parse.unquote(answer.headers[protocol.REASON_HEADER])
    assert reason == "extra resource c/extra.txt could not be read: " + status
    assert b"error page" not in answer.body


@pytest.mark.parametrize(
    "request_",
    [
        subrequest(agent="curl"),  # a client's GET
        subrequest(**{"X-Run-Storlet": "probe.py"}),  # the storlet request
        subrequest("/v1/AUTH_a/storlet/probe.py"),  # upstream's own reads
        subrequest("/v1/AUTH_a/dependency/lib.zip"),
    ],
)
def test_other_gets_are_left_alone(swift, request_):
    swift.register("GET", request_.path, "404 Not Found", {}, b"nothing")
    assert call(app(swift), request_)[0] == 404
