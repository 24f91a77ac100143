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
from support import REPO
from swiftclient.client import Connection

from mlstorlets.client.deploy import deploy
from mlstorlets.server.node import STORLET_CONTAINERS

ACCOUNTS = ('AUTH_acmecorporation1', 'AUTH_acmecorporation2')
HOSTILE = os.path.join(REPO, 'tests', 'storlets', 'hostile.py')
RESULT = 'x-object-meta-hostile-result'


@pytest.fixture(scope='module')
def accounts(conn):
    """A connection to each account, made by the reseller admin (the main
    account's user), storlet-enabled, with the hostile storlet deployed."""
    url, token = conn.get_auth()
    base = url.rsplit('/', 1)[0]
    made = {}
    with tempfile.TemporaryDirectory() as source:
        with open(HOSTILE, 'rb') as f, \
                open(os.path.join(source, 'hostile.py'), 'wb') as out:
            out.write(f.read())
        for account in ACCOUNTS:
            account_conn = Connection(preauthurl='%s/%s' % (base, account),
                                      preauthtoken=token, retries=2)
            account_conn.post_account(
                {'X-Account-Meta-Storlet-Enabled': 'True'})
            for container in STORLET_CONTAINERS.values():
                account_conn.put_container(container)
            deploy(account_conn, source, library=False, log=lambda m: None)
            account_conn.put_container('data')
            account_conn.put_object('data', 'x', b'x')
            made[account] = account_conn
    return made


def attack(account_conn, action, **params):
    headers = {'X-Run-Storlet': 'hostile.py',
               'X-Storlet-Parameter-1': 'action:' + action}
    for i, (key, value) in enumerate(sorted(params.items()), 2):
        headers['X-Storlet-Parameter-%d' % i] = '%s:%s' % (key, value)
    # On the proxy: the two accounts' requests then surely meet on one
    # server, where a shared sandbox would show.
    headers['X-Storlet-Run-On-Proxy'] = ''
    headers_out, _ = account_conn.get_object('data', 'x', headers=headers)
    return headers_out[RESULT]


def test_accounts_sharing_13_characters_get_sandboxes_of_their_own(
        accounts):
    attacker, victim = (accounts[a] for a in ACCOUNTS)
    mark = uuid.uuid4().hex
    assert attack(attacker, 'plant-tmp', mark=mark).startswith('allowed')
    assert attack(attacker, 'plant-module', mark=mark).startswith('allowed')
    uid_attacker = attack(attacker, 'whoami').split()[1]
    uid_victim = attack(victim, 'whoami').split()[1]
    seen_tmp = attack(victim, 'find-tmp', mark=mark)
    seen_module = attack(victim, 'find-module', mark=mark)
    print('uids %s and %s; the victim found the /tmp mark: %s; the module '
          'mark: %s' % (uid_attacker, uid_victim, seen_tmp, seen_module))
    assert uid_attacker != uid_victim
    assert seen_tmp == 'allowed not found'
    assert seen_module == 'allowed not found'
