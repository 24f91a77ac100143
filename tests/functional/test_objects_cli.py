"""mlstorlets ls, cat, stat, rm and storlets against the real cluster.

Each command runs as a user runs it: ``mlstorlets`` in a process of its
own, with the environment ``mlstorlets aio env`` prints.
"""

import json
import os
import subprocess
import sys

import pytest
from support import REPO


def cli(env, *args, stdin=None):
    done = subprocess.run(
        [sys.executable, "-m", "mlstorlets.client.cli"] + list(args),
        env=dict(os.environ, **env),
        capture_output=True,
        cwd=REPO,
        input=stdin,
        timeout=300,
    )
    return done.returncode, done.stdout, done.stderr.decode()


@pytest.fixture(scope="module")
def env(cluster):
    return cluster.env()


@pytest.fixture
def objects(conn, container):
    conn.put_object(
        container,
        "in/a.jpg",
        b"jpeg bytes",
        content_type="image/jpeg",
        headers={"X-Object-Meta-Name": "José"},
    )
    conn.put_object(container, "in/b.csv", b"1,2\n3,4\n")
    conn.put_object(container, "in/deep/c.csv", b"5,6\n")
    return container


def test_ls_stat_and_cat_of_swift_objects(env, objects):
    status, out, err = cli(env, "ls", "swift://%s/in/" % objects, "--json")
    assert status == 0, err
    found = json.loads(out)
    assert [(f["uri"], f["size"]) for f in found] == [
        ("swift://%s/in/a.jpg" % objects, 10),
        ("swift://%s/in/b.csv" % objects, 8),
        ("swift://%s/in/deep/c.csv" % objects, 4),
    ]
    status, out, _ = cli(
        env, "ls", "swift://%s/in/" % objects, "--exclude", "*", "--include", "*.csv"
    )
    assert [line.split()[-1] for line in out.decode().splitlines()] == [
        "swift://%s/in/b.csv" % objects,
        "swift://%s/in/deep/c.csv" % objects,
    ]

    status, out, err = cli(env, "stat", "swift://%s/in/a.jpg" % objects, "--json")
    assert status == 0, err
    found = json.loads(out)
    assert found["metadata"] == {"Name": "José"}
    assert found["headers"]["Content-Type"] == "image/jpeg"

    status, out, _ = cli(env, "cat", "swift://%s/in/b.csv" % objects)
    assert (status, out) == (0, b"1,2\n3,4\n")


def test_rm_of_a_prefix_asks_for_force_and_deletes_what_is_selected(env, conn, objects):
    prefix = "swift://%s/in/" % objects
    status, _, err = cli(env, "rm", prefix, stdin=b"")
    assert status == 2 and "would delete 3 objects" in err
    assert len(conn.get_container(objects)[1]) == 3
    status, out, err = cli(env, "rm", prefix, "-f", "--exclude", "*.jpg")
    assert status == 0, err
    assert [o["name"] for o in conn.get_container(objects)[1]] == ["in/a.jpg"]


def test_errors_name_the_object(env, objects):
    status, _, err = cli(env, "cat", "swift://%s/in/none" % objects)
    assert status == 2 and "swift://%s/in/none" % objects in err
    assert "Traceback" not in err


def test_storlets_lists_the_deployed_storlets_with_parameters(env):
    status, out, err = cli(env, "storlets", "--json")
    assert status == 0, err
    found = {s["name"]: s for s in json.loads(out)}
    assert "extract_face.py" in found and "probe.py" in found
    extract = found["extract_face.py"]
    assert "size" in extract["parameters"]
    assert "size:int:32:512" in extract["declarations"]
    assert extract["main"].startswith("extract_face.")
    assert extract["doc"] and extract["output_type"] == ".png image/png"
    assert found["probe.py"]["output_type"] is None
    status, out, _ = cli(env, "storlets")
    header = out.decode().splitlines()[0].split()
    assert header == ["NAME", "PARAMETERS", "OUTPUT", "DESCRIPTION"]
    # The parameters column stays narrow, however many a storlet has.
    lines = out.decode().splitlines()
    assert lines[0].index("OUTPUT") - lines[0].index("PARAMETERS") <= 52
