"""The multi-node cluster of tests/topology.py with Keystone for its auth.

An identity node runs Keystone (PyPI's, on sqlite): the proxy's
``authtoken`` and ``keystoneauth`` are uncommented in Swift's sample
configuration as its comments say, in tempauth's place, before
``deploy/install-node.sh`` runs on every node.  Each account is a Keystone
project with a ``swiftoperator`` user; the users run the README's commands
with nothing but their ``OS_*`` variables.
"""

import json
import os
import shutil
import tempfile

import pytest
from support import data_dir
from topology import Topology, pipeline_names

PER_PERSON = 2
PEOPLE = ("bibi", "merkel", "obama", "trump")

RUN_AS_OTHER = """
import sys, urllib.request, urllib.error
from mlstorlets.client.connection import connection_from_environment
token = connection_from_environment().get_auth()[1]
req = urllib.request.Request(sys.argv[1], headers={"X-Auth-Token": token,
                                                   "X-Run-Storlet": "extract_face.py"})
try:
    urllib.request.urlopen(req, timeout=60)
    print(200)
except urllib.error.HTTPError as err:
    print(err.code)
"""


@pytest.fixture(scope="module")
def topo(request):
    root = tempfile.mkdtemp(prefix="mlsk-")
    failed = request.session.testsfailed
    topology = Topology(root, storage=2, replicas=2, proxy_workers=2, auth="keystone")
    topology.up()
    try:
        for account in ("test", "test2"):
            topology.client(["mlstorlets", "deploy"], account=account)
        yield topology
    finally:
        topology.down()
        if request.session.testsfailed == failed:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def photos(topo, tmp_path_factory):
    """A few photos of each person, uploaded by the ``test`` project's user."""
    local = tmp_path_factory.mktemp("photos")
    train = os.path.join(data_dir(), "train")
    for person in PEOPLE:
        for name in sorted(n for n in os.listdir(train) if n.startswith(person))[:PER_PERSON]:
            shutil.copy(os.path.join(train, name), local)
    topo.client(["mlstorlets", "cp", "file://%s/" % local, "swift://photos/"])
    return sorted(os.listdir(local))


def test_install_node_puts_the_storlet_middleware_behind_keystone(topo):
    with open(topo.proxy.conf("proxy")) as f:
        names = pipeline_names(f.read())
    assert "tempauth" not in names
    assert names.index("authtoken") < names.index("keystoneauth") < names.index("storlet_handler")
    assert "nothing to install" in topo.installed[topo.proxy.name]


def test_the_readme_commands_with_only_os_variables(topo, photos, tmp_path):
    env = topo.env("test")
    assert sorted(env) == sorted(k for k in env if k.startswith("OS_"))
    extracted = topo.client(
        ["mlstorlets", "faces", "extract", "swift://photos/", "swift://faces/"]
        + ["--json", "--in-cluster-only"]
    )
    extracted = json.loads(extracted.stdout)
    assert (len(extracted["done"]), extracted["failed"]) == (len(photos), [])
    # One object alone: on a storage node that holds it.
    topo.client(
        ["mlstorlets", "run", "extract_face.py", "swift://photos/%s" % photos[0]]
        + ["swift://single/one.png"]
    )
    topo.client(["mlstorlets", "cp", "swift://faces/", "file://%s/" % tmp_path])
    copied = sorted(n for n in os.listdir(tmp_path) if not n.startswith("."))
    assert copied == [n.rsplit(".", 1)[0] + ".png" for n in photos]
    # The account is the project's, as the catalog names it.
    listed = topo.client(["swift", "stat"]).stdout
    assert "AUTH_%s" % topo.projects["test"] in listed


def test_only_the_reseller_admin_enables_a_project(topo):
    denied = topo.client(
        ["swift", "post", "-m", "Storlet-Enabled:True"], account="test2", check=False
    )
    assert denied.returncode and "403" in denied.stdout + denied.stderr
    topo.client(["swift", "upload", "--object-name", "p.jpeg", "own", __file__], account="test2")
    topo.enable("test2", False)
    try:
        refused = topo.client(
            ["mlstorlets", "run", "extract_face.py", "swift://own/p.jpeg", "swift://out/p.png"],
            account="test2",
            check=False,
        )
        assert refused.returncode == 1
        assert (
            "400 storlet extract_face.py failed over own/p.jpeg (Account disabled for storlets)"
            in (refused.stdout)
        )
    finally:
        topo.enable("test2", True)


def test_a_project_runs_no_storlet_over_anothers_objects(topo, photos):
    url = "%s/photos/%s" % (topo.storage_url("test"), photos[0])
    # keystoneauth's answer to a token of another project (that has no
    # role on this one): 401, before any storlet middleware.
    assert topo.client(["python", "-c", RUN_AS_OTHER, url], account="test2").stdout.split() == [
        "401"
    ]
    assert topo.client(["python", "-c", RUN_AS_OTHER, url]).stdout.split() == ["200"]
