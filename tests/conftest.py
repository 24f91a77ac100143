"""Fixtures shared by the whole suite: one real embedded cluster a session.

The cluster is real Swift with the real storlets engine and the bubblewrap
sandbox.  If it cannot start, every test that needs it errors: a cluster
that is missing is a failure to report, never a skip.
"""

import os
import re
import shutil
import tempfile

import pytest
from support import free_base_port

from mlstorlets.client.deploy import deploy
from mlstorlets.server.aio import Cluster

HERE = os.path.dirname(os.path.abspath(__file__))
TEST_STORLETS = os.path.join(HERE, "storlets")
NODES = 3


@pytest.fixture(scope="session")
def cluster():
    # Not under pytest's deep tmp_path: the sandboxes' Unix socket paths,
    # which live in the state directory, must stay under 108 bytes.
    state = tempfile.mkdtemp(prefix="mls-")
    cluster = Cluster(state)
    quiet = lambda msg: None  # noqa: E731
    try:
        cluster.up(base_port=free_base_port(), nodes=NODES, log=quiet)
        for account in ("main", "other"):
            deploy(cluster.connection(account), log=quiet)
        deploy(cluster.connection(), TEST_STORLETS, library=False, log=quiet)
        # The hostile storlet in the other account too (the sandbox tests
        # attack one account from the other); the probe stays the main
        # account's.
        with tempfile.TemporaryDirectory() as hostile:
            shutil.copy(os.path.join(TEST_STORLETS, "hostile.py"), hostile)
            deploy(cluster.connection("other"), hostile, library=False, log=quiet)
        yield cluster
    finally:
        # Also when a deploy failed: no servers outlive the session.
        cluster.down(purge=True, log=quiet)


@pytest.fixture(scope="session")
def conn(cluster):
    return cluster.connection()


@pytest.fixture(scope="session")
def other_conn(cluster):
    return cluster.connection("other")


@pytest.fixture
def container(conn, request):
    """A fresh container for one test, removed with its objects after it."""
    name = "test-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:80]
    conn.put_container(name)
    yield name
    for entry in conn.get_container(name, full_listing=True)[1]:
        conn.delete_object(name, entry["name"])
    conn.delete_container(name)
