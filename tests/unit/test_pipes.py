"""The gateway's inputs and output: bigger data pipes within a budget, an
input writer that ends with its reader, and an output that fails when an
input was cut (no cluster)."""

import fcntl
import json
import logging
import os

import eventlet
import eventlet.hubs
import pytest
from storlets.gateway.common.exceptions import StorletRuntimeException, StorletTimeout
from storlets.gateway.common.stob import StorletData, StorletRequest

from mlstorlets.server.gateway import invocation, pipes
from mlstorlets.server.gateway.invocation import (
    BoundedInvocationProtocol,
    StorletOutputIterator,
    UnsafeMetadata,
)


def capacity(fd):
    return fcntl.fcntl(fd, pipes.F_GETPIPE_SZ)


class Body(object):
    """A request's body: chunks, and whether it was closed."""

    def __init__(self, chunks, fail=None):
        self.chunks = iter(chunks)
        self.fail = fail
        self.closed = False

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self.chunks)
        except StopIteration:
            if self.fail:
                raise self.fail from None
            raise

    def close(self):
        self.closed = True


def invocation_of(body=None, extras=(), timeout=5):
    request = StorletRequest(
        "s-1.0.py",
        {},
        StorletData({}, data_iter=body if body is not None else Body([])),
        extra_data_list=[StorletData({}, data_iter=e) for e in extras],
    )
    return BoundedInvocationProtocol(
        request, "/nonexistent", None, timeout, logging.getLogger("t"), 1, lambda c: None
    )


@pytest.fixture
def budget(monkeypatch):
    """A budget of this test's own (the process's may be taken by others)."""
    fresh = pipes.PipeBudget(total=64 << 20)
    monkeypatch.setattr(pipes.EnlargedPipes.__init__, "__defaults__", (fresh, 8))
    return fresh


@pytest.fixture
def pipe_pair():
    made = []

    def make():
        r, w = os.pipe()
        made.extend((r, w))
        return r, w

    yield make
    for fd in made:
        try:
            os.close(fd)
        except OSError:
            pass


def test_a_pipe_is_enlarged_while_the_budget_has_room(pipe_pair):
    budget = pipes.PipeBudget(total=2 * pipes.PIPE_BYTES)
    fds = [pipe_pair()[1] for _ in range(3)]
    default = capacity(fds[0])
    taken = [budget.enlarge(fd) for fd in fds]
    assert [capacity(fd) for fd in fds] == [pipes.PIPE_BYTES] * 2 + [default]
    # The whole capacity counts, as the kernel counts it.
    assert taken == [pipes.PIPE_BYTES] * 2 + [0] and budget.used == 2 * pipes.PIPE_BYTES
    budget.release(taken[0])
    assert budget.enlarge(fds[2]) and capacity(fds[2]) == pipes.PIPE_BYTES


def test_what_is_not_a_pipe_takes_nothing(tmp_path):
    budget = pipes.PipeBudget(total=1 << 20)
    with open(tmp_path / "f", "wb") as f:
        assert budget.enlarge(f.fileno()) == 0
    assert budget.used == 0


def test_the_budget_is_a_share_of_the_users_soft_limit(tmp_path):
    limit = tmp_path / "soft"
    limit.write_text("16384\n")
    assert pipes.process_budget(str(limit)) == 16384 * os.sysconf("SC_PAGE_SIZE") // 16
    limit.write_text("0\n")
    assert pipes.process_budget(str(limit)) == pipes.UNLIMITED_BUDGET
    assert pipes.process_budget(str(tmp_path / "absent")) == 0


def test_an_invocation_enlarges_a_few_pipes_and_gives_every_one_back(budget):
    extras = [Body([b"x"]) for _ in range(10)]
    proto = invocation_of(Body([b"in"]), extras)
    proto._prepare_invocation_descriptors()
    inputs = [proto._input_data_write_fd] + [s["write_fd"] for s in proto.extra_data_sources]
    sizes = [capacity(fd) for fd in [proto.data_read_fd] + inputs]
    # The output, the request's object and the first six others.
    assert sizes[:8] == [pipes.PIPE_BYTES] * 8
    assert all(size < pipes.PIPE_BYTES for size in sizes[8:])
    assert budget.used == 8 * pipes.PIPE_BYTES
    for fd, body in zip(inputs, [proto.srequest.data.data_iter] + extras):
        proto._write_input_data(fd, body)  # the proxy's writer: closes its end
    proto._close_remote_side_descriptors()
    output = StorletOutputIterator(
        proto.data_read_fd, 5, None, on_close=lambda: proto.pipes.closed([proto.data_read_fd])
    )
    assert budget.used == pipes.PIPE_BYTES
    output.close()
    proto._safe_close([proto.metadata_read_fd])
    assert budget.used == 0


@pytest.mark.parametrize(
    "failure, retried",
    [(invocation.InputsTooLong("too long"), False), (invocation.DaemonGone("gone"), True)],
)
def test_an_invocation_that_fails_before_writing_closes_its_inputs(
    budget, monkeypatch, failure, retried
):
    # A datagram refused, a daemon gone: upstream left the inputs' pipes
    # open, and their backend requests; a daemon gone is sent the same
    # request again (BubblewrapStorletGateway.invocation_flow), so that
    # keeps its requests.
    extras = [Body([b"x"]) for _ in range(3)]
    proto = invocation_of(Body([b"in"]), extras)

    def fail(self):
        raise failure

    monkeypatch.setattr(BoundedInvocationProtocol, "_send_execute_command", fail)
    with pytest.raises(type(failure)):
        proto.communicate()
    fds = [proto._input_data_write_fd] + [s["write_fd"] for s in proto.extra_data_sources]
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
    bodies = [proto.srequest.data.data_iter] + extras
    assert [body.closed for body in bodies] == [not retried] * 4
    assert budget.used == 0


def test_the_metadata_descriptor_is_closed_once(pipe_pair):
    proto = invocation_of()
    r, w = pipe_pair()
    os.write(w, json.dumps({"Kept": "1"}).encode())
    proto.metadata_read_fd = r
    assert proto._read_metadata() == {"Kept": "1"}
    # Gone from the invocation: its failure path cannot close the number
    # again, when it may be another request's.
    assert proto.metadata_read_fd is None
    with pytest.raises(OSError):
        os.fstat(r)


@pytest.mark.parametrize("sent", [b"{not json", b"", b"[" * 2000 + b"]" * 2000])
def test_metadata_that_is_not_json_is_a_failure_the_gateway_explains(pipe_pair, sent):
    # Nothing at all: the storlet's process died (memory, its sandbox
    # killed), which the gateway tells apart (bubblewrap.invocation_flow),
    # not a protocol broken by the storlet.
    proto = invocation_of()
    r, w = pipe_pair()
    os.write(w, sent)
    os.close(w)
    proto.metadata_read_fd = r
    with pytest.raises(StorletRuntimeException) as err:
        proto._read_metadata()
    assert not isinstance(err.value, UnsafeMetadata)
    assert proto.metadata_read_fd is None


def test_an_input_whose_reader_is_gone_ends_at_once_and_closes_its_request():
    r, w = os.pipe()
    os.close(r)  # the storlet refused its first input and exited
    body = Body([b"x" * (1 << 20)] * 100)
    proto = invocation_of()
    with eventlet.Timeout(5):  # upstream's writer spun here forever
        proto._write_input_data(w, body)
    assert body.closed and proto.input_cut is None
    with pytest.raises(OSError):
        os.fstat(w)


def _read_all(r, got):
    while True:
        eventlet.hubs.trampoline(r, read=True)
        data = os.read(r, 1 << 16)
        if not data:
            return
        got.append(data)


def test_an_input_is_written_whole_through_a_pipe_smaller_than_it():
    r, w = os.pipe()
    chunks = [bytes([i]) * 300_000 for i in range(8)]
    body = Body(chunks)
    got = []
    reader = eventlet.spawn(_read_all, r, got)
    proto = invocation_of()
    with eventlet.Timeout(10):
        proto._write_input_data(w, body)
        reader.wait()
    os.close(r)
    assert b"".join(got) == b"".join(chunks) and body.closed and proto.input_cut is None


def test_a_reader_that_stalls_past_the_storlets_time_cuts_the_input():
    r, w = os.pipe()
    body = Body([b"x" * (4 << 20)])
    proto = invocation_of(timeout=0.2)
    with eventlet.Timeout(10):
        proto._write_input_data(w, body)
    assert body.closed and "not read within the storlet timeout" in proto.input_cut
    os.close(r)


def test_a_backend_that_fails_midway_cuts_the_input():
    r, w = os.pipe()
    got = []
    reader = eventlet.spawn(_read_all, r, got)
    # What Swift raises when an object server stops sending (an eventlet
    # Timeout, not an Exception).
    body = Body([b"x" * 1000], fail=eventlet.Timeout())
    proto = invocation_of()
    with eventlet.Timeout(10):
        proto._write_input_data(w, body)
        reader.wait()
    os.close(r)
    assert b"".join(got) == b"x" * 1000  # what the storlet saw: a clean end
    assert proto.input_cut.startswith("an input could not be read")


def test_an_output_made_from_a_cut_input_fails_instead_of_ending(pipe_pair):
    r, w = pipe_pair()
    os.write(w, b"partial result")
    os.close(w)
    cut = []
    output = StorletOutputIterator(r, 5, None, cut=lambda: cut[0] if cut else None)
    assert next(output) == b"partial result"
    cut.append("an input could not be read: boom")
    with pytest.raises(invocation.InputCut, match="boom"):
        next(output)
    assert output.closed


def test_a_whole_output_ends(pipe_pair):
    r, w = pipe_pair()
    os.write(w, b"result")
    os.close(w)
    assert list(StorletOutputIterator(r, 5, None)) == [b"result"]


def test_the_writers_end_with_the_output():
    # A storlet (or a descriptor it duplicated) reading a byte now and then
    # kept upstream's writer, and its backend request, alive for ever.
    r, w = os.pipe()
    body = Body([b"x" * (2 << 20)])
    proto = invocation_of(timeout=5)

    def trickle():
        while True:
            eventlet.hubs.trampoline(r, read=True)
            if not os.read(r, 1024):
                return
            eventlet.sleep(0.1)

    reader = eventlet.spawn(trickle)
    writer = eventlet.spawn(proto._write_input_data, w, body)
    eventlet.sleep(0.3)
    assert not body.closed
    out_r, out_w = os.pipe()
    os.close(out_w)
    list(StorletOutputIterator(out_r, 5, None, on_close=proto._end_writers))
    with eventlet.Timeout(2):
        writer.wait()
    assert body.closed and proto.input_cut is None
    reader.kill()
    os.close(r)


def test_a_cut_seen_at_the_end_of_the_output_cancels_nothing(pipe_pair):
    # The task has ended: cancelling it would make the gateway take the
    # account's sandbox for stuck, and kill it.
    r, w = pipe_pair()
    os.close(w)
    cancelled = []
    output = StorletOutputIterator(
        r, 5, lambda: cancelled.append(1), cut=lambda: "an input could not be read: x"
    )
    with pytest.raises(StorletRuntimeException):
        next(output)
    assert cancelled == [] and output.closed


def test_a_cut_seen_at_the_end_with_bytes_left_cancels_nothing(pipe_pair):
    # The pipe has ended, whatever the iterator still holds.
    r, w = pipe_pair()
    os.write(w, b"a line\nthe rest")
    os.close(w)
    cancelled, cut = [], []
    output = StorletOutputIterator(
        r, 5, lambda: cancelled.append(1), cut=lambda: cut[0] if cut else None
    )
    assert output.readline() == b"a line\n"
    cut.append("an input could not be read: x")
    with pytest.raises(invocation.InputCut):
        next(output)
    assert cancelled == [] and output.closed


def test_a_pipe_holding_data_is_not_waited_for_in_the_hub(pipe_pair, monkeypatch):
    # Upstream waits for the output in the hub even when it is there (it
    # mostly is, once the metadata is read): a trip through the hub for
    # nothing on every invocation.
    r, w = pipe_pair()
    os.write(w, b"output")
    hub = eventlet.hubs.get_hub()
    monkeypatch.setattr(hub, "switch", lambda: pytest.fail("waited in the hub"))
    invocation_of()._wait_for_read_with_timeout(r)


def test_an_empty_pipe_is_waited_for_until_written(pipe_pair):
    r, w = pipe_pair()
    proto = invocation_of()
    eventlet.spawn_after(0.05, os.write, w, b"metadata")
    proto._wait_for_read_with_timeout(r)
    assert os.read(r, 100) == b"metadata"


@pytest.mark.parametrize("task_id, cancels", [(None, []), ("t1", ["t1"])])
def test_a_silent_pipe_times_out_and_cancels_a_task_known_taken(pipe_pair, task_id, cancels):
    r, _ = pipe_pair()
    proto = invocation_of(timeout=0.1)
    proto.task_id = task_id
    cancelled = []
    proto._cancel = lambda: cancelled.append(proto.task_id)
    with pytest.raises(StorletTimeout):
        proto._wait_for_read_with_timeout(r)
    assert cancelled == cancels


def test_a_stalled_output_times_out(pipe_pair):
    r, _ = pipe_pair()
    with pytest.raises(StorletTimeout):
        next(StorletOutputIterator(r, 0.1, None))


@pytest.mark.parametrize(
    "data, lines",
    [
        (b"line\nlast, no newline", [b"line\n", b"last, no newline"]),
        (b"x" * (200 << 10) + b"\nend", [b"x" * (200 << 10) + b"\n", b"end"]),
    ],
)
def test_readline_ends_at_the_end_of_the_output(pipe_pair, data, lines):
    # Upstream's readline looped for ever on both.
    r, w = pipe_pair()

    def write():
        for i in range(0, len(data), 4096):
            eventlet.sleep(0)
            os.write(w, data[i : i + 4096])
        os.close(w)

    writer = eventlet.spawn(write)
    output = StorletOutputIterator(r, 5, None)
    assert output.readlines() == lines
    assert output.readline() == b""
    writer.wait()


def test_an_output_is_read_as_it_comes(pipe_pair):
    # Read at once when the pipe holds it, waited for in the hub when not.
    r, w = pipe_pair()
    os.write(w, b"first line\nsec")

    def later():
        eventlet.sleep(0.05)
        os.write(w, b"ond line\n")
        eventlet.sleep(0.05)
        os.write(w, b"third")
        os.close(w)

    writer = eventlet.spawn(later)
    output = StorletOutputIterator(r, 5, None)
    assert output.readline() == b"first line\n"
    assert b"".join(output) == b"second line\nthird"
    assert output.closed or not output.buf
    writer.wait()
