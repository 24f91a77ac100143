"""Only a reseller admin enables storlets on an account, in the real
cluster's tempauth: the account ``other``'s own admin may not, even on its
own account; the main account's user (a reseller admin) may."""

import pytest
from swiftclient.client import Connection
from swiftclient.exceptions import ClientException

KEY = "X-Account-Meta-Storlet-Enabled"


def test_an_account_admin_cannot_enable_or_disable_storlets(other_conn):
    for headers in ({KEY: "True"}, {KEY: "False"}, {"X-Remove-Account-Meta-Storlet-Enabled": "x"}):
        with pytest.raises(ClientException) as err:
            other_conn.post_account(headers)
        assert err.value.http_status == 403
    assert other_conn.head_account()[KEY.lower()] == "True"


def test_the_reseller_admin_can(conn, other_conn):
    _url, token = conn.get_auth()
    reseller = Connection(preauthurl=other_conn.get_auth()[0], preauthtoken=token, retries=1)
    reseller.post_account({KEY: "True"})
    assert other_conn.head_account()[KEY.lower()] == "True"
