"""A multi-node cluster installed as an operator installs one.

One proxy node and three storage nodes (3 replicas), each a network
namespace with its own address and configuration written from Swift's own
samples, storlets added by ``deploy/install-node.sh`` alone (see
tests/topology.py); a client namespace runs the README's commands against
the proxy, and the operations an operator performs on a live cluster are
done under load: a new storlet version deployed, storage nodes restarted
one by one, a storage node stopped.
"""

import json
import os
import shutil
import tempfile
import time
import uuid

import cv2
import numpy as np
import pytest
from support import data_dir
from topology import Topology, pipeline_names

from mlstorlets.server.node import STORLET_CACHE_TIME

FRAMES = 240
TRAIN_PER_PERSON = 4
PEOPLE = ("bibi", "merkel", "obama", "trump")


@pytest.fixture(scope="module")
def topo(request):
    # Short: the sandboxes' socket paths live under it.
    root = tempfile.mkdtemp(prefix="mlst-")
    failed = request.session.testsfailed
    topology = Topology(root, storage=3, replicas=3, proxy_workers=2)
    topology.up()
    try:
        topology.client(["mlstorlets", "deploy"])
        yield topology
    finally:
        topology.down()
        # A failed test's logs are kept for reading.
        if request.session.testsfailed == failed:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def servers_kept_serving(topo):
    """After each test: no server process died of an error, and the proxy
    node (never restarted here) started each account's sandbox once,
    whichever of its workers took the account's first requests."""
    yield
    assert topo.log(r"UNCAUGHT EXCEPTION") == []
    starts = topo.log(r"^<\d+>proxy-proxy: starting the sandbox of scope")
    scopes = [line.split("scope ")[1].split()[0] for line in starts]
    assert len(scopes) == len(set(scopes)), starts


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """The client's own files: a few photos of each person, the test photos,
    small frames."""
    root = tmp_path_factory.mktemp("client")
    data = data_dir()
    train = root / "photos" / "train"
    train.mkdir(parents=True)
    for person in PEOPLE:
        photos = sorted(n for n in os.listdir(os.path.join(data, "train")) if n.startswith(person))
        for name in photos[:TRAIN_PER_PERSON]:
            shutil.copy(os.path.join(data, "train", name), train)
    shutil.copytree(os.path.join(data, "test"), root / "photos" / "test")
    frames = root / "frames"
    frames.mkdir()
    rng = np.random.RandomState(0)
    for i in range(FRAMES):
        image = rng.randint(0, 255, (120, 160, 3), dtype=np.uint8)
        cv2.imwrite(str(frames / ("f%04d.jpg" % i)), image)
    return root


def summary(done):
    return json.loads(done.stdout)


HEADS = """
import sys
from mlstorlets.client.connection import connection_from_environment
from swiftclient.exceptions import ClientException
conn = connection_from_environment()
for name in sys.argv[2:]:
    try:
        conn.head_object(sys.argv[1], name)
    except ClientException as err:
        print(name, err.http_status)
"""


def missing(topo, container, names):
    """Which of ``names`` a HEAD does not find (a listing may lag behind a
    node that was down: Swift updates it later)."""
    done = topo.client(["python", "-c", HEADS, container] + list(names))
    return done.stdout.split("\n")[:-1]


def sandboxes(node):
    """The account sandboxes ``node`` started (their channel directories)."""
    pipes = os.path.join(node.host_root, "pipes", "scopes")
    return os.listdir(pipes) if os.path.isdir(pipes) else []


def listing(topo, container, prefix="", account="test"):
    done = topo.client(["swift", "list", container, "--prefix", prefix], account=account)
    return done.stdout.split()


# -- the install ----------------------------------------------------------
def test_install_node_adds_storlets_to_every_node_and_nothing_to_swift(topo):
    import importlib.metadata

    for node in topo.nodes:
        role = "proxy" if node is topo.proxy else "object"
        with open(node.conf(role)) as f:
            conf = f.read()
        assert "storlet_handler" in pipeline_names(conf)
        # The operator's file is kept, and every line of it but the
        # pipeline's survives the install, comments included.
        with open(node.conf(role) + ".mlstorlets-orig") as f:
            operators = f.read().splitlines()
        assert len(operators) > 100
        lines = set(conf.splitlines())
        assert [line for line in operators if line not in lines] == [
            line for line in operators if line.startswith("pipeline =")
        ]
        assert os.path.exists(os.path.join(node.swift_dir, "storlet-gateway.conf"))
        assert "nothing to install" in topo.installed[node.name]
    assert importlib.metadata.version("swift") == "2.38.3"


def test_install_node_twice_changes_nothing(topo):
    node = topo.storage[0]
    files = [node.conf("object")] + [
        os.path.join(node.swift_dir, name)
        for name in ("storlet-gateway.conf", "storlet-internal-client.conf")
    ]
    before = {path: (open(path).read(), os.stat(path).st_mtime_ns) for path in files}
    output = topo.install(node)[node.name]
    assert {path: (open(path).read(), os.stat(path).st_mtime_ns) for path in files} == before
    assert "nothing to change" in output


def test_node_config_remove_leaves_the_stock_configuration(topo, tmp_path):
    """An uninstall leaves the file the operator had before the install, and
    deletes the gateway files the installed one names."""
    node = topo.storage[1]
    stock = tmp_path / "object-server.conf"
    shutil.copy(node.conf("object") + ".mlstorlets-orig", stock)
    # A copy of the node's installed files, naming the copies: the node
    # itself keeps serving.
    installed = tmp_path / "installed.conf"
    own = ("storlet-gateway.conf", "storlet-internal-client.conf")
    for name in own:
        shutil.copy(os.path.join(node.swift_dir, name), tmp_path)
    with open(node.conf("object")) as f:
        text = f.read()
    for name in own:
        text = text.replace(os.path.join(node.swift_dir, name), str(tmp_path / name))
    installed.write_text(text)
    topo.client(
        ["mlstorlets", "node-config", "--role", "object", "--server-conf", str(installed)]
        + ["--conf-dir", str(tmp_path), "--remove"]
    )
    assert installed.read_text() == stock.read_text()
    assert "storlet_handler" not in stock.read_text()
    assert not any((tmp_path / name).exists() for name in own)
    assert all(os.path.exists(os.path.join(node.swift_dir, name)) for name in own)


DIRECT = """
import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1], headers={"X-Run-Storlet": "extract_face.py",
                                                   "X-Backend-Storlet-Checked": sys.argv[2]})
try:
    urllib.request.urlopen(req, timeout=10)
    print(200)
except urllib.error.HTTPError as err:
    print(err.code)
"""


def test_an_object_server_runs_no_invocation_a_storlet_proxy_did_not_check(topo):
    """What a proxy without the storlet middleware would forward (a
    client's X-Run-Storlet) is refused; only a storlet proxy's mark, which
    Swift's gatekeeper keeps clients from forging, passes."""
    url = "http://%s:6200/d1/0/AUTH_test/photos/any.jpeg" % topo.storage[0].ip
    assert topo.client(["python", "-c", DIRECT, url, "no"]).stdout.split() == ["403"]
    # Marked, it reaches the object server itself (no such object there).
    assert topo.client(["python", "-c", DIRECT, url, "true"]).stdout.split() == ["404"]


# -- the README's commands, from the client node --------------------------
def test_faces_extract_train_recognize_across_the_nodes(topo, local, tmp_path):
    topo.client(["mlstorlets", "cp", "file://%s/photos/" % local, "swift://photos/"])
    extracted = summary(
        topo.client(
            ["mlstorlets", "faces", "extract", "swift://photos/train/", "swift://faces/train/"]
            + ["--json", "--in-cluster-only"]
        )
    )
    assert len(extracted["done"]) == TRAIN_PER_PERSON * len(PEOPLE) and not extracted["failed"]
    topo.client(
        ["mlstorlets", "faces", "train", "swift://faces/train/", "swift://models/f.npz"]
        + ["--labels", "name:^([a-z]+)"]
    )
    recognized = summary(
        topo.client(
            ["mlstorlets", "faces", "recognize", "swift://models/f.npz", "swift://photos/test/"]
            + ["swift://tagged/test/", "--json"]
        )
    )
    assert len(recognized["done"]) == 8 and not recognized["failed"]
    # And back to the client's own disk.
    topo.client(["mlstorlets", "cp", "swift://tagged/test/", "file://%s/" % tmp_path])
    copied = [n for n in os.listdir(tmp_path) if not n.startswith(".")]
    assert sorted(copied) == sorted(os.listdir(local / "photos" / "test"))
    # Small photos go many to a call, and training reads every face: each
    # storage node holds every object here (3 replicas on 3 nodes), so the
    # calls run on storage nodes, which read the objects' files (found by
    # their own address in the ring: every node's device is d1).  The
    # proxy node runs none.
    assert [node.name for node in topo.storage if sandboxes(node)]
    assert not sandboxes(topo.proxy)


def test_remote_fit_and_predict_across_the_nodes(topo):
    script = """
import numpy as np
from mlstorlets.client.connection import connection_from_environment
from mlstorlets.client.incremental import SGDClassifier
conn = connection_from_environment()
conn.put_container("iris")
rng = np.random.RandomState(0)
for i in range(4):
    X = rng.rand(50, 3)
    y = (X.sum(axis=1) > 1.5).astype(int)
    rows = np.column_stack([X, y])
    conn.put_object("iris", "train/part%d.csv" % i,
                    "\\n".join(",".join(map(repr, map(float, r))) for r in rows))
    conn.put_object("iris", "new/part%d.csv" % i,
                    "\\n".join(",".join(map(repr, map(float, r))) for r in X))
est = SGDClassifier(random_state=0, max_iter=5)
est.remote_fit("swift://iris/train/", connection=conn)
score = est.remote_score("swift://iris/train/", connection=conn)
summary = est.remote_predict("swift://iris/new/", "swift://iris/pred/", connection=conn)
print(score, len(summary.done), len(summary.failed))
"""
    done = topo.client(["python", "-c", script])
    score, done_count, failed = done.stdout.split()
    assert float(score) > 0.7
    assert (int(done_count), int(failed)) == (4, 0)
    assert len(listing(topo, "iris", "pred/")) == 4


def test_rotoscope_across_the_nodes(topo):
    video = os.path.join(data_dir(), "video", "obama_mov.avi")
    topo.client(["mlstorlets", "cp", "file://" + video, "swift://videos/clip.avi"])
    topo.client(
        ["mlstorlets", "rotoscope", "swift://videos/clip.avi", "swift://videos/out/"]
        + ["--filter", "colormap", "--width", "160"]
    )
    outputs = [name for name in listing(topo, "videos", "out/") if "/" not in name[4:]]
    assert outputs, listing(topo, "videos", "out/")


# -- operations under load --------------------------------------------------
VERSIONED = """
class VersionStorlet(object):
    def __init__(self, logger):
        pass

    def __call__(self, in_files, out_files, params):
        in_files[0].read()
        out_files[0].set_metadata({})
        out_files[0].write(b"%s")
        out_files[0].close()
"""


# Three threads of GETs through the storlet for ``seconds``, in a client
# process: each answer with its (wall clock) time.
REQUESTS = """
import json, sys, threading, time
from mlstorlets.client.connection import connection_from_environment
storlet, seconds = sys.argv[1], float(sys.argv[2])
answers, end = [], time.time() + seconds

def run():
    conn = connection_from_environment()
    conn.retries = 0
    while time.time() < end:
        try:
            _h, body = conn.get_object("v", "x", headers={"X-Run-Storlet": storlet})
            answers.append([time.time(), body.decode()])
        except Exception as err:
            answers.append([time.time(), "error: %r" % err])

threads = [threading.Thread(target=run) for _ in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(answers))
"""


def test_a_new_storlet_version_deployed_while_requests_run(topo, tmp_path):
    name = "version%s" % uuid.uuid4().hex[:8]
    source = tmp_path / "storlets"
    source.mkdir()
    (source / (name + ".py")).write_text(VERSIONED % "one")
    topo.client(["mlstorlets", "deploy", "--source", str(source), "--no-library"])
    topo.client(["swift", "upload", "--object-name", "x", "v", __file__])
    requests = topo.client_popen(["python", "-c", REQUESTS, name + ".py", "8"])
    try:
        time.sleep(3)
        (source / (name + ".py")).write_text(VERSIONED % "two")
        topo.client(["mlstorlets", "deploy", "--source", str(source), "--no-library"])
        deployed = time.time()
    finally:
        out, err = requests.communicate(timeout=120)
    answers = json.loads(out)
    assert len(answers) > 10, err[-2000:]
    assert {body for _t, body in answers} == {"one", "two"}, answers[:3]
    # Through the proxy that took the upload, the new version at once; the
    # documented bound is the storlet cache's time.
    late = [t - deployed for t, body in answers if body == "one" and t > deployed]
    assert not late or max(late) < float(STORLET_CACHE_TIME)
    assert answers[-1][1] == "two"


@pytest.fixture(scope="module")
def frames(topo, local):
    """The frames, uploaded once: the runs below write beside them."""
    topo.client(["mlstorlets", "cp", "-j", "8", "file://%s/frames/" % local, "swift://frames/src/"])
    names = ["src/f%04d.jpg" % i for i in range(FRAMES)]
    return names


def _filter_run(topo, prefix):
    return topo.client_popen(
        ["mlstorlets", "run", "frame_filter.py", "swift://frames/src/"]
        + ["swift://frames/%s/" % prefix, "-p", "filter=cartoon", "--json", "-j", "2"]
    )


def _finish(proc):
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def test_a_rolling_restart_of_the_storage_nodes_under_a_batch_run(topo, frames):
    proc = _filter_run(topo, "rolling")
    try:
        time.sleep(1)
        for node in topo.storage:
            topo.restart(node)
    finally:
        code, out, err = _finish(proc)
    result = json.loads(out)
    # Nothing lost, and every frame done once: the restarts cost retries,
    # not objects.
    assert missing(topo, "frames", frames) == []
    others = {k: v for k, v in result.items() if k not in ("done", "outputs")}
    assert not result["failed"], (result["failed"][:5], err[-2000:])
    assert len(result["done"]) == FRAMES, (others, err[-3000:])
    outputs = [name.replace("src/", "rolling/") for name in frames]
    assert missing(topo, "frames", outputs) == []


def test_a_storage_node_stopped_mid_run(topo, frames):
    node = topo.storage[2]
    proc = _filter_run(topo, "stopped")
    try:
        time.sleep(1)
        for server in node.servers:
            topo.stop(node, server)
    finally:
        code, out, err = _finish(proc)
        for server in node.servers:
            topo.start(node, server)
        for server in node.servers:
            topo.wait(node, server)
    result = json.loads(out)
    # Two replicas of every object remain: the run completes on them.
    assert not result["failed"], (result["failed"][:5], err[-2000:])
    assert len(result["done"]) == FRAMES
    outputs = [name.replace("src/", "stopped/") for name in frames]
    assert missing(topo, "frames", outputs) == []
