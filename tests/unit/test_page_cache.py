"""The object server drops the pages of an object a storlet read as Swift's
own GET would have: Swift's real disk file reader, a gateway that runs
nothing (tests/functional/test_engine.py checks the page cache itself on
the real cluster)."""

import hashlib
import logging

import pytest
from storlets.gateway.common.exceptions import StorletRuntimeException
from storlets.gateway.common.stob import StorletData, StorletResponse
from storlets.gateway.gateways.container.gateway import ContainerStorletRequest
from swift.common.storage_policy import POLICIES
from swift.common.swob import Request, Response
from swift.common.utils import Timestamp
from swift.obj import diskfile

from mlstorlets.server.middleware import storlet_handler
from mlstorlets.server.middleware.output_length import Exactly
from mlstorlets.server.middleware.page_cache import (
    InputPagesDroppedHandler,
    is_disk_reader,
)

LOG = logging.getLogger("test")
BODY = b"hello storlets"
INVOCATION = {
    "X-Run-Storlet": "probe.py",
    "X-Storlet-Main": "probe.ProbeStorlet",
    "X-Storlet-Language": "python",
}
# Objects kept at most, when kept (Swift's default is 5 MiB).
KEEP_CACHE_SIZE = 1024


class Output(object):
    """A storlet's output that says whether it was closed."""

    def __init__(self, *chunks, fail_on_close=False):
        self.chunks, self.closed, self.fail_on_close = list(chunks), False, fail_on_close

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        self.closed = True
        if self.fail_on_close:
            raise IOError("output failed to close")


@pytest.fixture
def dropped(monkeypatch):
    """The (offset, length) of every drop from the page cache, by any disk
    file reader."""
    calls = []
    monkeypatch.setattr(
        diskfile, "drop_buffer_cache", lambda fd, offset, length: calls.append((offset, length))
    )
    return calls


@pytest.fixture
def open_reader(tmp_path, dropped):
    """Swift's reader of a real object on disk, as its object server makes
    one for a GET."""
    (tmp_path / "sda1").mkdir()
    manager = diskfile.DiskFileManager(
        {"devices": str(tmp_path), "mount_check": "false", "keep_cache_size": KEEP_CACHE_SIZE}, LOG
    )
    made = []

    def reader(keep_cache, size=len(BODY)):
        body = BODY * (size // len(BODY))
        disk_file = manager.get_diskfile("sda1", "7", "AUTH_a", "c", "o%d" % len(made), POLICIES[0])
        timestamp = Timestamp.now()
        with disk_file.create() as writer:
            writer.write(body)
            writer.put(
                {
                    "name": "/AUTH_a/c/o%d" % len(made),
                    "X-Timestamp": timestamp.internal,
                    "Content-Length": str(len(body)),
                    "ETag": hashlib.md5(body).hexdigest(),
                    "Content-Type": "text/plain",
                }
            )
            writer.commit(timestamp)
        disk_file.open()
        made.append(disk_file.reader(keep_cache=keep_cache))
        # Swift's writer drops what it wrote.
        del dropped[:]
        return made[-1]

    yield reader
    for r in made:
        r.close()


class Gateway(object):
    """Runs nothing: the output is the test's, or its failure."""

    def _call_gateway(self, resp):
        if isinstance(self.output, Exception):
            raise self.output
        return StorletResponse(StorletData({}, data_iter=self.output))


class Handler(InputPagesDroppedHandler, Gateway):
    def __init__(self, output):
        self.output = output


def storlet_output(reader, output):
    resp = Response(app_iter=reader)
    return Handler(output)._call_gateway(resp).data.data_iter


def test_swifts_reader_is_one_whose_descriptor_upstream_hands_over(open_reader):
    reader = open_reader(keep_cache=False)
    assert is_disk_reader(reader)
    reader.close()
    assert not is_disk_reader(reader)
    assert not is_disk_reader(iter([BODY]))


def test_the_objects_pages_are_dropped_once_the_output_is_closed(open_reader, dropped):
    reader = open_reader(keep_cache=False)
    output = Output(b"out", b"put")
    answer = storlet_output(reader, output)
    assert b"".join(answer) == b"output"
    # Not before: the sandbox may still be reading.
    assert dropped == [] and is_disk_reader(reader)
    answer.close()
    assert output.closed
    assert dropped == [(0, 0)]
    assert reader._fp is None
    answer.close()
    assert dropped == [(0, 0)]


def test_pages_swift_would_keep_are_kept(open_reader, dropped):
    # keep_cache_private, or a GET without a token: Swift's reader keeps them.
    reader = open_reader(keep_cache=True)
    storlet_output(reader, Output(b"out")).close()
    assert dropped == [] and reader._fp is None


def test_an_object_of_keep_cache_size_or_more_is_dropped_even_when_kept(open_reader, dropped):
    reader = open_reader(keep_cache=True, size=KEEP_CACHE_SIZE + len(BODY))
    storlet_output(reader, Output(b"out")).close()
    assert dropped == [(0, 0)]


def test_an_output_that_fails_to_close_still_drops_and_closes(open_reader, dropped):
    reader = open_reader(keep_cache=False)
    answer = storlet_output(reader, Output(b"out", fail_on_close=True))
    with pytest.raises(IOError):
        answer.close()
    assert dropped == [(0, 0)] and reader._fp is None


def test_a_storlet_that_failed_before_any_output_still_drops_and_closes(open_reader, dropped):
    reader = open_reader(keep_cache=False)
    with pytest.raises(StorletRuntimeException):
        storlet_output(reader, StorletRuntimeException("the storlet failed"))
    assert dropped == [(0, 0)] and reader._fp is None


def test_an_input_that_is_no_disk_file_is_left_alone(dropped):
    # Upstream streams such an input to the sandbox through its own reader,
    # which drops what it read.
    output = Output(b"out")
    assert storlet_output(iter([BODY]), output) is output


def test_the_declared_length_closes_through_to_the_reader(open_reader, dropped):
    # In the object server's handler, the output held to its declared
    # length is the outer one: closing it reaches the reader.
    mro = storlet_handler.handler_for({"bind_port": "6200"}).__mro__
    declared = mro.index(storlet_handler.DeclaredLengthHandler)
    assert declared < mro.index(InputPagesDroppedHandler)
    reader = open_reader(keep_cache=False)
    answer = Exactly(storlet_output(reader, Output(b"out")), 3, "probe over o", LOG)
    assert b"".join(answer) == b"out"
    assert dropped == [(0, 0)] and reader._fp is None


def test_the_object_servers_handler_hands_over_and_drops(open_reader, dropped):
    class Gateway(object):
        request_class = ContainerStorletRequest

        def __init__(self, conf, logger, scope):
            pass

        def invocation_flow(self, sreq):
            # Upstream's: the reader's descriptor, handed to the sandbox.
            assert sreq.data.data_fd == reader._fp.fileno()
            return StorletResponse(StorletData({"Storlet-Output-Length": "3"}, data_iter=output))

    reader, output = open_reader(keep_cache=False), Output(b"out")
    req = Request.blank("/sda1/7/AUTH_a/c/o0", headers=INVOCATION)
    conf = {"gateway_module": Gateway, "execution_server": "object"}
    handler = storlet_handler.handler_for({"bind_port": "6200"})(req, conf, {}, None, LOG)
    answer = handler.apply_storlet(Response(app_iter=reader, headers={"X-Timestamp": "1"}))
    assert answer.content_length == 3
    assert dropped == []
    # Read to its declared length, the output closes itself.
    assert b"".join(answer.app_iter) == b"out"
    assert output.closed and dropped == [(0, 0)] and reader._fp is None
    answer.app_iter.close()
    assert dropped == [(0, 0)]
