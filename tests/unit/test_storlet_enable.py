"""storlet_enable against a fake Swift app (no cluster); the real
cluster's tempauth in tests/functional/test_enabling_storlets.py."""

import pytest
from fake_swift import FakeSwift, call
from swift.common.swob import Request

from mlstorlets.server.middleware import storlet_enable


@pytest.fixture
def swift():
    fake = FakeSwift()
    for method in ("POST", "PUT"):
        fake.register(method, "/v1/AUTH_a", "204 No Content")
        fake.register(method, "/v1/AUTH_a/c", "204 No Content")
    yield fake
    assert fake.all_closed


def app(swift):
    return storlet_enable.filter_factory({})(swift)


@pytest.mark.parametrize("method", ["POST", "PUT"])
@pytest.mark.parametrize(
    "header", ["X-Account-Meta-Storlet-Enabled", "X-Remove-Account-Meta-Storlet-Enabled"]
)
def test_an_account_admin_cannot_switch_storlets(swift, method, header):
    req = Request.blank("/v1/AUTH_a", method=method, headers={header: "True"})
    status, _, body = call(app(swift), req)
    assert status == 403 and b"reseller admin" in body
    assert swift.calls == []


def test_a_reseller_admin_can(swift):
    req = Request.blank(
        "/v1/AUTH_a",
        method="POST",
        environ={"reseller_request": True},
        headers={"X-Account-Meta-Storlet-Enabled": "True"},
    )
    assert call(app(swift), req)[0] == 204


@pytest.mark.parametrize(
    "path, headers",
    [
        ("/v1/AUTH_a", {"X-Account-Meta-Other": "x"}),
        ("/v1/AUTH_a/c", {"X-Account-Meta-Storlet-Enabled": "True"}),
    ],
)
def test_other_requests_are_left_alone(swift, path, headers):
    req = Request.blank(path, method="POST", headers=headers)
    assert call(app(swift), req)[0] == 204
