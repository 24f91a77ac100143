"""Many small objects per storlet call, in the embedded cluster.

A batch of small frames through ``frame_filter.py`` asks for many per call
(:mod:`mlstorlets.client.many_calls`): the outputs are those of one call
per object, byte for byte and with the same metadata; a bad frame fails
alone, named; a call over its budget is split until it fits; a second run
does nothing; and what a storlet reports about its inputs is checked by
the proxy before it reaches the client.
"""

import http.client
import json
import urllib.parse

import cv2
import numpy as np
import pytest

from mlstorlets.client import batch, many_calls
from mlstorlets.client.swift import Swift
from mlstorlets.sandbox import protocol

PARAMS = {"filter": "colormap", "quality": "90"}


def _frame(i):
    image = np.zeros((90, 160, 3), np.uint8)
    cv2.putText(image, str(i), (10, 70), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 200, 100), 3)
    return cv2.imencode(".jpg", image)[1].tobytes()


@pytest.fixture
def frames(conn, container):
    for i in range(12):
        conn.put_object(
            container,
            "in/f%02d.jpg" % i,
            _frame(i),
            content_type="image/jpeg",
            headers={"X-Object-Meta-Frame-Index": str(i)},
        )
    conn.put_object(container, "in/f05.jpg", b"not a frame", content_type="image/jpeg")
    return container


class Counting(Swift):
    """The gateway, counting the many-object calls it makes."""

    def __init__(self, conn):
        super().__init__(conn)
        self.extracts = []

    def storlet_extract(self, *args, **kwargs):
        self.extracts.append(1 + len(kwargs.get("extra_resources") or ()))
        return super().storlet_extract(*args, **kwargs)


def _outputs(conn, container, prefix):
    found = {}
    for entry in conn.get_container(container, prefix=prefix)[1]:
        headers, body = conn.get_object(container, entry["name"])
        meta = {k: v for k, v in headers.items() if k.startswith("x-object-meta-")}
        found[entry["name"][len(prefix) :]] = (body, headers["content-type"], meta)
    return found


def test_many_per_call_makes_what_one_per_call_makes(conn, frames):
    src = "swift://%s/in/" % frames
    gateway = Counting(conn)
    many = batch.run_batch(
        gateway, "frame_filter.py", src, "swift://%s/many/" % frames, PARAMS, concurrency=1
    )
    one = batch.run_batch(
        conn, "frame_filter.py", src, "swift://%s/one/" % frames, PARAMS, objects_per_call=1
    )
    # Two calls for the twelve frames (one worker: twice its concurrency);
    # the bad one failed alone, named.
    assert gateway.extracts == [6, 6]
    assert len(many.done) == len(one.done) == 11
    ((name, reason),) = many.failed
    assert name == "swift://%s/in/f05.jpg" % frames
    assert "refused" in reason and "not a JPEG or PNG frame" in reason
    made, single = _outputs(conn, frames, "many/"), _outputs(conn, frames, "one/")
    assert sorted(made) == sorted(single) == ["f%02d.jpg" % i for i in range(12) if i != 5]
    for name in made:
        body, content_type, meta = made[name]
        assert (body, content_type) == single[name][:2]
        # The source's metadata, the storlet's, the source's ETag and the
        # run's digest, as a copy of one object has them.
        assert meta["x-object-meta-frame-index"] == str(int(name[1:3]))
        assert meta["x-object-meta-filter"] == "colormap"
        assert meta == single[name][2]
    # The storlet's report is no object.
    assert not [e for e in conn.get_container(frames)[1] if protocol.MANY_REPORT in e["name"]]

    # A second run finds the eleven done and tries the bad one alone.
    gateway.extracts.clear()
    again = batch.run_batch(gateway, "frame_filter.py", src, "swift://%s/many/" % frames, PARAMS)
    assert len(again.skipped) == 11 and len(again.failed) == 1 and not again.done
    assert gateway.extracts == []


def test_a_call_over_the_datagram_is_split_until_it_fits(conn, container):
    # The first frame's metadata is small, the others' large (as large as
    # the object servers' file system keeps in xattrs): the plan (from the
    # first) packs more than one datagram (64 KiB with the project's agent)
    # can carry.
    heavy = {"X-Object-Meta-Note-%02d" % k: "n" * 250 for k in range(8)}
    conn.put_object(container, "in/a00.jpg", _frame(0), content_type="image/jpeg")
    for i in range(1, 60):
        conn.put_object(
            container, "in/a%02d.jpg" % i, _frame(i), content_type="image/jpeg", headers=heavy
        )
    gateway = Counting(conn)
    summary = batch.run_batch(
        gateway,
        "frame_filter.py",
        "swift://%s/in/" % container,
        "swift://%s/out/" % container,
        PARAMS,
        concurrency=1,
    )
    assert len(summary.done) == 60 and not summary.failed, summary.format()
    # Two calls of 30 planned, each refused whole and split in two.
    assert gateway.extracts[:2] == [30, 15], gateway.extracts
    assert sorted(e["name"] for e in conn.get_container(container, prefix="out/")[1]) == [
        "out/a%02d.jpg" % i for i in range(60)
    ]
    headers = conn.head_object(container, "out/a03.jpg")
    assert headers["x-object-meta-note-03"] == "n" * 250


def _raw_put(conn, path, headers):
    url, token = conn.get_auth()
    parsed = urllib.parse.urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    try:
        connection.request(
            "PUT",
            "%s/%s" % (parsed.path, path),
            headers=dict(headers, **{"X-Auth-Token": token, "Content-Length": "0"}),
        )
        resp = connection.getresponse()
        return resp.status, resp.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    "refuse, why",
    [
        # An object that is no input of the call: the storlet may not speak
        # of it (it would tell the client a lie about another object).
        ("other/secret.txt", "refused"),
        # A reason with a line break is made one line.
        ("%s/in.txt", "line one\r\nX-Injected: yes"),
    ],
)
def test_the_proxy_checks_what_a_storlet_reports(conn, container, refuse, why):
    conn.put_object(container, "in.txt", b"data")
    status, body = _raw_put(
        conn,
        "%s/out" % container,
        {
            "X-Run-Storlet": "hostile.py",
            "X-Copy-From": "%s/in.txt" % container,
            "X-Storlet-Parameter-1": "action:report",
            "X-Storlet-Parameter-2": "refuse:"
            + urllib.parse.quote(refuse.replace("%s", container)),
            "X-Storlet-Parameter-3": "why:" + urllib.parse.quote(why),
            protocol.EXTRACT_HEADER: protocol.EXTRACT_MANY,
        },
    )
    summary = json.loads(body)
    names = sorted(o["name"] for o in conn.get_container(container)[1])
    assert names == ["in.txt", "out/ok.txt"]
    if refuse.startswith("other/"):
        assert summary["Response Status"] == "502 Bad Gateway"
        assert summary["Refused"] == []
    else:
        assert summary["Refused"] == [["%s/in.txt" % container, "line one X-Injected: yes"]]
        assert summary["Number Files Created"] == 1


def test_many_calls_pass_the_plan_and_report_through_the_engine(conn, frames):
    # Straight through the gateway: the plan's output names and ETags.
    tasks = [
        batch.Task(frames, "in/f%02d.jpg" % i, "e%d" % i, 10, frames, "direct/o%d.jpg" % i)
        for i in (1, 5, 7)
    ]
    found = many_calls.run(Swift(conn), "frame_filter.py", tasks, PARAMS, content_type="image/png")
    assert found["swift://%s/in/f01.jpg" % frames] is None
    assert "not a JPEG or PNG frame" in found["swift://%s/in/f05.jpg" % frames]
    headers = conn.head_object(frames, "direct/o7.jpg")
    assert headers["x-object-meta-source-etag"] == "e7"
    assert headers["content-type"] == "image/png"
