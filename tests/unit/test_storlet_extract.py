"""storlet_copy's extraction (X-Mlstorlets-Extract: tar) against a fake
Swift app: a storlet's tar output becomes objects, with each member's pax
metadata, and nothing is written when the storlet fails."""

import io
import json
import tarfile

import pytest
from fake_swift import FakeSwift, call
from swift.common.swob import Request

from mlstorlets.sandbox import protocol
from mlstorlets.server.middleware import storlet_copy

SRC = "/v1/AUTH_a/c/video.avi"
DEST = "/v1/AUTH_a/c/frames"


@pytest.fixture
def swift():
    fake = FakeSwift()
    fake.register("HEAD", "/v1/AUTH_a/c", "204 No Content")
    yield fake
    # The storlet's output is closed, however the extraction ended (the
    # extraction's own requests are upstream bulk's).
    gets = [it for (method, *_), it in zip(fake.calls, fake.iters) if method == "GET"]
    assert gets and all(it.closed for it in gets), "the storlet output was left unclosed"


def _tar(members):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, meta in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.pax_headers = {"SCHILY.xattr.user.meta." + k: v for k, v in meta.items()}
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _request(**headers):
    return Request.blank(
        DEST,
        method="PUT",
        headers=dict(
            {
                "X-Copy-From": "c/video.avi",
                "X-Run-Storlet": "video_frames.py",
                protocol.EXTRACT_HEADER: "tar",
                "X-Auth-Token": "t",
                "X-Object-Meta-Source-Etag": "abc",
            },
            **headers,
        ),
    )


def test_a_tar_output_becomes_objects_with_their_metadata(swift):
    body = _tar(
        [("000000.jpg", b"one", {"Frame-Index": "0"}), ("000001.jpg", b"two", {"Frame-Index": "1"})]
    )
    swift.register(
        "GET", SRC, "200 OK", {"X-Object-Meta-Storlet-Output-Length": str(len(body))}, body
    )
    for name in ("000000.jpg", "000001.jpg"):
        swift.register("PUT", DEST + "/" + name, "201 Created")
    status, headers, answer = call(storlet_copy.filter_factory({})(swift), _request())
    assert status == 200
    assert json.loads(answer)["Number Files Created"] == 2
    data, meta = swift.stored[DEST + "/000001.jpg"]
    assert data == b"two"
    assert meta["X-Object-Meta-Frame-Index"] == "1"
    assert meta["X-Object-Meta-Source-Etag"] == "abc"
    # The storlet ran on a GET of the source; the extraction PUTs carry no
    # storlet headers of their own.
    get = [c for c in swift.calls if c[0] == "GET"][0]
    assert get[2]["X-Run-Storlet"] == "video_frames.py"
    assert all("X-Run-Storlet" not in c[2] for c in swift.calls if c[0] == "PUT")


def test_a_refusing_storlet_writes_nothing(swift):
    swift.register(
        "GET", SRC, "200 OK", {"X-Object-Meta-Storlet-Error": "cannot be decoded as a video"}, b""
    )
    status, headers, answer = call(storlet_copy.filter_factory({})(swift), _request())
    assert status == 422
    assert b"c/video.avi" in answer and b"cannot be decoded" in answer
    assert not swift.stored


def test_an_output_cut_short_stores_only_whole_members(swift):
    body = _tar([("000000.jpg", b"one" * 100, {}), ("000001.jpg", b"two" * 1000, {})])
    swift.register(
        "GET",
        SRC,
        "200 OK",
        {"X-Object-Meta-Storlet-Output-Length": str(len(body))},
        body[: body.index(b"twotwo") + 100],
    )
    swift.register("PUT", DEST + "/000000.jpg", "201 Created")
    swift.register("PUT", DEST + "/000001.jpg", "201 Created")
    status, headers, answer = call(storlet_copy.filter_factory({})(swift), _request())
    assert not json.loads(answer)["Response Status"].startswith("2")
    assert list(swift.stored) == [DEST + "/000000.jpg"]


def test_only_tar_is_extracted(swift):
    swift.register("GET", SRC, "200 OK", {}, b"data")
    status, _, _ = call(
        storlet_copy.filter_factory({})(swift), _request(**{protocol.EXTRACT_HEADER: "zip"})
    )
    assert status == 400
    assert not swift.stored


@pytest.mark.parametrize(
    "name", ["../../x.jpg", "a/../b.jpg", "./a/./b.jpg", "a\r\nb.jpg", "a\x7fb.jpg"]
)
def test_a_member_name_bulk_would_store_literally_is_refused(swift, name):
    body = _tar([("000000.jpg", b"one", {}), (name, b"evil", {})])
    swift.register(
        "GET", SRC, "200 OK", {"X-Object-Meta-Storlet-Output-Length": str(len(body))}, body
    )
    swift.register("PUT", DEST + "/000000.jpg", "201 Created")
    status, headers, answer = call(storlet_copy.filter_factory({})(swift), _request())
    summary = json.loads(answer)
    assert summary["Number Files Created"] == 1
    assert [status for _, status in summary["Errors"]] == ["400 Bad Request"]
    assert list(swift.stored) == [DEST + "/000000.jpg"]


def test_an_extraction_stops_past_its_member_bound(swift):
    body = _tar([("%06d.jpg" % i, b"x", {}) for i in range(5)])
    swift.register(
        "GET", SRC, "200 OK", {"X-Object-Meta-Storlet-Output-Length": str(len(body))}, body
    )
    for i in range(5):
        swift.register("PUT", DEST + "/%06d.jpg" % i, "201 Created")
    app = storlet_copy.filter_factory({}, max_extract_members="3")(swift)
    status, headers, answer = call(app, _request())
    summary = json.loads(answer)
    assert summary["Response Status"] == "413 Request Entity Too Large"
    assert summary["Response Body"] == (
        "more than 3 members in one extraction: the first 3 were written"
    )
    assert sorted(swift.stored) == [DEST + "/%06d.jpg" % i for i in range(3)]


# -- many objects in one call (X-Mlstorlets-Extract: many) -----------------
def _many(members, report, extra="/c/b.jpg"):
    """A many-object call's request and its storlet's tar."""
    body = _tar(members + ([(protocol.MANY_REPORT, report, {})] if report is not None else []))
    request = _request(
        **{protocol.EXTRACT_HEADER: protocol.EXTRACT_MANY, "X-Storlet-Extra-Resources": extra}
    )
    return body, request


def _serve(swift, body, names):
    swift.register(
        "GET", SRC, "200 OK", {"X-Object-Meta-Storlet-Output-Length": str(len(body))}, body
    )
    for name in names:
        swift.register("PUT", DEST + "/" + name, "201 Created")


def test_many_the_report_is_read_not_stored_and_answered(swift):
    report = json.dumps({"refused": [["c/b.jpg", "not a JPEG\r\nor PNG"]]}).encode()
    body, request = _many([("a.jpg", b"one", {"Source-Etag": "e1"})], report)
    _serve(swift, body, ["a.jpg", protocol.MANY_REPORT])
    status, _, answer = call(storlet_copy.filter_factory({})(swift), request)
    summary = json.loads(answer)
    assert status == 200
    assert summary["Number Files Created"] == 1
    assert summary["Refused"] == [["c/b.jpg", "not a JPEG or PNG"]]
    assert summary["Response Status"].startswith("201")
    assert list(swift.stored) == [DEST + "/a.jpg"]
    assert swift.stored[DEST + "/a.jpg"][1]["X-Object-Meta-Source-Etag"] == "e1"


def test_many_a_whole_refusal_is_created_nothing_not_an_invalid_tar(swift):
    report = json.dumps({"refused": [["c/video.avi", "bad"], ["c/b.jpg", "bad too"]]}).encode()
    body, request = _many([], report)
    _serve(swift, body, [protocol.MANY_REPORT])
    _, _, answer = call(storlet_copy.filter_factory({})(swift), request)
    summary = json.loads(answer)
    assert summary["Number Files Created"] == 0
    assert [name for name, _ in summary["Refused"]] == ["c/video.avi", "c/b.jpg"]
    assert not swift.stored


@pytest.mark.parametrize(
    "report",
    [
        b"not json",
        json.dumps({"refused": [["c/other.jpg", "an object not of this call"]]}).encode(),
        json.dumps({"refused": [["c/b.jpg", 3]]}).encode(),
        json.dumps({"refused": "c/b.jpg"}).encode(),
        b"x" * (protocol.MAX_MANY_REPORT + 10),
        # Nested past the parser's recursion.
        b"[" * 2000 + b"]" * 2000,
    ],
)
def test_many_a_report_the_proxy_cannot_trust_fails_the_answer(swift, report):
    body, request = _many([("a.jpg", b"one", {})], report)
    _serve(swift, body, ["a.jpg", protocol.MANY_REPORT])
    _, _, answer = call(storlet_copy.filter_factory({})(swift), request)
    summary = json.loads(answer)
    assert summary["Response Status"] == "502 Bad Gateway"
    assert summary["Response Body"] == "the storlet's report is malformed"
    assert summary["Refused"] == []


def test_many_a_missing_report_fails_the_answer(swift):
    body, request = _many([("a.jpg", b"one", {})], None)
    _serve(swift, body, ["a.jpg"])
    _, _, answer = call(storlet_copy.filter_factory({})(swift), request)
    summary = json.loads(answer)
    assert summary["Response Status"] == "502 Bad Gateway"
    assert "report is missing" in summary["Response Body"]
    assert list(swift.stored) == [DEST + "/a.jpg"]


def test_many_a_second_report_is_refused(swift):
    report = json.dumps({"refused": []}).encode()
    body = _tar([(protocol.MANY_REPORT, report, {}), (protocol.MANY_REPORT, report, {})])
    _, request = _many([], report)
    _serve(swift, body, [protocol.MANY_REPORT])
    _, _, answer = call(storlet_copy.filter_factory({})(swift), request)
    summary = json.loads(answer)
    assert [status for _, status in summary["Errors"]] == ["400 Bad Request"]
    assert not swift.stored


def test_many_a_report_elsewhere_than_the_top_is_an_object_like_any(swift):
    report = json.dumps({"refused": []}).encode()
    body, request = _many([("sub/" + protocol.MANY_REPORT, b"data", {})], report)
    _serve(swift, body, ["sub/" + protocol.MANY_REPORT, protocol.MANY_REPORT])
    _, _, answer = call(storlet_copy.filter_factory({})(swift), request)
    assert json.loads(answer)["Number Files Created"] == 1
    assert list(swift.stored) == [DEST + "/sub/" + protocol.MANY_REPORT]


def test_many_extracts_under_a_bare_container(swift):
    report = json.dumps({"refused": []}).encode()
    body = _tar([("a.jpg", b"one", {}), (protocol.MANY_REPORT, report, {})])
    swift.register(
        "GET", SRC, "200 OK", {"X-Object-Meta-Storlet-Output-Length": str(len(body))}, body
    )
    swift.register("PUT", "/v1/AUTH_a/out/a.jpg", "201 Created")
    swift.register("HEAD", "/v1/AUTH_a/out", "204 No Content")
    request = _request(**{protocol.EXTRACT_HEADER: protocol.EXTRACT_MANY})
    request.environ["PATH_INFO"] = "/v1/AUTH_a/out"
    _, _, answer = call(storlet_copy.filter_factory({})(swift), request)
    assert json.loads(answer)["Number Files Created"] == 1
    assert list(swift.stored) == ["/v1/AUTH_a/out/a.jpg"]
