"""The storlet protocol as the client speaks it: parameter quoting, error
headers, the batch engine's handling of failures, Ctrl-C and dry runs."""

import subprocess
import sys
import textwrap

import pytest
from support import default_sigint, engine_parameter
from swiftclient.exceptions import ClientException

from mlstorlets.client.batch import BatchSummary, execute
from mlstorlets.client.swift import check_parameters, reason_of, storlet_headers
from mlstorlets.sandbox import protocol
from mlstorlets.sandbox.errors import ObjectError

AWKWARD = [
    "plain",
    "a%20b",
    "a b",
    "x&y=z",
    "k:v:w",
    "é€😀",
    "line\r\nbreak",
    "%",
    "%%41",
    "/c/o?x=1#f",
    "",
]


@pytest.mark.parametrize("value", AWKWARD)
def test_a_parameter_reaches_the_storlet_exactly(value):
    """Quoted once by the client, unquoted once by the engine."""
    key = "name " + value.replace(":", "")
    headers = protocol.parameter_headers({key: value})
    ((header, line),) = headers.items()
    assert header == "X-Storlet-Parameter-1"
    line.encode("ascii")  # any header is ASCII, CR/LF quoted
    assert "\r" not in line and "\n" not in line
    assert engine_parameter(line) == (key, value)


def test_the_storlet_headers_number_every_parameter():
    headers = storlet_headers("s.py", {"b": 2, "a": "x y"}, ["/c/o,1", "/c/é"])
    assert headers["X-Run-Storlet"] == "s.py"
    assert engine_parameter(headers["X-Storlet-Parameter-1"]) == ("a", "x y")
    assert engine_parameter(headers["X-Storlet-Parameter-2"]) == ("b", "2")
    # The engine splits extra resources at commas, then unquotes each.
    assert headers["X-Storlet-Extra-Resources"] == "/c/o%2C1,/c/%C3%A9"


@pytest.mark.parametrize("key", ["", "a:b"])
def test_a_parameter_name_the_engine_cannot_split_is_refused(key):
    with pytest.raises(ValueError, match="parameter name"):
        protocol.parameter_headers({key: "v"})


def test_undeclared_parameters_are_refused_before_any_call():
    check_parameters("s.py", {"size": 1, "source": "c/o"}, {"size"})
    check_parameters("s.py", {"anything": 1}, None)
    with pytest.raises(
        ValueError,
        match="s.py takes no parameter sise "
        r"\(it takes: margin, size\)",
    ):
        check_parameters("s.py", {"sise": 1}, {"size", "margin"})


def test_declared_types_and_bounds_are_checked_before_any_call():
    declared = ("size:int:32:512", "margin:float:0:1", "faces:one-of:largest|all", "stem")
    check_parameters("s.py", {"size": "64", "margin": "0.5", "faces": "all", "stem": "x"}, declared)
    check_parameters("s.py", {"size": ""}, declared)  # empty: the storlet's default
    for params, message in [
        ({"size": "abc"}, "parameter size must be an integer, got 'abc'"),
        ({"size": "1000"}, r"parameter size must be in \[32, 512\], got 1000"),
        ({"margin": "nan"}, "parameter margin must be finite"),
        ({"faces": "some"}, "parameter faces must be one of largest, all, got 'some'"),
    ]:
        with pytest.raises(ValueError, match="storlet s.py: " + message):
            check_parameters("s.py", params, declared)
    with pytest.raises(ValueError, match=r"takes no parameter sise \(it takes: faces, margin"):
        check_parameters("s.py", {"sise": 1}, declared)
    assert protocol.parse_parameter("n:int::10") == ("n", "int", (None, 10))
    for bad in (
        "n:int:a:b",
        "n:list",
        "n:one-of:",
        ":int",
        "x:float:nan:1",
        "n:one-of:" + "a|" * 200,
    ):
        with pytest.raises(ValueError, match="parameter declaration"):
            protocol.parse_parameter(bad)


def test_declarations_spread_over_metadata_values_swift_accepts():
    declared = tuple("p%02d:float:0.000001:1000000" % i for i in range(30)) + ("plain",)
    metadata = protocol.parameters_metadata(declared)
    assert all(len(v) <= 256 for v in metadata.values())
    # Names where clients that know only names read them; types beside.
    assert metadata["Mlstorlets-Parameters"].startswith("p00,p01,")
    assert "Mlstorlets-Parameter-Types-2" in metadata
    lowered = {k.lower(): v for k, v in metadata.items()}
    assert protocol.parameters_from_metadata(lowered) == declared
    assert protocol.parameters_metadata(("a", "b")) == {"Mlstorlets-Parameters": "a,b"}
    assert protocol.parameters_from_metadata({"Other": "x"}) is None
    # a type this version does not know is a name
    unknown = {"mlstorlets-parameters": "a", "mlstorlets-parameter-types": "a:date"}
    assert protocol.parameters_from_metadata(unknown) == ("a",)


def test_every_storlet_declares_the_bounds_its_sandbox_code_checks():
    """A declared bound is the one the sandbox's int_param or float_param
    call for that parameter checks: the client refuses exactly what the
    storlet would."""
    import ast
    import pathlib

    from mlstorlets.client.deploy import declared_parameters

    root = pathlib.Path(__file__).parents[2]
    checked = {}
    for path in (root / "mlstorlets" / "sandbox").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) in ("int_param", "float_param")
                and len(node.args) >= 5
                and isinstance(node.args[1], ast.Constant)
            ):
                try:
                    bounds = tuple(
                        eval(compile(ast.Expression(a), "", "eval"), {}) for a in node.args[3:5]
                    )
                except NameError:
                    continue  # a bound computed at run time (cores, constants)
                checked.setdefault(node.args[1].value, set()).add(bounds)
    typed = 0
    for path in (root / "storlets").glob("*.py"):
        for entry in declared_parameters(path.read_bytes(), str(path)) or ():
            name, kind, values = protocol.parse_parameter(entry)
            if kind in ("int", "float"):
                typed += 1
                assert checked.get(name) == {values}, (path.name, entry, checked.get(name))
    assert typed >= 20


def _error(status, body=b"", headers=None):
    return ClientException(
        "failed",
        http_status=status,
        http_reason="Nope",
        http_response_content=body,
        http_response_headers=headers or {},
    )


def test_the_client_reads_the_structured_error_headers():
    reason = "c/photo.jpg: no face found (é)"
    err = _error(
        422,
        b"storlet x refused c/photo.jpg: something else",
        {
            protocol.ERROR_HEADER: protocol.REFUSED,
            protocol.REASON_HEADER: protocol.quote_reason(reason),
        },
    )
    assert reason_of(err) == ("refused", "422 " + reason)
    timed_out = _error(504, b"", {"x-mlstorlets-error": "timed-out"})
    assert reason_of(timed_out)[0] == "timed-out"


def test_without_the_headers_the_status_alone_says_what_happened():
    assert reason_of(_error(422, b"storlet s refused c/o: bad"))[0] == "refused"
    assert reason_of(_error(502, b"storlet s failed"))[0] == "failed"
    assert reason_of(_error(404, b"Not Found"))[0] is None


def test_a_reason_is_one_line_without_html():
    err = _error(
        401,
        b"<html><h1>Unauthorized</h1><p>This server could "
        b"not verify\n that you are authorized.</p></html>",
    )
    assert reason_of(err)[1] == (
        "401 Unauthorized This server could not verify that you are authorized."
    )
    assert reason_of(ClientException("timed out"))[1] == "cannot reach Swift: timed out"


def test_quote_reason_is_one_ascii_line():
    value = protocol.quote_reason("a\nb é " + "x" * 5000)
    value.encode("ascii")
    assert "\n" not in value
    assert protocol.unquote_reason(value).startswith("a b é x")


class _Task:
    def __init__(self, label):
        self.label, self.size = label, 1


def test_one_objects_failure_of_any_kind_is_reported_for_it_alone():
    tasks = [_Task("o%d" % i) for i in range(6)]

    def work(task, job):
        if task.label == "o1":
            raise ObjectError("o1", "refused")
        if task.label == "o2":
            raise ValueError('Invalid header value b"a\\nb"')
        job.count(10)

    summary = execute(
        BatchSummary("s"), tasks, work, concurrency=3, up_to_date=lambda t: t.label == "o5"
    )
    assert summary.done == ["o0", "o3", "o4"] and summary.skipped == ["o5"]
    assert summary.failed == [
        ("o1", "refused"),
        ("o2", 'ValueError: Invalid header value b"a\\nb"'),
    ]
    assert summary.client_bytes == 30 and not summary.ok


def test_a_dry_run_does_nothing_and_says_what_it_would_do():
    tasks = [_Task("o%d" % i) for i in range(3)]

    def work(task, job):
        raise AssertionError("a dry run ran %s" % task.label)

    summary = execute(
        BatchSummary("s"), tasks, work, dry_run=True, up_to_date=lambda t: t.label == "o0"
    )
    assert summary.planned == ["o1", "o2"] and summary.skipped == ["o0"]
    assert not summary.done and summary.ok
    assert "2 to do, 1 up to date" in summary.format()
    assert summary.as_dict()["planned"] == ["o1", "o2"]


def test_a_summary_lists_objects_in_the_order_of_its_tasks():
    """A video's frame ranges in frame order, whichever finished first
    (by name, "frames 100-" would come before "frames 50-99")."""
    labels = ["v.avi frames 0-49", "v.avi frames 50-99", "v.avi frames 100-"]

    tasks = [_Task(n) for n in labels]
    planned = execute(BatchSummary("s"), tasks, None, dry_run=True).planned
    assert planned == labels
    done = execute(BatchSummary("s"), tasks[::-1], lambda task, job: None, concurrency=3).done
    assert done == labels[::-1]


CTRL_C = textwrap.dedent("""
    import os, signal, time
    from mlstorlets.client.batch import BatchSummary, execute

    class Task:
        def __init__(self, label):
            self.label, self.size = label, 1

    started = []

    def work(task, job):
        started.append(task.label)
        if task.label == 'o3':
            os.kill(os.getpid(), signal.SIGINT)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                job.checkpoint()  # raises Cancelled once interrupted
                time.sleep(0.01)
            raise AssertionError('never cancelled')

    summary = execute(BatchSummary('s'), [Task('o%d' % i) for i in range(10)],
                      work, concurrency=1)
    assert summary.interrupted and not summary.ok
    assert summary.done == ['o0', 'o1', 'o2'], summary.done
    assert summary.cancelled == 7, summary.cancelled
    assert started == ['o0', 'o1', 'o2', 'o3'], started
    assert 'interrupted: 7 not done' in summary.format()
    print('ok')
""")


def test_ctrl_c_cancels_the_rest_and_keeps_the_summary_so_far():
    """SIGINT while the batch runs: work not started never starts, work in
    flight stops at its next checkpoint, and the summary counts both.  In
    a child: this process's threads are eventlet's (the servers' imports
    patched them), a client's are not."""
    _run_in_a_child(CTRL_C)


def test_progress_is_in_bytes_with_a_rate(capsys):
    tasks = [_Task("o%d" % i) for i in range(3)]
    for task in tasks:
        task.size = 1000
    seen = []

    def work(task, job):
        job.read(400)  # a download shows as it comes; the rest at the end
        seen.append(job.read_bytes)

    summary = execute(BatchSummary("s"), tasks, work, progress=True)
    err = capsys.readouterr().err
    assert summary.ok and seen == [400] * 3 and summary.client_bytes == 1200
    assert "2.93k/2.93k" in err and "B/s" in err


CTRL_C_CHUNKS = textwrap.dedent("""
    import os, signal, threading, time
    from mlstorlets.client.batch import BatchSummary, execute

    class Task:
        def __init__(self, label):
            self.label, self.size = label, 1000

    chunks = []

    def transfer(task, job):
        for i in range(1000):
            job.read(1)
            chunks.append(i)
            if i == 5:
                os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.005)

    summary = execute(BatchSummary('s'), [Task('big')], transfer)
    assert summary.interrupted and summary.cancelled == 1 and not summary.done, summary
    assert len(chunks) < 1000, len(chunks)

    def finishes(task, job):
        time.sleep(0.2)  # under way: every task queued
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # no read: nothing to stop at; it completes

    summary = execute(BatchSummary('s'), [Task('one')], finishes)
    assert summary.done == ['one'] and not summary.interrupted and summary.ok, summary
    print('ok')
""")


def test_ctrl_c_stops_a_large_transfer_at_its_next_chunk_and_not_a_finished_job():
    """A transfer stops at its next chunk; a job whose last object finished
    anyway is not reported interrupted.  In a child, for real threads (this
    process's are eventlet's)."""
    _run_in_a_child(CTRL_C_CHUNKS)


def _run_in_a_child(script):
    """Run ``script`` in a fresh interpreter (real threads, SIGINT raising
    KeyboardInterrupt); it prints ``ok`` when its checks pass."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=default_sigint,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"


NESTED = "[" * 3000 + "]" * 3000


@pytest.mark.parametrize("data", ["{not json", "", NESTED, NESTED.encode(), b"\xff"])
def test_json_a_storlet_wrote_is_read_or_refused_as_a_value_error(data):
    with pytest.raises(ValueError):
        protocol.storlet_json(data)
    assert protocol.storlet_json('{"a": [1]}') == {"a": [1]}


def test_the_clients_readings_of_a_storlets_json_refuse_what_it_cannot_read():
    from mlstorlets.client import report

    assert report._frame_counts(NESTED) == {}
    assert report._frame_counts('{"a.jpg": 3}') == {"a.jpg": 3}


def test_a_storlet_error_is_read_from_the_headers_or_the_status_but_a_503():
    reason = protocol.quote_reason("storlet s.py could not run over c/o (…)")
    unavailable = {protocol.ERROR_HEADER: protocol.UNAVAILABLE, protocol.REASON_HEADER: reason}
    assert protocol.storlet_error(503, unavailable) == (
        protocol.UNAVAILABLE,
        "storlet s.py could not run over c/o (…)",
    )
    assert protocol.storlet_error(502, {}) == (protocol.FAILED, None)
    # Swift's own 503, or the engine's for a call it did not run: no storlet's.
    assert protocol.storlet_error(503, {}) is None
    assert protocol.storlet_error(503, {protocol.NOT_RUN_HEADER: "true"}) is None
