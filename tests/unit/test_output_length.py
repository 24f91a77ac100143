"""A storlet's declared output length as the answer's Content-Length (the
cluster's side is in tests/functional/test_engine.py)."""

import logging

import pytest
from swift.common.swob import Request, Response

from mlstorlets.server.middleware.output_length import (
    BACKEND_LENGTH_HEADER,
    DeclaredLengthHandler,
    DeclaredLengthProxyHandler,
    Exactly,
    OutputCutShort,
    declared_length,
)

LOG = logging.getLogger("test")


class Chunks(object):
    """An output iterator that tells whether it was closed."""

    def __init__(self, *chunks):
        self.chunks = list(chunks)
        self.closed = False

    def __iter__(self):
        return self

    def __next__(self):
        if self.closed or not self.chunks:
            raise StopIteration
        return self.chunks.pop(0)

    def close(self):
        self.closed = True


@pytest.mark.parametrize(
    "metadata, length",
    [
        ({"Storlet-Output-Length": "14"}, 14),
        ({"storlet-output-length": " 0 "}, 0),
        ({"Storlet-Output-Length": "-1"}, None),
        ({"Storlet-Output-Length": "1e3"}, None),
        ({"Storlet-Output-Length": "9" * 19}, None),
        ({"Other": "14"}, None),
        (None, None),
    ],
)
def test_only_a_number_is_a_declared_length(metadata, length):
    assert declared_length(metadata) == length


def test_an_output_of_its_declared_length_is_passed_whole():
    source = Chunks(b"hello ", b"storlets")
    assert b"".join(Exactly(source, 14, "probe", LOG)) == b"hello storlets"
    assert source.closed


def test_an_output_that_ends_short_fails_after_what_it_had():
    source = Chunks(b"hello ")
    body = Exactly(source, 14, "storlet probe.py over /a/c/o", LOG)
    assert next(body) == b"hello "
    with pytest.raises(
        OutputCutShort, match="probe.py over /a/c/o.*8 bytes short of its declared 14"
    ):
        next(body)
    assert source.closed


def test_an_output_that_runs_long_is_cut_and_not_read_further():
    source = Chunks(b"hello ", b"storlets", b"and more")
    assert b"".join(Exactly(source, 10, "probe", LOG)) == b"hello stor"
    assert source.chunks == [b"and more"] and source.closed


def test_an_output_closed_unread_is_closed():
    source = Chunks(b"hello")
    Exactly(source, 5, "probe", LOG).close()
    assert source.closed


def test_a_client_that_leaves_closes_the_output():
    source = Chunks(b"hello ", b"storlets")
    body = Exactly(source, 14, "probe", LOG)
    next(body)
    body.close()
    assert source.closed


# -- the handlers --------------------------------------------------------------
class Upstream(object):
    """What the mixins sit on: a gateway answer with ``metadata`` and a
    handler that makes a chunked answer of it, as upstream's does."""

    def __init__(self, metadata, status=200, headers=None, body=(b"hello ", b"storlets")):
        self.request = Request.blank("/v1/AUTH_a/c/o", headers={"X-Run-Storlet": "probe.py"})
        self.path = self.request.path
        self.logger = LOG
        self.metadata, self.status, self.headers = metadata, status, headers or {}
        self.output = Chunks(*body)

    def _call_gateway(self, resp):
        data = type("StorletData", (), {"user_metadata": self.metadata})()
        data._data_iter = self.output
        type(data).data_iter = property(lambda d: d._data_iter)
        return type("StorletResponse", (), {"data": data})()

    def apply_storlet(self, resp):
        sresp = self._call_gateway(resp)
        return Response(status=self.status, headers=self.headers, app_iter=sresp.data.data_iter)

    def GET(self):
        return self.apply_storlet(None)


def handler(base_args, cls=DeclaredLengthHandler):
    made = type("Handler", (cls, Upstream), {})
    return made(*base_args)


def test_a_declared_length_becomes_the_content_length_and_the_output_stays_open():
    h = handler(({"Storlet-Output-Length": "14"},))
    answer = h.apply_storlet(None)
    assert answer.content_length == 14
    assert answer.headers[BACKEND_LENGTH_HEADER] == "14"
    # swob closes an app_iter that an assignment replaces: the output must
    # still be readable.
    assert not h.output.closed
    assert b"".join(answer.app_iter) == b"hello storlets"


def test_a_storlets_answer_never_has_the_objects_etag():
    # A proxy resumes a short read from a replica with the same ETag: the
    # storlet would run again there and its output be spliced in.
    etags = set()
    for metadata in ({"Storlet-Output-Length": "14"}, {}):
        h = handler((metadata, 200, {"Etag": "the-objects-etag"}))
        etags.add(h.apply_storlet(None).headers["Etag"])
    assert len(etags) == 2 and "the-objects-etag" not in etags

    # Not for what the gateway did not make: the object itself, which an
    # object server answers for the proxy to run the storlet over.
    class NotRunHere(Upstream):
        def apply_storlet(self, resp):
            return Response(headers=self.headers, app_iter=self.output)

    made = type("Handler", (DeclaredLengthHandler, NotRunHere), {})
    h = made({}, 200, {"Etag": "the-objects-etag"})
    assert h.apply_storlet(None).headers["Etag"] == "the-objects-etag"


@pytest.mark.parametrize(
    "args",
    [({},), ({"Storlet-Output-Length": "x"},)],
    ids=["undeclared", "not-a-number"],
)
def test_an_output_without_a_length_is_left_alone(args):
    h = handler(args)
    answer = h.apply_storlet(None)
    assert BACKEND_LENGTH_HEADER not in answer.headers
    assert answer.app_iter is h.output


def test_an_error_gets_no_length():
    h = handler(({"Storlet-Output-Length": "14"}, 502))
    answer = h.apply_storlet(None)
    assert BACKEND_LENGTH_HEADER not in answer.headers
    assert answer.content_length is None


def test_the_object_itself_keeps_its_length():
    # An object server answers the object, not run there, for the proxy
    # to run the storlet over: the gateway was not called.
    class NotRunHere(Upstream):
        def apply_storlet(self, resp):
            return Response(headers=self.headers, app_iter=self.output)

    made = type("Handler", (DeclaredLengthHandler, NotRunHere), {})
    h = made({"Storlet-Output-Length": "14"}, 200, {"Content-Length": "3"})
    answer = h.apply_storlet(None)
    assert BACKEND_LENGTH_HEADER not in answer.headers
    assert answer.app_iter is h.output and answer.content_length == 3


def test_the_proxy_keeps_the_length_an_object_server_gave():
    h = handler(({}, 200, {BACKEND_LENGTH_HEADER: "14"}), DeclaredLengthProxyHandler)
    answer = h.GET()
    assert answer.content_length == 14
    assert BACKEND_LENGTH_HEADER not in answer.headers


@pytest.mark.parametrize(
    "status, value", [(200, "x"), (200, ""), (502, "14")], ids=["garbage", "empty", "error"]
)
def test_the_proxy_never_passes_the_backend_header_on(status, value):
    h = handler(({}, status, {BACKEND_LENGTH_HEADER: value}), DeclaredLengthProxyHandler)
    answer = h.GET()
    assert BACKEND_LENGTH_HEADER not in answer.headers
    assert answer.content_length is None
