"""The request body as a storlet input: what the proxy takes, and how it
reads it (the cluster's side is tests/functional/test_body_input.py)."""

import errno
import io
import os

import pytest
from swift.common.swob import HTTPException, Request, Response

from mlstorlets.server.middleware import body_input
from mlstorlets.server.middleware.body_input import body_chunks, check_body, spool, take_body


def storlet_get(body=b"", **headers):
    headers.setdefault("X-Run-Storlet", "probe.py")
    return Request.blank("/v1/AUTH_a/c/o", headers=headers, body=body)


def test_the_body_is_taken_from_the_request_whole_and_in_chunks():
    req = storlet_get(b"0123456789")
    check_body(req, 10)
    body, length = take_body(req)
    assert length == 10 and "Content-Length" not in req.headers
    # The object's GET goes on without it.
    assert req.environ["wsgi.input"].read() == b""
    assert list(body_chunks(body, length, chunk_bytes=4)) == [b"0123", b"4567", b"89"]


def test_no_length_is_an_empty_body():
    req = Request.blank("/v1/AUTH_a/c/o", headers={"X-Run-Storlet": "probe.py"})
    check_body(req, 10)
    body, length = take_body(req)
    assert length == 0 and list(body_chunks(body, length)) == []


@pytest.mark.parametrize(
    "make, status",
    [
        (lambda: storlet_get(b"x" * 11), 413),
        (lambda: storlet_get(**{"Transfer-Encoding": "chunked"}), 411),
        (lambda: Request.blank("/v1/AUTH_a/c/o", body=b"x"), 400),
        (lambda: Request.blank("/v1/AUTH_a/c/o", body=b"x", method="PUT"), 400),
    ],
    ids=["over-the-limit", "chunked", "no-storlet", "put"],
)
def test_a_body_the_proxy_does_not_take_is_refused_unread(make, status):
    req = make()
    with pytest.raises(HTTPException) as err:
        check_body(req, 10)
    assert err.value.status_int == status
    assert req.environ["wsgi.input"].tell() == 0


def test_a_body_ending_short_raises_after_what_it_had():
    chunks = body_chunks(io.BytesIO(b"abcdef"), 10, chunk_bytes=4)
    assert next(chunks) == b"abcd"
    assert next(chunks) == b"ef"
    with pytest.raises(ValueError, match="ended after 6 of its 10 bytes"):
        next(chunks)


def test_the_spooled_body_is_a_read_only_file_of_its_own():
    fd = spool(io.BytesIO(b"state" * 100000), 500000, Request.blank("/"))
    try:
        assert os.read(fd, 10) == b"statestate"
        assert os.fstat(fd).st_size == 500000
        assert os.fstat(fd).st_nlink == 0
        # What the storlet gets a copy of: not a way to write to the disk.
        with pytest.raises(OSError):
            os.write(fd, b"x")
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "failure, status",
    [(None, 400), (TimeoutError("timed out"), 408), (ConnectionResetError(), 499)],
    ids=["short", "stalled", "gone"],
)
def test_a_body_that_cannot_be_read_whole_is_an_error_of_the_clients(failure, status):
    class Body(io.BytesIO):
        def read(self, size=-1):
            chunk = super().read(size)
            if not chunk and failure is not None:
                raise failure
            return chunk

    with pytest.raises(HTTPException) as err:
        spool(Body(b"abc"), 10, Request.blank("/"))
    assert err.value.status_int == status


def test_a_body_the_proxy_cannot_hold_is_its_own_failure(monkeypatch):
    class Full(io.BytesIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(body_input.tempfile, "TemporaryFile", Full)
    with pytest.raises(HTTPException) as err:
        spool(io.BytesIO(b"abc"), 3, Request.blank("/"))
    assert err.value.status_int == 503
    assert b"cannot hold the request body: No space left on device" in err.value.body


def test_a_worker_holds_bodies_within_its_budget():
    held = body_input.HeldBytes()
    assert held.take(60, 100) and held.take(40, 100)
    assert not held.take(1, 100)
    # An empty body holds nothing, whatever is held.
    assert held.take(0, 100)
    held.give_back(60)
    assert held.take(50, 100) and held.now == 90


def test_the_budget_is_four_bodies_unless_set_and_never_under_one():
    from mlstorlets.server.middleware.storlet_handler import handler_for

    proxy = {"execution_server": "proxy", "max_body_input_bytes": "1000"}
    assert handler_for(proxy).max_body_input_held == 4000
    assert handler_for(dict(proxy, max_body_input_held_bytes="1500")).max_body_input_held == 1500
    with pytest.raises(ValueError, match="max_body_input_held_bytes"):
        handler_for(dict(proxy, max_body_input_held_bytes="999"))


class Answer(object):
    def __init__(self, status, **headers):
        self.status, self.headers = status, headers

    def getheaders(self):
        return list(self.headers.items())


NOT_RUN = {"X-Mlstorlets-Not-Run": "true"}


@pytest.mark.parametrize(
    "answer, wait",
    [
        (Answer(503, **{"Retry-After": "1"}, **NOT_RUN), 1),
        (Answer(503, **{"Retry-After": "600"}, **NOT_RUN), 8),
        (Answer(503, **{"Retry-After": "soon"}, **NOT_RUN), 1),
        # Not the engine's "nothing ran": the storlet may have run.
        (Answer(503, **{"Retry-After": "1"}), None),
        (Answer(503), None),
        (Answer(502, **{"Retry-After": "1"}, **NOT_RUN), None),
    ],
)
def test_the_client_sends_again_only_what_the_cluster_could_not_take_now(answer, wait):
    from mlstorlets.client.swift import _retry_after

    assert _retry_after(answer) == wait


def test_a_held_body_is_emptied_and_let_go_once_its_answer_is_over(tmp_path):
    req = storlet_get(b"x" * 1000)
    body, length = take_body(req)
    start = body_input.HELD.now
    assert body_input.HELD.take(length, 10**6)
    held = body_input.HeldBody(length)
    held.fd = spool(body, length, req)
    # A storlet that kept a descriptor of its input.
    kept = os.open("/proc/self/fd/%d" % held.fd, os.O_RDONLY)
    try:
        inner = iter([b"out", b"put"])
        answer = body_input.released_at_close(
            Response(app_iter=inner, headers={"Content-Length": "6"}), held.release, req
        )
        assert answer.content_length == 6 and body_input.HELD.now == start + 1000
        assert b"".join(answer.app_iter) == b"output"
        answer.app_iter.close()
        answer.app_iter.close()
        assert body_input.HELD.now == start
        assert os.fstat(kept).st_size == 0  # no disk held past the call
        with pytest.raises(OSError):
            os.fstat(held.fd)
    finally:
        os.close(kept)


def test_an_answer_without_a_body_lets_go_at_once():
    calls = []
    answer = Response(body=b"refused", status=403)
    assert body_input.released_at_close(answer, lambda: calls.append(1), None) is answer
    assert calls == [1]
