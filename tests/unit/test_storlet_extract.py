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
