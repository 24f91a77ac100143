"""What a storlet raised and logged, made safe for its user, without a cluster.

The functions that turn a storlet's exception into one bounded header line
and its log into one bounded object; tests/functional/test_storlet_errors.py
runs them on the real cluster.
"""

import json
import os
import sys
from urllib.parse import unquote

import pytest

from mlstorlets.sandbox import protocol
from mlstorlets.server.agent.host_io import METADATA_LIMIT, failure_metadata
from mlstorlets.server.agent.worker import LineLogger, write_traceback
from mlstorlets.server.gateway import invocation_log
from mlstorlets.server.gateway.invocation import BoundedInvocationProtocol, StorletFailed
from mlstorlets.server.middleware.storlet_copy import _log_headers

HOSTILE = "x\r\nSet-Cookie: stolen=1\r\nX-Mlstorlets-Object: o/forged\x00\x1b[31m\x85\u2028"


def control(text):
    return [c for c in text if ord(c) < 32 or 127 <= ord(c) < 160 or c in "\u2028\u2029"]


def test_one_line_escapes_every_control_character():
    line = protocol.one_line(HOSTILE)
    assert not control(line)
    assert line == (
        "x\\r\\nSet-Cookie: stolen=1\\r\\nX-Mlstorlets-Object: o/forged\\x00\\x1b[31m\\x85\\u2028"
    )


def test_one_line_is_bounded_and_says_so():
    line = protocol.one_line("A" * 100000, 1024)
    assert len(line) == 1024 and line.endswith("...")
    # An escape is never cut in two.
    line = protocol.one_line("\n" * 1000, 100)
    assert len(line) <= 100 and line.endswith("\\n...")


def test_one_line_made_again_is_unchanged():
    once = protocol.one_line(HOSTILE + "A" * 5000)
    assert protocol.one_line(once) == once


def test_a_hostile_reason_is_one_ascii_header_value():
    value = protocol.failure_headers(protocol.FAILED, protocol.one_line(HOSTILE * 5000))[
        protocol.REASON_HEADER
    ]
    assert value.isascii() and value.isprintable()
    assert len(value) <= 3 * protocol.MAX_REASON
    assert "\r" not in unquote(value) and "\n" not in unquote(value)


@pytest.mark.parametrize("char", ["\x00", "\u00e9", "\U0001f600", "A"])
def test_the_agents_failure_metadata_fits_one_read_of_the_host(char):
    data = failure_metadata("ValueError: " + char * 100000)
    assert len(data) <= METADATA_LIMIT
    reason = json.loads(data)[protocol.FAILURE_KEY]
    assert reason.startswith("ValueError: ") and not control(reason)


def _read_metadata(metadata):
    """The host's reading of ``metadata`` as the sandbox wrote it."""
    read, write = os.pipe()
    os.write(write, json.dumps(metadata).encode())
    os.close(write)
    proto = BoundedInvocationProtocol.__new__(BoundedInvocationProtocol)
    proto.metadata_read_fd, proto.timeout, proto.logger = read, 5, None
    return proto._read_metadata()


def test_the_host_reads_a_failure_as_what_the_storlet_raised():
    with pytest.raises(StorletFailed) as err:
        _read_metadata({protocol.FAILURE_KEY: "ValueError: " + HOSTILE})
    assert err.value.reason == "ValueError: " + protocol.one_line(HOSTILE)


def test_a_storlet_cannot_name_its_log_object():
    metadata = _read_metadata(
        {"mlstorlets-log-object": "log/forged", "Mlstorlets-Log-Error": "x", "Kept": "1"}
    )
    assert metadata == {"Kept": "1"}


def test_the_log_keeps_its_head_and_its_tail():
    log = invocation_log.InvocationLog(limit=protocol.MAX_LOG)
    for i in range(3000):
        log.keep(b"line %06d %s\n" % (i, b"." * 1000))
    log.keep(b"Traceback (most recent call last):\nValueError: some detail\n")
    text, _ = log.collect()
    assert text.startswith(b"line 000000")
    assert text.endswith(b"ValueError: some detail\n")
    assert b"bytes of the log left out here" in text
    body = invocation_log.log_body("s.py", "tx1", "failed: x", text, True)
    assert len(body) <= protocol.MAX_LOG
    assert body.endswith(b"ValueError: some detail\n")


def test_a_short_log_is_kept_whole():
    log = invocation_log.InvocationLog()
    log.keep(b"one\n")
    log.keep(b"two\n")
    assert log.collect() == (b"one\ntwo\n", False)


def test_the_log_is_read_from_its_pipe_until_it_ends():
    log = invocation_log.InvocationLog(lifetime=5)
    with log.activate():
        fd = os.dup(log.getfd())
    os.write(fd, b"from the sandbox\n")
    os.close(fd)
    assert log.collect(wait=5) == (b"from the sandbox\n", True)


def test_a_log_still_held_is_stored_as_far_as_it_goes():
    log = invocation_log.InvocationLog(lifetime=5)
    with log.activate():
        fd = os.dup(log.getfd())
    try:
        os.write(fd, b"so far\n")
        text, ended = log.collect(wait=0.2)
    finally:
        os.close(fd)
    assert (text, ended) == (b"so far\n", False)
    assert b"note: the storlet still held its log" in invocation_log.log_body(
        "s.py", "tx", "done", text, ended
    )


def test_no_log_asked_for_writes_to_nothing():
    log = invocation_log.DiscardedLog()
    with log.activate():
        assert os.readlink("/proc/self/fd/%d" % log.getfd()) == os.devnull
    assert not log.wanted


def test_every_invocation_without_a_log_shares_one_dev_null():
    seen = set()
    for _ in range(3):
        log = invocation_log.DiscardedLog()
        with log.activate():
            seen.add(log.getfd())
        assert log.getfd() is None
    (fd,) = seen
    # Still open for the next invocation.
    assert os.readlink("/proc/self/fd/%d" % fd) == os.devnull


def test_a_log_closes_its_end_once_the_command_is_sent():
    log = invocation_log.InvocationLog(lifetime=5)
    with log.activate():
        fd = log.getfd()
        ino = os.fstat(fd).st_ino
    try:
        now = os.fstat(fd).st_ino
    except OSError:
        now = None
    assert now != ino
    # The reader sees the end of the log: nobody else holds the pipe.
    assert log.collect(wait=2) == (b"", True)


def test_the_log_body_says_who_ran_and_how_it_ended_on_one_line_each():
    body = invocation_log.log_body("s.py", "tx\r\n1", "failed: " + HOSTILE, b"raw\r\n", True)
    head, _, rest = body.partition(b"--- log ---\n")
    assert head.decode().splitlines() == [
        "storlet: s.py",
        "transaction: tx\\r\\n1",
        "outcome: failed: " + protocol.one_line(HOSTILE),
    ]
    assert rest == b"raw\r\n"


def test_log_object_names_sort_by_time_under_the_storlet():
    first = invocation_log.object_name("s.py", "txa", 1700000000.25)
    second = invocation_log.object_name("s.py", "txb", 1700000001.5)
    assert first == "s.py/20231114T221320.250000Z-txa.log"
    assert first < second and second.startswith("s.py/")


def test_the_worker_gives_each_message_a_line(tmp_path):
    path = tmp_path / "log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    with LineLogger("s.S", fd) as logger:
        logger.info("one")
        logger.info("two\n")
    assert path.read_bytes() == b"s.S INFO: one\ns.S INFO: two\n"


def test_the_traceback_starts_at_the_storlets_frame(tmp_path):
    def storlet():
        raise ValueError("some detail")

    def handle():
        try:
            storlet()
        except ValueError as err:
            return err

    err = handle()
    path = tmp_path / "log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    write_traceback(fd, err)
    os.close(fd)
    text = path.read_text()
    assert text.startswith("Traceback (most recent call last):")
    assert "in storlet" in text and "in handle" not in text
    assert text.endswith("ValueError: some detail\n")


def test_the_proxy_moves_the_engines_log_metadata_to_headers():
    assert _log_headers({"X-Object-Meta-Mlstorlets-Log-Object": "log/s.py/x.log"}) == {
        protocol.LOG_OBJECT_HEADER: "log/s.py/x.log"
    }
    assert _log_headers({"x-mlstorlets-log-error": "no"}) == {protocol.LOG_ERROR_HEADER: "no"}
    assert _log_headers({"X-Object-Meta-Other": "1"}) == {}


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
