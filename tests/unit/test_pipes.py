"""The gateway's bigger data pipes and the budget they are taken from."""

import fcntl
import logging
import os

import eventlet
import eventlet.hubs
import pytest
from storlets.gateway.common.stob import StorletData, StorletRequest

from mlstorlets.server.gateway import pipes
from mlstorlets.server.gateway.invocation import BoundedInvocationProtocol, StorletOutputIterator


def capacity(fd):
    return fcntl.fcntl(fd, pipes.F_GETPIPE_SZ)


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
    assert taken == [pipes.PIPE_BYTES - default] * 2 + [0]
    budget.release(taken[0])
    assert budget.enlarge(fds[2]) and capacity(fds[2]) == pipes.PIPE_BYTES


def test_what_is_not_a_pipe_takes_nothing(tmp_path):
    budget = pipes.PipeBudget()
    with open(tmp_path / "f", "wb") as f:
        assert budget.enlarge(f.fileno()) == 0
    assert budget.used == 0


def test_an_invocation_gives_back_every_pipe_it_enlarged():
    used = pipes.BUDGET.used
    request = StorletRequest(
        "s-1.0.py",
        {},
        StorletData({}, data_iter=iter([b"in"])),
        extra_data_list=[StorletData({}, data_iter=iter([b"x" * 10])) for _ in range(3)],
    )
    proto = BoundedInvocationProtocol(
        request, "/nonexistent", None, 5, logging.getLogger("t"), 1, lambda cancelled: None
    )
    proto._prepare_invocation_descriptors()
    inputs = [proto._input_data_write_fd] + [s["write_fd"] for s in proto.extra_data_sources]
    assert [capacity(fd) for fd in inputs + [proto.data_read_fd]] == [pipes.PIPE_BYTES] * 5
    assert pipes.BUDGET.used > used
    for fd, chunks in zip(inputs, [[b"in"]] + [[b"x"]] * 3):
        proto._write_input_data(fd, iter(chunks))  # the proxy's writer: closes its end
    proto._close_remote_side_descriptors()
    output = StorletOutputIterator(
        proto.data_read_fd, 5, None, on_close=lambda: proto.pipes.closed([proto.data_read_fd])
    )
    assert pipes.BUDGET.used > used
    output.close()
    proto._safe_close([proto.metadata_read_fd])
    assert pipes.BUDGET.used == used


def test_a_leaked_pipe_is_given_back_with_its_invocation():
    used = pipes.BUDGET.used
    request = StorletRequest("s-1.0.py", {}, StorletData({}, data_iter=iter([])))
    proto = BoundedInvocationProtocol(
        request, "/nonexistent", None, 5, logging.getLogger("t"), 1, lambda cancelled: None
    )
    proto._prepare_invocation_descriptors()
    fds = [
        proto.data_read_fd,
        proto.data_write_fd,
        proto.metadata_read_fd,
        proto.metadata_write_fd,
        proto._input_data_read_fd,
        proto._input_data_write_fd,
    ]
    assert pipes.BUDGET.used > used
    del proto
    for fd in fds:
        os.close(fd)
    assert pipes.BUDGET.used == used


class Body(object):
    """A request's body: chunks, and whether it was closed."""

    def __init__(self, chunks):
        self.chunks = iter(chunks)
        self.closed = False

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.chunks)

    def close(self):
        self.closed = True


def writer(timeout=5):
    request = StorletRequest("s-1.0.py", {}, StorletData({}, data_iter=iter([])))
    return BoundedInvocationProtocol(
        request, "/nonexistent", None, timeout, logging.getLogger("t"), 1, lambda c: None
    )


def test_an_input_whose_reader_is_gone_ends_at_once_and_closes_its_request():
    r, w = os.pipe()
    os.close(r)  # the storlet refused its first input and exited
    body = Body([b"x" * (1 << 20)] * 100)
    with eventlet.Timeout(5):  # upstream's writer spun here forever
        writer()._write_input_data(w, body)
    assert body.closed
    with pytest.raises(OSError):
        os.fstat(w)


def test_an_input_is_written_whole_through_a_pipe_smaller_than_it():
    r, w = os.pipe()
    chunks = [bytes([i]) * 300_000 for i in range(8)]
    body = Body(chunks)
    got = []

    def read():
        while True:
            eventlet.hubs.trampoline(r, read=True)
            data = os.read(r, 1 << 16)
            if not data:
                return
            got.append(data)

    reader = eventlet.spawn(read)
    with eventlet.Timeout(10):
        writer()._write_input_data(w, body)
        reader.wait()
    os.close(r)
    assert b"".join(got) == b"".join(chunks) and body.closed


def test_a_reader_that_stalls_times_the_input_out():
    r, w = os.pipe()
    body = Body([b"x" * (4 << 20)])
    with eventlet.Timeout(10):
        writer(timeout=0.2)._write_input_data(w, body)
    assert body.closed
    os.close(r)
