"""The face pipeline in storage, end to end on the embedded cluster.

Photos are uploaded once for the module (labels in ``X-Object-Meta-Name``
from the file names), faces extracted and a model trained with
:mod:`mlstorlets.client.faces.pipeline`; the tests then read the results from the
outputs' metadata, as a user would.
"""

import json
import os
import pickle
import re
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from support import data_dir
from swiftclient.exceptions import ClientException

from mlstorlets.client.cli import main
from mlstorlets.client.faces import pipeline
from mlstorlets.client.runners import budget as plan
from mlstorlets.client.stores import Stores
from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.faces.crops import read_embedding

META = "x-object-meta-"
EXTRACT, RECOGNIZE = pipeline.EXTRACT, pipeline.RECOGNIZE


def label_of(filename):
    """``obama14.jpeg`` and ``obama_test1.jpeg`` -> ``obama``."""
    return re.sub(r"\d", "", filename.split(".")[0].split("_")[0])


def _files(kind):
    root = os.path.join(data_dir(), kind)
    return [(name, os.path.join(root, name)) for name in sorted(os.listdir(root))]


def _read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def faces(conn):
    """A container with the sample photos, their crops and a trained model."""
    container = "test-faces"
    conn.put_container(container)
    for name, path in _files("train"):
        conn.put_object(
            container,
            "train/" + name,
            _read(path),
            headers={"X-Object-Meta-Name": label_of(name)},
            content_type="image/jpeg",
        )
    for name, path in _files("test"):
        conn.put_object(container, "test/" + name, _read(path), content_type="image/jpeg")
    for name, path in _files("video"):
        conn.put_object(container, "video/" + name, _read(path), content_type="video/x-msvideo")
    uri = "swift://%s/" % container
    extracted = pipeline.extract(conn, uri + "train/", uri + "crops/", concurrency=4)
    assert extracted.done and not extracted.failed, extracted.format()
    report = pipeline.train(conn, uri + "crops/", uri + "models/faces.npz", concurrency=4)
    yield {"container": container, "uri": uri, "extracted": extracted, "report": report}
    for entry in conn.get_container(container, full_listing=True)[1]:
        conn.delete_object(container, entry["name"])
    conn.delete_container(container)


def test_the_faces_commands(cluster, conn, faces, capsys, monkeypatch):
    for key, value in cluster.env().items():
        monkeypatch.setenv(key, value)
    uri = faces["uri"]
    assert main(["faces", "extract", uri + "test/", uri + "cli-crops/"]) == 0
    assert "extract_face.py: 8 done" in capsys.readouterr().out
    # Any storlet run names and types its outputs as it declares them.
    assert main(["run", "extract_face.py", uri + "test/", uri + "run-crops/", "-p", "size=64"]) == 0
    capsys.readouterr()
    crops = conn.get_container(faces["container"], prefix="run-crops/")[1]
    assert len(crops) == 8 and all(c["name"].endswith(".png") for c in crops)
    assert {c["content_type"] for c in crops} == {"image/png"}
    assert main(["faces", "recognize", uri + "models/faces.npz", uri + "test/"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8 and all(" name=" in line for line in lines)
    assert main(["faces", "train", "swift://no-such-container/x/", uri + "models/other.npz"]) == 2
    assert "no such container" in capsys.readouterr().err
    # People from the crops' names, not their metadata: here the initial.
    argv = ["faces", "train", uri + "crops/", uri + "models/initials.npz", "--json"]
    assert main(argv + ["--labels", "name:^(.)"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == ["b", "m", "o", "t"]
    assert main(argv + ["--labels", "name:^x"]) == 2
    assert "no label: the rule 'name:^x' gives none" in capsys.readouterr().err


def test_extract_writes_labelled_crops(conn, faces):
    container, summary = faces["container"], faces["extracted"]
    assert not summary.failed, summary.format()
    assert len(summary.done) == len(_files("train"))
    headers, body = conn.get_object(container, "crops/obama14.png")
    assert body.startswith(b"\x89PNG") and headers["content-type"] == "image/png"
    assert read_embedding(body, "crops/obama14.png").shape == (128,)
    crop = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)
    assert crop.shape == (150, 150, 3)
    assert headers[META + "name"] == "obama"
    assert headers[META + "source"] == container + "/train/obama14.jpeg"
    x, y, w, h = map(int, headers[META + "face-box"].split(","))
    assert w > 0 and h > 0


def test_train_writes_a_model_and_removes_its_shards(conn, faces):
    report, container = faces["report"], faces["container"]
    assert report.faces == len(_files("train"))
    assert report.classes == ["bibi", "merkel", "obama", "trump"]
    headers = conn.head_object(container, "models/faces.npz")
    assert json.loads(headers[META + "classes"]) == report.classes
    assert headers[META + "samples"] == str(report.faces)
    assert 0.3 < float(headers[META + "threshold"]) < 0.8
    assert int(headers[META + "shards"]) == report.fit_inputs
    # The model does not inherit a crop's label.
    assert META + "name" not in headers
    listing = conn.get_container(container, full_listing=True)[1]
    assert not [e["name"] for e in listing if pipeline.SHARD_PREFIX in e["name"]]


def test_recognize_names_the_8_test_photos(conn, faces):
    container, uri = faces["container"], faces["uri"]
    summary = pipeline.recognize(conn, uri + "models/faces.npz", uri + "test/", uri + "tagged/")
    assert not summary.failed, summary.format()
    right = 0
    for name, path in _files("test"):
        headers, body = conn.get_object(container, "tagged/" + name)
        assert body == _read(path)  # the photo itself is unchanged
        # A photo where no face was found is tagged "none": counted wrong.
        right += headers[META + "face-name"] == label_of(name)
    assert right == 8


def test_recognize_annotates_the_video(conn, faces):
    container, uri = faces["container"], faces["uri"]
    # Named as a phone names it: the annotated copy is AVI, named and
    # typed so, without being told the kind.
    conn.copy_object(
        container,
        "video/obama_mov.avi",
        "%s/phone/obama.mp4" % container,
        headers={"Content-Type": "video/mp4"},
    )
    summary = pipeline.recognize(conn, uri + "models/faces.npz", uri + "phone/", uri + "annotated/")
    assert not summary.failed, summary.format()
    headers, body = conn.get_object(container, "annotated/obama.avi")
    assert body[:4] == b"RIFF" and body[8:12] == b"AVI "
    assert headers["content-type"] == "video/x-msvideo"
    assert headers[META + "face-name"] == "obama"
    frames = json.loads(headers[META + "face-frames"])
    with_face = sum(n for person, n in frames.items() if person != "none")
    assert with_face > 100 and frames.get("obama", 0) >= 0.95 * with_face
    assert META + "face-damaged" not in headers


def test_a_truncated_video_says_so_and_tags_need_no_video(conn, container, faces):
    data = _read(os.path.join(data_dir(), "video", "obama_mov.avi"))
    conn.put_object(container, "cut.avi", data[:100_000])
    found = pipeline.recognize(
        conn, faces["uri"] + "models/faces.npz", "swift://%s/cut.avi" % container
    )
    assert not found.failed, found.failed
    tags = found.results["swift://%s/cut.avi" % container]
    read = sum(json.loads(tags["frames"]).values())
    assert read < 122 and tags["damaged"] == "truncated or damaged: %d of 122 frames decoded" % read


def test_training_refuses_a_single_person(conn, faces):
    uri = faces["uri"]
    with pytest.raises(ObjectError, match="at least two people, found only 'obama'"):
        pipeline.train(conn, uri + "crops/obama1.png", uri + "models/one.npz")


def test_the_faces_commands_over_files_run_on_the_client(conn, faces, tmp_path):
    """The same storlet code, on the client, for files (dropbox:// goes the
    same way: see test_stores for its connector)."""
    stores = Stores(swift=conn)
    photos = "file://%s/photos/" % tmp_path
    store, base = stores.open(photos)
    for name, path in _files("train")[::4] + _files("test"):
        split = "test/" if "_" in name else "train/"
        store.put(base.key + split + name, _read(path), {"Name": label_of(name)})
    extracted = pipeline.extract(stores, photos + "train/", "file://%s/crops/" % tmp_path)
    assert extracted.placement == "client" and not extracted.failed, extracted.format()
    crops = [n for n in os.listdir(tmp_path / "crops") if not n.startswith(".")]
    assert len(crops) == 24 and all(n.endswith(".png") for n in crops)
    model = "file://%s/model.npz" % tmp_path
    report = pipeline.train(stores, "file://%s/crops/" % tmp_path, model)
    assert report.classes == ["bibi", "merkel", "obama", "trump"] and report.faces == 24
    # The same steps as in the cluster (pack, then fit), their shards gone.
    assert (report.shards, report.merges, report.fit_inputs) == (1, 0, 1)
    assert report.shard_prefix.startswith("file://%s/.mlstorlets/shards/model.npz/" % tmp_path)
    assert not (tmp_path / ".mlstorlets" / "shards").exists()
    assert int(report.metadata["Samples"]) == 24
    found = pipeline.recognize(stores, model, photos + "test/")
    assert not found.failed and len(found.results) == 8
    right = sum(t["name"] == label_of(s.rsplit("/", 1)[1]) for s, t in found.results.items())
    assert right >= 7


def _png_claiming(width, height):
    """A small, valid PNG whose header claims ``width`` x ``height``."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _refused(conn, container, source, dest, storlet, params, extra=None):
    """Run ``storlet`` with copy semantics; return the 422 body."""
    headers = {"X-Run-Storlet": storlet, "X-Copy-From": "%s/%s" % (container, source)}
    for i, (key, value) in enumerate(sorted(params.items()), 1):
        headers["X-Storlet-Parameter-%d" % i] = "%s:%s" % (key, value)
    if extra:
        headers["X-Storlet-Extra-Resources"] = extra
    with pytest.raises(ClientException) as err:
        conn.put_object(container, dest, b"", headers=headers)
    assert err.value.http_status == 422, err.value.http_response_content
    with pytest.raises(ClientException) as missing:
        conn.head_object(container, dest)
    assert missing.value.http_status == 404
    return err.value.http_response_content.decode()


def test_bad_photos_are_refused_by_name(conn, container):
    good = _read(os.path.join(data_dir(), "train", "obama14.jpeg"))
    bad = {
        "not-an-image.jpg": (b"hello, I am text", "not a readable image"),
        "truncated.jpeg": (good[: len(good) // 2], "corrupt or truncated"),
        "empty.jpeg": (b"", "empty object"),
        "huge.png": (_png_claiming(30000, 30000), "too large"),
    }
    for name, (data, _) in bad.items():
        conn.put_object(container, name, data)
    conn.put_object(container, "good.jpeg", good, headers={"X-Object-Meta-Name": "obama"})
    for name, (data, reason) in bad.items():
        source = "%s/%s" % (container, name)
        body = _refused(conn, container, name, "crop-" + name, EXTRACT, {"source": source})
        assert source in body and reason in body, body
        assert conn.get_object(container, name)[1] == data  # untouched
        # The storlet still serves the next request.
        conn.put_object(
            container,
            "crop-good.png",
            b"",
            headers={"X-Run-Storlet": EXTRACT, "X-Copy-From": "%s/good.jpeg" % container},
        )
        headers, body = conn.get_object(container, "crop-good.png")
        assert body.startswith(b"\x89PNG") and headers[META + "name"] == "obama"
        conn.delete_object(container, "crop-good.png")


def test_a_photo_without_a_face_is_refused_by_extract(conn, container):
    ok, grey = cv2.imencode(".png", np.full((120, 160), 128, np.uint8))
    conn.put_object(container, "grey.png", grey.tobytes())
    body = _refused(
        conn, container, "grey.png", "crop.png", EXTRACT, {"source": container + "/grey.png"}
    )
    assert container + "/grey.png: no face found" in body


def test_bad_models_and_videos_are_refused_by_name(conn, container, faces):
    model = "/%s/models/faces.npz" % faces["container"]
    photo = _read(os.path.join(data_dir(), "test", "obama_test1.jpeg"))
    conn.put_object(container, "photo.jpeg", photo)
    # Starting as no pickle does (random bytes begin with a pickle's 0x80
    # once in 256 times, and are refused as one).
    conn.put_object(container, "garbage.skops", b"garbage " + os.urandom(2040))
    conn.put_object(container, "model.pkl", pickle.dumps({"estimator": "anything"}))
    conn.put_object(container, "broken.avi", b"RIFF\x00\x10\x00\x00AVI LIST" + os.urandom(4096))
    cases = [
        ("photo.jpeg", "/%s/garbage.skops" % container, "not a zip archive", "garbage.skops"),
        ("photo.jpeg", "/%s/model.pkl" % container, "is a pickle", "model.pkl"),
        ("broken.avi", model, "cannot be decoded as a video", "broken.avi"),
    ]
    for source, model_path, reason, named in cases:
        params = {"source": "%s/%s" % (container, source), "model": model_path.lstrip("/")}
        body = _refused(
            conn, container, source, "out-" + source, RECOGNIZE, params, extra=model_path
        )
        assert reason in body and named in body, body
        # The next request with a good model works.
        headers, body = conn.get_object(
            container,
            "photo.jpeg",
            headers={"X-Run-Storlet": RECOGNIZE, "X-Storlet-Extra-Resources": model},
        )
        assert body == photo and headers[META + "face-name"] == "obama"
    assert conn.get_object(container, "broken.avi")[1][:4] == b"RIFF"


def test_training_scales_past_one_request(cluster, conn, faces):
    """300 crops: more paths than one header holds, several shards, a merge."""
    container, uri = faces["container"], faces["uri"]
    crops = [e["name"] for e in conn.get_container(container, prefix="crops/")[1]]
    copies = ["many/crop-%04d-%s" % (i, crops[i % len(crops)][len("crops/") :]) for i in range(300)]

    def copy(job):
        local = cluster.connection()
        for i in job:
            local.copy_object(container, crops[i % len(crops)], "/%s/%s" % (container, copies[i]))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(copy, [range(k, 300, 4) for k in range(4)]))
    paths = [plan.resource_path(container, name) for name in copies]
    assert len(",".join(paths)) > plan.HEADER_LIMIT

    # A small budget makes the pack requests fill up fast and the shards
    # too many for one fit request, so that they are merged first.
    budget = 1800
    report = pipeline.train(
        conn, uri + "many/", uri + "models/many.npz", budget=budget, keep_shards=True
    )
    shards = conn.get_container(container, prefix=report.shard_prefix.split("/", 3)[3])[1]
    packed = [s for s in shards if re.search(r"/L0-\d+$", s["name"])]
    cheapest = min(
        plan.input_cost(_user_metadata(conn.head_object(container, name))) for name in copies[:96]
    )
    most_per_request = (budget - plan.input_cost({})) // cheapest
    assert report.faces == 300 and report.shards == len(packed) >= -(-300 // most_per_request)
    assert report.merges >= 1 and report.fit_inputs < report.shards
    headers = conn.head_object(container, "models/many.npz")
    assert headers[META + "samples"] == "300" and int(headers[META + "shards"]) == report.fit_inputs

    found = pipeline.recognize(conn, uri + "models/many.npz", uri + "test/")
    assert not found.failed
    right = sum(
        tags["name"] == label_of(source.rsplit("/", 1)[1]) for source, tags in found.results.items()
    )
    assert right == 8


def _user_metadata(headers):
    return {k[len(META) :]: v for k, v in headers.items() if k.startswith(META)}


def test_s3_uris_run_in_place_in_the_cluster(cluster, faces):
    """An s3:// bucket the cluster serves is its container: the work runs
    in place, and no byte of data goes through the client."""
    stores = Stores(environ=cluster.env())
    bucket, uri = faces["container"], "s3://%s/" % faces["container"]
    extracted = pipeline.extract(stores, uri + "test/", uri + "s3-crops/")
    assert extracted.placement == "cluster" and len(extracted.done) == 8, extracted.format()
    assert extracted.client_bytes == 0
    crops = [e["name"] for e in cluster.connection().get_container(bucket, prefix="s3-crops/")[1]]
    assert len(crops) == 8 and all(name.endswith(".png") for name in crops)
    found = pipeline.recognize(stores, uri + "models/faces.npz", uri + "test/")
    # Named as the cluster names them, where they ran.
    assert sorted(found.results) == sorted(
        "swift://%s/test/%s" % (bucket, n) for n, _ in _files("test")
    )
    assert all(t["name"] == label_of(s.rsplit("/", 1)[1]) for s, t in found.results.items())


def test_group_photos_give_a_crop_and_a_name_per_face(conn, faces, container):
    from support import group_photo

    uri = faces["uri"]
    test = os.path.join(data_dir(), "test")
    people = [("merkel_test2.jpeg", "obama_test1.jpeg"), ("trump_test1.jpeg", "bibi_test1.jpeg")]
    for i, names in enumerate(people):
        photo = group_photo(*[cv2.imread(os.path.join(test, n)) for n in names])
        conn.put_object(
            container,
            "groups/g%d.jpg" % i,
            cv2.imencode(".jpg", photo)[1].tobytes(),
            content_type="image/jpeg",
        )
    here = "swift://%s/" % container
    summary = pipeline.extract(conn, here + "groups/", here + "crops/", faces="all")
    assert summary.ok and summary.placement == "cluster", summary.format()
    crops = sorted(e["name"] for e in conn.get_container(container, prefix="crops/")[1])
    assert crops == ["crops/g0-face1.png", "crops/g0.png", "crops/g1-face1.png", "crops/g1.png"]
    headers = conn.head_object(container, "crops/g0-face1.png")
    assert (headers[META + "face-index"], headers[META + "face-count"]) == ("1", "2")
    again = pipeline.extract(conn, here + "groups/", here + "crops/", faces="all")
    assert not again.done and len(again.skipped) == 2

    tags = pipeline.recognize(conn, uri + "models/faces.npz", here + "groups/")
    for i, names in enumerate(people):
        found = tags.results[here + "groups/g%d.jpg" % i]
        assert found["count"] == "2"
        named = sorted(name for name, _, _ in json.loads(found["faces"]))
        assert named == sorted(label_of(n) for n in names), found
