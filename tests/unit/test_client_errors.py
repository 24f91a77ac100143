"""The client's one error hierarchy: what is a ValueError, what the CLI
reports in one line, and a storlet failure worded the same in the cluster
and on the client."""

import pytest

from mlstorlets.client import cli
from mlstorlets.client.errors import (
    Error,
    NotFound,
    ObjectFailed,
    Refused,
    StoreError,
    StorletFailed,
    UsageError,
    removed_after,
    storlet_error,
)
from mlstorlets.client.local_storlet import invoke, load_storlet
from mlstorlets.client.swift import SwiftError
from mlstorlets.sandbox.errors import ObjectError

FAILING = """
def compute(in_files, params):
    raise RuntimeError('disk on fire')


class FailingStorlet:
    def __init__(self, logger):
        pass

    def __call__(self, in_files, out_files, params):
        compute(in_files, params)
"""


def test_only_a_usage_error_is_a_value_error():
    unreachable = SwiftError("c", "cannot reach Swift: refused")
    assert not isinstance(unreachable, ValueError)
    assert not isinstance(ObjectError("c/o", "bad"), ValueError)
    assert isinstance(unreachable, StoreError) and isinstance(unreachable, Error)
    assert isinstance(NotFound("c/o", "x"), ObjectError)
    assert isinstance(UsageError("bad"), ValueError) and isinstance(UsageError("bad"), Error)


def test_a_value_error_around_a_call_does_not_swallow_a_store_failure():
    def call():
        try:
            raise SwiftError("c/o", "503 Service Unavailable", 503)
        except ValueError:  # the caller's own argument check
            return "swallowed"

    with pytest.raises(SwiftError):
        call()


@pytest.mark.parametrize(
    "status, kind, cls, words",
    [
        (502, "failed", StorletFailed, "failed"),
        (504, "timed-out", StorletFailed, "timed out"),
        (507, "out-of-memory", StorletFailed, "ran out of memory"),
        (503, "unavailable", StorletFailed, "could not run"),
        (422, "refused", Refused, "refused it"),
    ],
)
def test_a_cluster_storlet_failure_reads_as_on_the_client(status, kind, cls, words):
    err = SwiftError("c/o", "%d boom" % status, status, kind, "c/o")
    found = storlet_error("s.py", err, "swift://c/o")
    assert type(found) is cls
    assert str(found) == "swift://c/o: storlet s.py %s: boom" % words
    assert (found.status, found.kind, found.object) == (status, kind, "c/o")


def test_a_request_failure_stays_what_it_was_renamed():
    found = storlet_error("s.py", SwiftError("c/o", "401 Unauthorized", 401), "swift://c/o")
    assert type(found) is SwiftError and str(found) == "swift://c/o: 401 Unauthorized"


def test_the_client_runner_words_a_crash_as_the_cluster_does(tmp_path):
    (tmp_path / "failing.py").write_text(FAILING)
    cls = load_storlet("failing.py", str(tmp_path))
    with pytest.raises(StorletFailed) as local:
        invoke(cls, [(b"x", {})], {}, "swift://c/o", "failing.py")
    cluster = storlet_error(
        "failing.py",
        SwiftError("c/o", "502 RuntimeError: disk on fire", 502, "failed"),
        "swift://c/o",
    )
    assert str(local.value) == str(cluster)
    assert local.value.kind == cluster.kind == "failed"


@pytest.mark.parametrize(
    "error",
    [
        UsageError("'x:/y': unknown scheme"),
        NotFound("swift://c/o", "not found"),
        StorletFailed("swift://c/o", "storlet s failed: boom", 502, "failed"),
        ObjectError("swift://c/o", "not an image"),
    ],
)
def test_the_cli_reports_an_expected_failure_in_one_line(monkeypatch, capsys, error):
    def command(args):
        raise error

    monkeypatch.setattr(cli.commands, "cmd_ls", command)
    assert cli.main(["ls", "file:///nowhere/"]) == cli.ERROR
    err = capsys.readouterr().err
    assert err == "mlstorlets: %s\n" % error


def test_the_cli_keeps_the_traceback_of_a_bug(monkeypatch):
    def command(args):
        raise ValueError("operands could not be broadcast")

    monkeypatch.setattr(cli.commands, "cmd_ls", command)
    with pytest.raises(ValueError, match="broadcast"):
        cli.main(["ls", "file:///nowhere/"])


def test_an_object_failure_names_its_object():
    err = ObjectFailed("swift://c/o", "too large", 413)
    assert (err.name, err.uri, err.reason, err.status) == (
        "swift://c/o",
        "swift://c/o",
        "too large",
        413,
    )


def test_a_failed_removal_is_raised_after_success():
    def remove():
        raise SwiftError("c/.tmp", "503 Service Unavailable", 503)

    with pytest.raises(SwiftError, match="c/.tmp: 503"):
        with removed_after(remove, "the temporary object c/.tmp"):
            pass


def test_a_failed_removal_never_hides_the_error_in_flight(monkeypatch, capsys):
    removed = []

    def remove():
        removed.append(True)
        raise SwiftError("c/.tmp", "503 Service Unavailable", 503)

    def command(args):
        with removed_after(remove, "the temporary object c/.tmp"):
            raise StorletFailed("swift://c/o", "storlet s failed: boom", 502, "failed")

    monkeypatch.setattr(cli.commands, "cmd_ls", command)
    assert cli.main(["ls", "file:///nowhere/"]) == cli.ERROR
    assert removed == [True]
    assert capsys.readouterr().err.splitlines() == [
        "mlstorlets: swift://c/o: storlet s failed: boom",
        "mlstorlets: the temporary object c/.tmp was not removed: c/.tmp: 503 Service Unavailable",
    ]


def test_a_refused_parameter_stops_the_batch_once(tmp_path, capsys):
    """-p cnn=bogus, a value no declaration bounds: one refusal by the
    storlet, not one per object, on the client as in the cluster
    (tests/functional/test_batch.py); -p size=abc, a value the declaration
    bounds: refused before any call."""
    from mlstorlets.client.stores.local import FileStore

    store = FileStore(str(tmp_path))
    for i in range(40):
        store.put("in/p%02d.jpg" % i, b"not even an image")
    argv = ["run", "extract_face.py", "file://%s/in/" % tmp_path, "file://%s/out/" % tmp_path]
    assert cli.main(argv + ["-p", "cnn=bogus", "-j", "2"]) == cli.ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "parameter cnn must be one of" in err
    assert "the value of parameter cnn" in err and "nothing more tried" in err
    assert not (tmp_path / "out").exists()
    assert cli.main(argv + ["-p", "size=abc"]) == cli.ERROR
    err = capsys.readouterr().err
    assert (
        err == "mlstorlets: storlet extract_face.py: parameter size must be an integer, got 'abc'\n"
    )


def test_output_to_a_reader_that_went_away_ends_quietly(tmp_path):
    # `mlstorlets ls ... | head -1`: head exits after its line.
    import subprocess
    import sys

    for i in range(2000):
        (tmp_path / ("f%04d" % i)).write_bytes(b"x")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlstorlets.client.cli.__main__", "ls", str(tmp_path) + "/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == cli.READER_GONE, err
    assert b"Traceback" not in err and b"Broken pipe" not in err, err
