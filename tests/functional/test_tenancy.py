"""Storlet ACLs between two accounts that both have a user ``admin``.

``mlstorlets:admin`` (``conn``) owns the data; ``other:admin``
(``other_conn``) is a user of another account with the same user name.
"""

import pytest
import swiftclient.client as swift
from swiftclient.exceptions import ClientException

PROBE = "probe.py"


@pytest.fixture
def shared(conn, other_conn, container):
    """``container`` of the main account holding ``x.txt``, and the main
    account's storlets readable by ``other:admin`` for the test's length
    (running a storlet needs read access to it)."""
    conn.put_object(container, "x.txt", b"data of mlstorlets")
    before = conn.head_container("storlet").get("x-container-read", "")
    conn.post_container("storlet", {"X-Container-Read": "other:admin"})
    url, _ = conn.get_auth()
    _, token = other_conn.get_auth()
    yield url, token
    conn.post_container("storlet", {"X-Container-Read": before})


def grant(conn, container, user):
    conn.post_container(container, {"X-Storlet-Container-Read": user, "X-Storlet-Name": PROBE})


def as_other(shared, container, headers=None):
    url, token = shared
    return swift.get_object(url, token, container, "x.txt", headers=headers)


def test_a_grant_to_a_user_name_is_not_a_grant_to_another_account(conn, container, shared):
    grant(conn, container, "admin")
    with pytest.raises(ClientException) as err:
        as_other(shared, container, {"X-Run-Storlet": PROBE})
    assert err.value.http_status in (401, 403)
    # The grant is written account-qualified.
    acl = conn.head_container(container)["x-container-read"]
    assert acl == ".r:storlets.mlstorlets-3aadmin_probe.py"


def test_a_grant_to_an_account_qualified_user(conn, container, shared):
    grant(conn, container, "other:admin")
    headers, body = as_other(shared, container, {"X-Run-Storlet": PROBE})
    assert body == b"data of mlstorlets"
    assert headers["x-object-meta-probe-host"].startswith("object-server-")
    # Only through the storlet.
    with pytest.raises(ClientException) as err:
        as_other(shared, container)
    assert err.value.http_status == 403


def test_a_grant_names_one_user(conn, container):
    for bad in ("a:b,c:d", ":admin", "other:"):
        with pytest.raises(ClientException) as err:
            grant(conn, container, bad)
        assert err.value.http_status == 400


@pytest.mark.parametrize("case", [str.lower, str.upper])
def test_the_grants_referrer_opens_nothing_by_itself(cluster, conn, container, case):
    """A storlet ACL is a referrer ACL: a client that sends its referrer,
    in any case, must not read the container."""
    conn.put_object(container, "x.txt", b"data of mlstorlets")
    grant(conn, container, "admin")
    acl = conn.head_container(container)["x-container-read"]
    referer = case("//" + acl[len(".r:") :])
    url, _ = conn.get_auth()
    for token in ("", cluster.connection("other").get_auth()[1]):
        with pytest.raises(ClientException) as err:
            swift.get_object(url, token, container, "x.txt", headers={"Referer": referer})
        assert err.value.http_status in (401, 403)


def test_a_grant_to_run_a_storlet_is_not_a_grant_to_feed_it(conn, container, shared):
    # Reading an object only through a storlet gives that storlet's output
    # over the owner's data, not a say in its inputs.
    grant(conn, container, "other:admin")
    url, token = shared
    with pytest.raises(ClientException) as err:
        swift.get_object(
            url,
            token,
            container,
            "x.txt",
            headers={
                "X-Run-Storlet": PROBE,
                "X-Mlstorlets-Body-Input": "true",
                "Content-Length": "0",
            },
        )
    assert err.value.http_status == 403
    assert b"needs the right to read the object" in err.value.http_response_content
    # The owner may.
    _, body = conn.get_object(
        container, "x.txt", headers={"X-Run-Storlet": PROBE, "X-Mlstorlets-Body-Input": "true"}
    )
    assert body == b"data of mlstorlets"


def test_a_resource_the_caller_may_not_read_is_refused_wherever_it_would_run(
    conn, container, shared
):
    # other:admin may read the container, not the one next to it.
    conn.post_container(container, {"X-Container-Read": "other:admin"})
    conn.put_container(container + "-private")
    try:
        conn.put_object(container + "-private", "p.txt", b" private")
        with pytest.raises(ClientException) as err:
            as_other(
                shared,
                container,
                {
                    "X-Run-Storlet": PROBE,
                    "X-Storlet-Extra-Resources": "/%s-private/p.txt" % container,
                },
            )
        assert err.value.http_status == 422
        assert b" private" not in (err.value.http_response_content or b"")
        assert "p.txt could not be read: 403" in err.value.http_response_headers[
            "X-Mlstorlets-Reason"
        ].replace("%20", " ")
        # The container it may read: on an object server.
        conn.put_object(container, "y.txt", b" more")
        headers, body = as_other(
            shared,
            container,
            {"X-Run-Storlet": PROBE, "X-Storlet-Extra-Resources": "/%s/y.txt" % container},
        )
        assert body == b"data of mlstorlets more"
        assert headers["x-mlstorlets-ran-on"] == "object-server"
    finally:
        conn.delete_object(container + "-private", "p.txt")
        conn.delete_container(container + "-private")
