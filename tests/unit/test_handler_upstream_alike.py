"""The handlers' leaner readings of upstream's base handler: the invocation
options read from the WSGI environment, and the answer's headers copied
once; each compared with upstream's own on the same request (no cluster:
tests/functional/test_engine.py runs them in the real one)."""

import logging

import pytest
from storlets.gateway.common.exceptions import StorletRuntimeException
from storlets.gateway.common.stob import StorletData, StorletResponse
from storlets.gateway.gateways.container.gateway import ContainerStorletRequest
from storlets.swift_middleware.handlers.base import StorletBaseHandler
from swift.common.header_key_dict import HeaderKeyDict
from swift.common.swob import Request, Response

from mlstorlets.server.middleware import storlet_handler

LOG = logging.getLogger("test")
INVOCATION = {
    "X-Run-Storlet": "probe.py",
    "X-Storlet-Main": "probe.ProbeStorlet",
    "X-Storlet-Language": "python",
}
OBJECT_HEADERS = {
    "Content-Type": "image/jpeg",
    "Content-Length": "1024",
    "Etag": "d41d8cd98f00b204e9800998ecf8427e",
    "X-Timestamp": "1700000000.00000",
    "X-Object-Meta-Camera": "front",
    "X-Backend-Timestamp": "1700000000.00000",
    "Accept-Ranges": "bytes",
}


class Gateway(object):
    """Runs nothing: answers what the test put in ``answer``."""

    request_class = ContainerStorletRequest
    answer = None

    def __init__(self, conf, logger, scope):
        self.scope = scope

    def invocation_flow(self, sreq):
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class Upstream(object):
    """The object's answer, as Swift's object server gives it."""

    def __init__(self, headers=OBJECT_HEADERS, status=200):
        self.headers, self.status = headers, status

    def __call__(self, env, start_response):
        return Response(body=b"x" * 1024, status=self.status, headers=self.headers)(
            env, start_response
        )


def object_handler(headers, app=None, account="AUTH_test"):
    req = Request.blank("/sda1/7/%s/photos/cat.jpg" % account, headers=headers)
    conf = {"gateway_module": Gateway, "execution_server": "object"}
    handler = storlet_handler.handler_for({"bind_port": "6200"})
    return handler(req, conf, {}, app or Upstream(), LOG)


def comparable(options):
    options = {k: v for k, v in options.items() if k not in ("range_start", "range_end")}
    manager = options.pop("file_manager")
    return options, vars(manager)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {
            "X-Storlet-Main": "probe.ProbeStorlet",
            "X-Storlet-Language": "python",
            "X-Storlet-Dependency": "a.py, b.py",
            "X-Storlet-Parameter-1": "size:32",
            "x-storlet-content-length": "120",
            "X-Storlet-X-Timestamp": "1700000000.00000",
        },
        {"X-Storlet-Generate-Log": "True", "X-Storlet-Range": "bytes=0-9"},
        {"X-Storlet-Generate-Log": "no", "X-Storlet-Range": "bytes=0-9,20-29"},
        {"X-Storlet-Run-On-Proxy": "", "X-Storlet-Extra-Resources": "/c/o"},
    ],
)
@pytest.mark.parametrize("account", ["AUTH_test", "AUTH_test:user", "plain"])
def test_the_invocation_options_are_upstreams(headers, account):
    handler = object_handler(dict(headers, **{"X-Run-Storlet": "probe.py"}), account=account)
    ours = handler._get_storlet_invocation_options(handler.request)
    theirs = StorletBaseHandler._get_storlet_invocation_options(handler, handler.request)
    assert comparable(ours) == comparable(theirs)
    # On which the object server's handler adds a single storlet range.
    if headers.get("X-Storlet-Range") == "bytes=0-9":
        assert (ours["range_start"], ours["range_end"]) == (0, 10)
    else:
        assert "range_start" not in ours


def test_both_servers_read_the_options_from_the_environment():
    for conf in ({"execution_server": "proxy"}, {}):
        mro = storlet_handler.handler_for(conf).__mro__
        # Below upstream's own handler, above its base.
        assert mro.index(storlet_handler.OptionsFromEnviron) < mro.index(StorletBaseHandler)
        assert mro.index(storlet_handler.HeadersCopiedOnce) < mro.index(StorletBaseHandler)


def answers(object_headers, metadata, failure=None):
    """The handler's answer and upstream's to the same output."""
    made = []
    for apply_storlet in (None, StorletBaseHandler.apply_storlet):
        handler = object_handler(INVOCATION)
        Gateway.answer = failure or StorletResponse(
            StorletData(dict(metadata), data_iter=iter([b"out"]))
        )
        resp = Request.blank("/").get_response(Upstream(HeaderKeyDict(object_headers)))
        if apply_storlet is None:
            made.append(storlet_handler.HeadersCopiedOnce.apply_storlet(handler, resp))
        else:
            made.append(apply_storlet(handler, resp))
    return made


@pytest.mark.parametrize(
    "object_headers",
    [
        OBJECT_HEADERS,
        dict(OBJECT_HEADERS, **{"Content-Range": "bytes 0-9/1024", "Transfer-Encoding": "chunked"}),
        {"X-Timestamp": "1700000000.00000"},
    ],
)
@pytest.mark.parametrize(
    "metadata", [{}, {"Content-Type": "text/plain", "Faces": "3", "camera": "back"}]
)
def test_the_answer_is_upstreams(object_headers, metadata):
    ours, theirs = answers(object_headers, metadata)
    assert list(ours.headers.items()) == list(theirs.headers.items())
    assert ours.status == theirs.status == "200 OK"
    assert list(ours.app_iter) == list(theirs.app_iter) == [b"out"]
    assert "Content-Length" not in ours.headers and "Content-Range" not in ours.headers


def test_a_storlet_that_could_not_run_is_upstreams_503():
    ours, theirs = answers(OBJECT_HEADERS, {}, failure=StorletRuntimeException("no"))
    assert ours.status == theirs.status == "503 Service Unavailable"


def test_the_objects_headers_are_left_as_they_were():
    handler = object_handler(INVOCATION)
    Gateway.answer = StorletResponse(StorletData({"Faces": "3"}, data_iter=iter([b"out"])))
    resp = Request.blank("/").get_response(Upstream(HeaderKeyDict(OBJECT_HEADERS)))
    before = dict(resp.headers)
    answer = handler.apply_storlet(resp)
    assert dict(resp.headers) == before
    assert answer.headers["X-Object-Meta-Faces"] == "3"


def test_an_answer_whose_headers_are_a_plain_dict_is_the_same():
    made = []
    for plain in (True, False):
        handler = object_handler(INVOCATION)
        Gateway.answer = StorletResponse(StorletData({"Faces": "3"}, data_iter=iter([b"out"])))
        resp = Request.blank("/").get_response(Upstream(HeaderKeyDict(OBJECT_HEADERS)))
        if plain:
            # Names as a filter below may have left them: not titled.
            resp.headers = {k.lower(): v for k, v in OBJECT_HEADERS.items()}
            made.append(storlet_handler.HeadersCopiedOnce.apply_storlet(handler, resp))
        else:
            made.append(StorletBaseHandler.apply_storlet(handler, resp))
    ours, theirs = made
    assert list(ours.headers.items()) == list(theirs.headers.items())
    assert "Content-Length" not in ours.headers and ours.headers["X-Object-Meta-Faces"] == "3"
