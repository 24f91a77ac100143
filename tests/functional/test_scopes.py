"""Accounts whose names share their first 13 characters share nothing.

Upstream cut the sandbox scope to the account's first 13 characters: the
accounts ``acmecorporation1`` and ``acmecorporation2`` got one sandbox, one
uid and one ``/tmp``, and, running a storlet of the same main class, the
same worker process.  The attacker's storlet here writes a file in its
``/tmp``, reads its uid and leaves a mark in its worker's module state; the
victim's storlet of the same class must see none of them.
"""

import os
import tempfile
import uuid

import pytest
from support import REPO, hostile
from swiftclient.client import Connection

from mlstorlets.client.deploy import deploy
from mlstorlets.server.node import STORLET_CONTAINERS

ACCOUNTS = ("AUTH_acmecorporation1", "AUTH_acmecorporation2")
HOSTILE = os.path.join(REPO, "tests", "storlets", "hostile.py")


@pytest.fixture(scope="module")
def accounts(conn):
    """A connection to each account, made by the reseller admin (the main
    account's user), storlet-enabled, with the hostile storlet deployed."""
    url, token = conn.get_auth()
    base = url.rsplit("/", 1)[0]
    made = {}
    with tempfile.TemporaryDirectory() as source:
        with open(HOSTILE, "rb") as f, open(os.path.join(source, "hostile.py"), "wb") as out:
            out.write(f.read())
        for account in ACCOUNTS:
            account_conn = Connection(
                preauthurl="%s/%s" % (base, account), preauthtoken=token, retries=2
            )
            account_conn.post_account({"X-Account-Meta-Storlet-Enabled": "True"})
            for container in STORLET_CONTAINERS.values():
                account_conn.put_container(container)
            deploy(account_conn, source, library=False, log=lambda m: None)
            account_conn.put_container("data")
            account_conn.put_object("data", "x", b"x")
            made[account] = account_conn
    return made


def test_accounts_sharing_13_characters_get_sandboxes_of_their_own(accounts):
    attacker, victim = (accounts[a] for a in ACCOUNTS)
    mark = uuid.uuid4().hex
    assert hostile(attacker, "data", "plant-tmp", mark=mark).startswith("allowed")
    assert hostile(attacker, "data", "plant-module", mark=mark).startswith("allowed")
    uid_attacker = hostile(attacker, "data", "whoami").split()[1]
    uid_victim = hostile(victim, "data", "whoami").split()[1]
    seen_tmp = hostile(victim, "data", "find-tmp", mark=mark)
    seen_module = hostile(victim, "data", "find-module", mark=mark)
    print(
        "uids %s and %s; the victim found the /tmp mark: %s; the module "
        "mark: %s" % (uid_attacker, uid_victim, seen_tmp, seen_module)
    )
    assert uid_attacker != uid_victim
    assert seen_tmp == "allowed not found"
    assert seen_module == "allowed not found"
