"""The batch runner over many objects, with copy semantics."""

import os

import pytest
from support import REPO

from mlstorlets.client.batch import run_batch
from mlstorlets.client.cli import main
from mlstorlets.client.errors import UsageError
from mlstorlets.client.placement import copy, run_anywhere
from mlstorlets.client.stores import Stores
from mlstorlets.sandbox.errors import ObjectError

TEST_STORLETS = os.path.join(REPO, "tests", "storlets")


@pytest.fixture
def sources(conn, container):
    for i in range(30):
        conn.put_object(
            container, "in/o%02d.txt" % i, b"x" * i, headers={"X-Object-Meta-Name": "n%d" % i}
        )
    conn.put_object(container, "elsewhere.txt", b"not under the prefix")
    return container


def test_runs_over_every_object_and_resumes(conn, sources):
    src, dest = "swift://%s/in/" % sources, "swift://%s/out/" % sources
    summary = run_batch(conn, "probe.py", src, dest, params={"k": "v"}, concurrency=4)
    assert len(summary.done) == 30 and not summary.failed
    assert summary.client_bytes == 0
    assert summary.source_bytes == sum(range(30))
    headers, body = conn.get_object(sources, "out/o07.txt")
    assert body == b"x" * 7 and headers["x-object-meta-name"] == "n7"
    assert "source=%s/in/o07.txt" % sources in headers["x-object-meta-probe-params"]
    # Resuming skips every output made from the same source content ...
    conn.put_object(sources, "in/o03.txt", b"changed")
    again = run_batch(conn, "probe.py", src, dest, params={"k": "v"})
    assert len(again.skipped) == 29
    # ... and redoes the one whose source changed.
    assert again.done == ["swift://%s/in/o03.txt" % sources]
    assert conn.get_object(sources, "out/o03.txt")[1] == b"changed"


def test_resume_redoes_outputs_made_otherwise(conn, sources):
    """Other parameters or another extra input (a new model) make other
    outputs: resuming must not keep the old ones."""
    src, dest = "swift://%s/in/" % sources, "swift://%s/run/" % sources
    conn.put_object(sources, "model", b"model 1")
    extra = ["/%s/model" % sources]
    first = run_batch(conn, "probe.py", src, dest, params={"k": "v"}, extra_resources=extra)
    assert len(first.done) == 30
    same = run_batch(conn, "probe.py", src, dest, params={"k": "v"}, extra_resources=extra)
    assert len(same.skipped) == 30
    other_params = run_batch(conn, "probe.py", src, dest, params={"k": "w"}, extra_resources=extra)
    assert len(other_params.done) == 30
    conn.put_object(sources, "model", b"model 2")
    new_model = run_batch(conn, "probe.py", src, dest, params={"k": "w"}, extra_resources=extra)
    assert len(new_model.done) == 30
    assert conn.get_object(sources, "run/o05.txt")[1].endswith(b"model 2")


def test_failures_are_per_object_with_the_servers_reason(conn, sources):
    summary = run_batch(
        conn,
        "probe.py",
        "swift://%s/in/" % sources,
        "swift://%s/bad/" % sources,
        params={"action": "fail"},
    )
    assert len(summary.failed) == 30 and not summary.done
    name, reason = summary.failed[0]
    assert name == "swift://%s/in/o00.txt" % sources
    # worded as the client runner words it (tests/unit/test_client_errors.py),
    # with what the storlet raised
    assert reason == "storlet probe.py failed: RuntimeError: probe asked to fail"
    assert conn.get_container(sources, prefix="bad/")[1] == []


def test_a_missing_source_is_named(conn, sources):
    with pytest.raises(ObjectError, match="in/o0: no such object"):
        run_batch(conn, "probe.py", "swift://%s/in/o0" % sources, "swift://%s/x/" % sources)


def test_run_command(cluster, sources, capsys, monkeypatch):
    for key, value in cluster.env().items():
        monkeypatch.setenv(key, value)
    code = main(
        [
            "run",
            "probe.py",
            "swift://%s/in/" % sources,
            "swift://%s/cli/" % sources,
            "-p",
            "k=v",
            "-j",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "probe.py: 30 done, 0 skipped, 0 failed" in out
    assert (
        main(
            ["run", "probe.py", "swift://%s/in/" % sources, "swift://%s/cli/" % sources, "-p", "k"]
        )
        == 2
    )


def test_where_to_run_is_the_callers_choice(conn, sources):
    """--on-client brings the data through the client and runs the same
    storlet there; --in-cluster-only refuses, before any work, what cannot
    run next to the data."""
    stores = Stores(environ={}, swift=conn)
    src = "swift://%s/in/" % sources
    here = run_anywhere(
        "probe.py",
        src,
        "swift://%s/here/" % sources,
        storlets_dir=TEST_STORLETS,
        stores=stores,
        placement="client",
    )
    assert here.placement == "client" and len(here.done) == 30
    assert here.client_bytes >= sum(range(30))
    assert conn.get_object(sources, "here/o07.txt")[1] == b"x" * 7
    copied = copy(src, "swift://%s/copied/" % sources, stores=stores, placement="client")
    assert copied.placement == "client" and copied.client_bytes >= sum(range(30))
    inside = copy(src, "swift://%s/inside/" % sources, stores=stores, placement="cluster")
    assert inside.placement == "cluster" and inside.client_bytes == 0
    with pytest.raises(UsageError, match="in the cluster only"):
        copy(src, "file:///tmp/never/", stores=stores, placement="cluster")
    assert not os.path.exists("/tmp/never")


def test_no_resume_into_a_new_container_makes_it(conn, sources):
    dest = "%s-new" % sources
    try:
        summary = run_batch(
            conn, "probe.py", "swift://%s/in/" % sources, "swift://%s/" % dest, resume=False
        )
        assert len(summary.done) == 30 and not summary.failed, summary.format()
        assert conn.get_object(dest, "o07.txt")[1] == b"x" * 7
    finally:
        for entry in conn.get_container(dest, full_listing=True)[1]:
            conn.delete_object(dest, entry["name"])
        conn.delete_container(dest)


def test_a_refused_parameter_is_reported_once(cluster, conn, sources, capsys, monkeypatch):
    for key, value in cluster.env().items():
        monkeypatch.setenv(key, value)
    argv = ["run", "extract_face.py", "swift://%s/in/" % sources, "swift://%s/bad/" % sources]
    # A value the storlet's declaration bounds: refused before any call.
    assert main(argv + ["-p", "size=abc", "-p", "margin=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert (
        "storlet extract_face.py: parameter size must be an integer, got 'abc'; "
        "parameter margin must be in [0.0, 1.0], got 2" in err
    )
    # One it cannot bound: the storlet refuses it, and the batch stops once.
    assert main(argv + ["-p", "cnn=bogus", "-j", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "extract_face.py: parameter cnn must be one of" in err
    assert "the value of parameter cnn" in err
    assert conn.get_container(sources, prefix="bad/")[1] == []
