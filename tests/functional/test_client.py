"""The client as a user runs it, against the embedded cluster.

The command line runs in its own process, as a user's does: this test
process has imported the servers (to start the cluster) and with them
eventlet, which a client must never import.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import boto3
import pytest
from support import REPO, data_dir, default_sigint

from mlstorlets.client.batch import run_batch
from mlstorlets.client.cli import main
from mlstorlets.sandbox import protocol

META = "x-object-meta-"


def cli(env, *args, timeout=900):
    """``mlstorlets ARGS`` in a process of its own: (status, out, err)."""
    done = subprocess.run(
        [sys.executable, "-m", "mlstorlets.client.cli"] + list(args),
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )
    return done.returncode, done.stdout, done.stderr


def summary_of(out):
    return json.loads(out)


@pytest.fixture(scope="module")
def env(cluster):
    return cluster.env()


@pytest.fixture(scope="module")
def photos(env, conn):
    """A bucket (a container of the main account) with a quarter of the
    training photos (every fourth: every person) under train/, written
    through the S3 API, labels in their metadata.  What the tests check
    (the CLI over s3, concurrency 8, Ctrl-C and resume) does not depend on
    how many there are, and each photo costs a face detection."""
    s3 = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    name = "photos-%s" % uuid.uuid4().hex[:8]
    s3.create_bucket(Bucket=name)
    root = os.path.join(data_dir(), "train")
    files = sorted(os.listdir(root))[::4]
    for filename in files:
        with open(os.path.join(root, filename), "rb") as f:
            s3.put_object(
                Bucket=name,
                Key="train/" + filename,
                Body=f.read(),
                ContentType="image/jpeg",
                Metadata={"name": re.sub(r"\d*\.jpeg$", "", filename)},
            )
    yield name, files
    for entry in conn.get_container(name, full_listing=True)[1]:
        conn.delete_object(name, entry["name"])
    conn.delete_container(name)


def outputs(path):
    """The photos whose crop is under ``path``: extract_face.py declares its
    outputs PNG, so ``a.jpeg`` gives ``a.png``."""
    if not os.path.isdir(path):
        return []
    return sorted(f[: -len(".png")] + ".jpeg" for f in os.listdir(path) if f.endswith(".png"))


def test_the_cli_over_s3_end_to_end(env, photos, tmp_path):
    """In place through the cluster's s3api, then out to files: every
    s3:// command died of RecursionError in ssl when the CLI imported the
    servers."""
    bucket, files = photos
    status, out, err = cli(
        env,
        "run",
        "extract_face.py",
        "s3://%s/train/" % bucket,
        "s3://%s/crops/" % bucket,
        "-p",
        "size=48",
        "--json",
    )
    assert status == 0, (out, err)
    found = summary_of(out)
    assert found["placement"] == "cluster" and found["client_bytes"] == 0
    assert len(found["done"]) == len(files) and not found["failed"]

    status, out, err = cli(
        env, "cp", "s3://%s/crops/" % bucket, "file://%s/crops/" % tmp_path, "--json"
    )
    assert status == 0, err
    found = summary_of(out)
    assert found["placement"] == "client"
    assert len(found["done"]) == len(files)
    assert outputs(tmp_path / "crops") == files
    with open(tmp_path / "crops" / files[0].replace(".jpeg", ".png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    status, out, err = cli(
        env, "cp", "s3://%s/crops/" % bucket, "file://%s/crops/" % tmp_path, "--dry-run", "--json"
    )
    assert status == 0, err
    found = summary_of(out)
    assert found["dry_run"] and not found["planned"]
    assert len(found["skipped"]) == len(files)


def test_the_client_side_path_at_concurrency_8_from_the_cli(env, photos, tmp_path):
    """extract_face.py on the client, 8 photos at a time: one OpenCV
    cascade shared by the threads segfaulted."""
    bucket, files = photos
    status, out, err = cli(
        env,
        "run",
        "extract_face.py",
        "s3://%s/train/" % bucket,
        "file://%s/faces/" % tmp_path,
        "-j",
        "8",
        "--json",
    )
    assert status == 0, (status, err[-2000:])
    found = summary_of(out)
    assert found["placement"] == "client" and not found["failed"]
    assert len(found["done"]) == len(files)
    assert outputs(tmp_path / "faces") == files


PYTHON_RUN = """
import sys
from mlstorlets.client.placement import run_anywhere
summary = run_anywhere('extract_face.py', sys.argv[1], sys.argv[2],
                       concurrency=8)
print(summary.to_json())
"""


def test_the_client_side_path_at_concurrency_8_from_python(env, photos, tmp_path):
    """The example of docs/stores.md, at concurrency 8."""
    bucket, files = photos
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            PYTHON_RUN,
            "s3://%s/train/" % bucket,
            "file://%s/faces/" % tmp_path,
        ],
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    found = summary_of(done.stdout)
    assert found["placement"] == "client" and not found["failed"]
    assert len(found["done"]) == len(files)
    assert outputs(tmp_path / "faces") == files


def test_ctrl_c_stops_a_run_with_its_summary_and_a_resume_completes_it(env, photos, tmp_path):
    bucket, files = photos
    dest = tmp_path / "faces"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlstorlets.client.cli",
            "run",
            "extract_face.py",
            "s3://%s/train/" % bucket,
            "file://%s/" % dest,
            "-j",
            "1",
        ],
        env=dict(os.environ, **env),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    deadline = time.monotonic() + 300
    while len(outputs(dest)) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it was interrupted"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, (out, err)
    assert "Traceback" not in err, err
    written = outputs(dest)
    assert 2 <= len(written) < len(files)
    assert "extract_face.py: %d done" % len(written) in out
    assert "interrupted: %d not done" % (len(files) - len(written)) in out

    status, out, err = cli(
        env, "run", "extract_face.py", "s3://%s/train/" % bucket, "file://%s/" % dest, "--json"
    )
    assert status == 0, err
    found = summary_of(out)
    assert sorted(found["skipped"]) == sorted(
        "s3://%s/train/%s" % (bucket, name) for name in written
    )
    assert len(found["done"]) == len(files) - len(written)
    assert outputs(dest) == files


# -- in the cluster ----------------------------------------------------------
AWKWARD = ["plain", "a%20b", "x&y=z", "sp ace", "q?x#y", "é€", "cr\rx", "line\nbreak"]


def _raw_metadata(conn, container, name, key):
    """A metadata value as the storlet wrote it, read from the header's
    bytes, which must be UTF-8 as Swift sends them."""
    import http.client
    from urllib.parse import quote, urlsplit

    url = urlsplit(conn.url or conn.get_auth()[0])
    link = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    link.request(
        "HEAD",
        "%s/%s/%s" % (url.path, quote(container), quote(name)),
        headers={"X-Auth-Token": conn.token},
    )
    response = link.getresponse()
    response.read()
    link.close()
    assert response.status == 200, response.status
    return response.getheader("X-Object-Meta-" + key).encode("latin-1").decode("utf-8")


def test_every_name_swift_accepts_is_handled_or_reported_per_object(conn, container):
    """A name with %20 reaches the storlet as it is, a parameter too, and
    a name with CR or LF no longer aborts the whole batch."""
    for name in AWKWARD:
        conn.put_object(container, "in/" + name, name.encode("utf-8"))
    value = "a%20b&c=d é"
    summary = run_batch(
        conn,
        "probe.py",
        "swift://%s/in/" % container,
        "swift://%s/out/" % container,
        params={"q": value},
        concurrency=8,
    )
    handled = summary.done + [name for name, _ in summary.failed]
    assert sorted(handled) == sorted("swift://%s/in/%s" % (container, name) for name in AWKWARD)
    for name in AWKWARD[:6]:
        assert "swift://%s/in/%s" % (container, name) in summary.done, summary.format()
    params = _raw_metadata(conn, container, "out/a%20b", "Probe-Params")
    assert "source=%s/in/a%%20b" % container in params
    assert "q=%s" % value in params
    assert "source=%s/in/é€" % container in _raw_metadata(conn, container, "out/é€", "Probe-Params")
    # The probe copies its parameters, the source's name among them, to
    # its output's metadata, which no header can carry with a CR or an LF:
    # those objects fail, each reported, on one line of the summary.
    lines = summary.format().splitlines()
    assert len(lines) == 1 + len(summary.failed)
    assert any("in/line\\nbreak" in line for line in lines)


def _main(monkeypatch, env, *argv):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return main(list(argv))


def test_what_the_storlet_cannot_take_is_refused_before_any_call(
    monkeypatch, capsys, env, conn, container
):
    conn.put_object(container, "in/a.jpg", b"not a photo")
    src = "swift://%s/in/" % container
    dest_container = container + "-out"
    dest = "swift://%s/" % dest_container
    assert _main(monkeypatch, env, "run", "extract_face.py", src, dest, "-p", "sise=64") == 2
    from mlstorlets.client.deploy import declared_parameters, default_source_dir

    path = os.path.join(default_source_dir(), "extract_face.py")
    with open(path) as f:
        declared = declared_parameters(f.read(), path)  # what deploy recorded
    assert (
        "storlet extract_face.py takes no parameter sise (it takes: %s)"
        % ", ".join(sorted(protocol.declared_names(declared)))
        in capsys.readouterr().err
    )
    assert _main(monkeypatch, env, "run", "no_such.py", src, dest) == 2
    assert "no_such.py: no such storlet" in capsys.readouterr().err
    assert (
        _main(monkeypatch, env, "run", "extract_face.py", "swift://%s/empty/" % container, dest)
        == 2
    )
    assert "empty/: no objects under this prefix" in capsys.readouterr().err
    # Nothing ran, so nothing was made, not even the destination.
    assert conn.get_account()[1] and dest_container not in [
        c["name"] for c in conn.get_account(full_listing=True)[1]
    ]


def test_dry_run_and_json_for_run_faces_and_cp(monkeypatch, capsys, env, conn, container):
    for i in range(3):
        conn.put_object(container, "in/o%d" % i, b"x" * i)
    src = "swift://%s/in/" % container
    for argv in (
        ["run", "probe.py", src, "swift://%s/run/" % container],
        ["faces", "extract", src, "swift://%s/faces/" % container],
        ["cp", src, "swift://%s/cp/" % container],
    ):
        assert _main(monkeypatch, env, *argv, "--dry-run", "--json") == 0
        found = json.loads(capsys.readouterr().out)
        assert found["dry_run"] and found["placement"] == "cluster"
        assert found["planned"] == ["swift://%s/in/o%d" % (container, i) for i in range(3)], found
    assert [e["name"] for e in conn.get_container(container)[1]] == ["in/o0", "in/o1", "in/o2"]
    assert _main(monkeypatch, env, "cp", src, "swift://%s/cp/" % container, "--json") == 0
    found = json.loads(capsys.readouterr().out)
    assert len(found["done"]) == 3 and found["ok"]
