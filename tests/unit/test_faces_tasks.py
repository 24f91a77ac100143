"""The face storlets' computations, with stand-ins for the engine's files."""

import json
import pickle

import cv2
import numpy as np
import pytest
from conftest import face_label
from sgd_fakes import FakeInput, FakeOutput
from support import group_photo

from mlstorlets.sandbox import invocation
from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.faces import shards, tasks
from mlstorlets.sandbox.faces.crops import encode_crop, read_embedding
from mlstorlets.sandbox.faces.model import dump_model, load_model, pack_shard, recognize


class Logger:
    def info(self, msg):
        pass


def _model_bytes(model):
    return dump_model(model)


def test_extract_outputs_an_aligned_png_crop_with_its_embedding(faces_data, faces_model):
    path = faces_data / "train" / "obama14.jpeg"
    meta, body = tasks.extract(
        [FakeInput(path.read_bytes(), {"Name": "obama"})],
        {"source": "photos/obama14.jpeg", "size": "96"},
    )
    crop = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)
    assert crop.shape == (96, 96, 3)
    assert meta["Name"] == "obama" and meta["Source"] == "photos/obama14.jpeg"
    assert meta["Face-Detector"] == "hog"
    x, y, w, h = map(int, meta["Face-Box"].split(","))
    assert w > 20 and h > 20
    # The embedding travels in the crop, not in the metadata.
    assert all(len(v) < 64 for v in meta.values())
    assert recognize(faces_model, read_embedding(body, "c"))[0] == "obama"


def test_extract_reads_the_label_under_any_case(faces_data):
    data = (faces_data / "train" / "bibi1.jpeg").read_bytes()
    meta, _ = tasks.extract([FakeInput(data, {"Person": "bibi"})], {"label_key": "person"})
    assert meta["person"] == "bibi" and "Source" not in meta


@pytest.mark.parametrize(
    "params, match",
    [({"size": "x"}, "size"), ({"size": "4"}, "size"), ({"margin": "nan"}, "margin")],
)
def test_extract_refuses_bad_parameters(faces_data, params, match):
    data = (faces_data / "train" / "bibi1.jpeg").read_bytes()
    with pytest.raises(ObjectError, match=match):
        tasks.extract([FakeInput(data)], dict(params, source="c/o"))


def test_a_refusal_goes_out_as_metadata_without_body():
    out = FakeOutput()
    invocation.run(Logger(), [FakeInput(b"")], [out], {"source": "c/empty.jpg"}, tasks.extract)
    # The reason, and the input it is about in a key of its own.
    assert out.metadata == {
        invocation.ERROR_KEY: "empty object, expected an image",
        invocation.ERROR_OBJECT_KEY: "c/empty.jpg",
    }
    assert out.body == b""


def test_sniff():
    assert tasks.sniff(b"\xff\xd8\xff\xe0") == "image"
    assert tasks.sniff(b"RIFF\0\0\0\0AVI LIST") == "video"
    assert tasks.sniff(b"\0\0\0\x18ftypmp42") == "video"
    # Playlists would make FFmpeg read other files: never a video.
    assert tasks.sniff(b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd") is None
    assert tasks.sniff(b"ffconcat version 1.0") is None


def test_recognize_tags_a_photo_and_keeps_its_bytes_and_metadata(faces_model, faces_data):
    data = (faces_data / "test" / "merkel_test1.jpeg").read_bytes()
    photo = FakeInput(data, {"Album": "2015", "Face-Box": "1,2,3,4", "Face-Confidence": "0.9"})
    meta, body = tasks.recognize(
        [photo, FakeInput(_model_bytes(faces_model))],
        {"source": "c/merkel.jpg", "model": "m/model"},
    )
    assert body == data
    assert meta["Album"] == "2015" and meta["Face-Name"] == "merkel"
    assert 0.5 <= float(meta["Face-Confidence"]) <= 1 and meta["Face-Box"] != "1,2,3,4"
    assert meta["Face-Model"] == "m/model"


def test_recognize_a_photo_without_a_face(faces_model):
    _, png = cv2.imencode(".png", np.full((120, 160), 128, np.uint8))
    photo = FakeInput(png.tobytes(), {"Face-Box": "1,2,3,4", "Face-Confidence": "0.9"})
    meta, _ = tasks.recognize(
        [photo, FakeInput(_model_bytes(faces_model))], {"source": "c/grey.png"}
    )
    # The stale tags of an earlier recognition are blanked (the engine
    # would keep them on the output otherwise).
    assert meta == {
        "Face-Name": "none",
        "Face-Count": "0",
        "Face-Box": "",
        "Face-Confidence": "",
    }


def test_recognize_names_every_face_of_a_group_photo(faces_model, faces_data):
    photos = [
        cv2.imread(str(faces_data / "test" / name))
        for name in ("merkel_test2.jpeg", "obama_test1.jpeg")
    ]
    data = cv2.imencode(".jpg", group_photo(*photos))[1].tobytes()
    meta, _ = tasks.recognize(
        [FakeInput(data), FakeInput(_model_bytes(faces_model))], {"source": "c/group.jpg"}
    )
    faces = json.loads(meta["Face-Faces"])
    assert meta["Face-Count"] == "2" and len(faces) == 2
    assert sorted(name for name, _, _ in faces) == ["merkel", "obama"]
    # Left to right by box, each where its photo was put.
    by_x = sorted(faces, key=lambda f: int(f[2].split(",")[0]))
    assert [name for name, _, _ in by_x] == ["merkel", "obama"]
    # The most confident face also names the photo, as before.
    assert (meta["Face-Name"], float(meta["Face-Confidence"])) == (faces[0][0], faces[0][1])
    assert faces[0][1] >= faces[1][1]


def test_faces_smaller_than_min_face_are_not_named(faces_model, faces_data):
    photo = cv2.imread(str(faces_data / "test" / "merkel_test1.jpeg"))
    data = cv2.imencode(".jpg", photo)[1].tobytes()
    meta, _ = tasks.recognize(
        [FakeInput(data), FakeInput(_model_bytes(faces_model))],
        {"source": "c/m.jpg", "min_face": "4000"},
    )
    assert meta["Face-Name"] == "none" and meta["Face-Count"] == "0"


def test_the_faces_list_fits_a_metadata_value():
    from mlstorlets.sandbox.faces.people import Named, faces_json

    named = [
        Named("someone with a long name %d" % i, 0.9, (1000, 2000, 300, 300)) for i in range(20)
    ]
    text = faces_json(named, 256)
    assert len(text.encode()) <= 256 and 1 <= len(json.loads(text)) < 20


def test_extract_every_face_makes_a_tar_of_crops_the_largest_last(faces_data):
    import io
    import tarfile

    from mlstorlets.sandbox import protocol

    big = cv2.imread(str(faces_data / "test" / "obama_test1.jpeg"))
    small = cv2.imread(str(faces_data / "test" / "merkel_test2.jpeg"))
    small = cv2.resize(small, None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA)
    data = cv2.imencode(".jpg", group_photo(small, big))[1].tobytes()
    meta, body = tasks.extract(
        [FakeInput(data, {"Name": "obama"})],
        {"source": "c/photos/g.jpg", "faces": "all", "source_etag": "abc"},
    )
    assert meta == {"Faces": "2"}
    members = list(tarfile.open(fileobj=io.BytesIO(body)))
    assert [m.name for m in members] == ["g-face1.png", "g.png"]
    key = protocol.PAX_META
    largest, other = members[1].pax_headers, members[0].pax_headers
    assert largest[key + "Face-Index"] == "0" and other[key + "Face-Index"] == "1"
    assert largest[key + "Face-Count"] == other[key + "Face-Count"] == "2"
    # The label names the photo's subject: its largest face only.
    assert largest[key + "Name"] == "obama" and key + "Name" not in other
    assert largest[key + "Source-Etag"] == "abc" and largest[key + "Source"] == "c/photos/g.jpg"
    x_big = int(largest[key + "Face-Box"].split(",")[0])
    assert x_big > small.shape[1]
    tar = tarfile.open(fileobj=io.BytesIO(body))
    assert read_embedding(tar.extractfile("g.png").read(), "g.png").shape == (128,)


@pytest.mark.parametrize(
    "params, parameter",
    [({"faces": "some"}, "faces"), ({"faces": "all", "stem": "../x"}, "stem")],
)
def test_extract_refuses_a_bad_faces_or_stem(faces_data, params, parameter):
    data = (faces_data / "test" / "obama_test1.jpeg").read_bytes()
    with pytest.raises(ObjectError) as err:
        tasks.extract([FakeInput(data)], dict(params, source="c/o.jpg"))
    assert err.value.parameter == parameter


def test_recognize_threshold_makes_unknown(faces_model, faces_data):
    data = (faces_data / "test" / "obama_test2.jpeg").read_bytes()
    meta, _ = tasks.recognize(
        [FakeInput(data), FakeInput(_model_bytes(faces_model))], {"threshold": "0.05"}
    )
    assert meta["Face-Name"] == "unknown" and float(meta["Face-Confidence"]) < 0.5


@pytest.mark.parametrize(
    "model, match",
    [
        (b"not a model at all", "not a zip archive"),
        (pickle.dumps({"estimator": 1}), "is a pickle"),
        (b"", "empty object"),
    ],
)
def test_recognize_refuses_a_bad_model_by_its_name(faces_data, model, match):
    data = (faces_data / "test" / "obama_test1.jpeg").read_bytes()
    with pytest.raises(ObjectError, match=match) as err:
        tasks.recognize(
            [FakeInput(data), FakeInput(model)], {"source": "c/p.jpg", "model": "m/bad"}
        )
    assert err.value.name == "m/bad"


def test_recognize_needs_exactly_the_model_as_extra_input(faces_data):
    with pytest.raises(ObjectError, match="extra resource"):
        tasks.recognize([FakeInput(b"x")], {"source": "c/p.jpg"})


def test_recognize_refuses_a_video_that_is_no_video(faces_model):
    model = FakeInput(_model_bytes(faces_model))
    with pytest.raises(ObjectError, match="known container"):
        tasks.recognize(
            [FakeInput(b"#EXTM3U\nfile:///etc/hostname\n"), model],
            {"source": "c/v.m3u8", "kind": "video"},
        )
    garbage = b"RIFF\x10\0\0\0AVI LIST" + bytes(range(256)) * 40
    with pytest.raises(ObjectError, match="cannot be decoded as a video") as err:
        tasks.recognize(
            [FakeInput(garbage), FakeInput(_model_bytes(faces_model))], {"source": "c/v.avi"}
        )
    assert err.value.name == "c/v.avi"


def test_recognize_annotates_a_video(faces_model, faces_data):
    data = (faces_data / "video" / "obama_mov.avi").read_bytes()
    meta, body = tasks.recognize(
        [FakeInput(data, {"Event": "speech"}), FakeInput(_model_bytes(faces_model))],
        {"source": "c/obama_mov.avi", "max_frames": "20"},
    )
    frames = json.loads(meta["Face-Frames"])
    assert sum(frames.values()) == 20 and meta["Face-Truncated"] == "20"
    assert meta["Face-Name"] == "obama" and meta["Event"] == "speech"
    assert bytes(body[:4]) == b"RIFF" and bytes(body[8:12]) == b"AVI "
    assert "Face-Damaged" not in meta


def test_recognize_tags_only_builds_no_video(faces_model, faces_data, monkeypatch):
    data = (faces_data / "video" / "obama_mov.avi").read_bytes()
    opened = []
    real = cv2.VideoWriter
    monkeypatch.setattr(cv2, "VideoWriter", lambda *a: opened.append(a) or real(*a))
    meta, body = tasks.recognize(
        [FakeInput(data), FakeInput(_model_bytes(faces_model))],
        {"source": "c/obama_mov.avi", "max_frames": "10", "output": "tags"},
    )
    assert body == b"" and opened == []
    assert meta["Face-Name"] == "obama" and sum(json.loads(meta["Face-Frames"]).values()) == 10


def test_a_truncated_video_says_so(faces_model, faces_data):
    data = (faces_data / "video" / "obama_mov.avi").read_bytes()[:100_000]
    meta, _ = tasks.recognize(
        [FakeInput(data), FakeInput(_model_bytes(faces_model))],
        {"source": "c/cut.avi", "output": "tags"},
    )
    frames = json.loads(meta["Face-Frames"])
    assert meta["Face-Damaged"] == "truncated or damaged: %d of 122 frames decoded" % sum(
        frames.values()
    )


def test_frames_json_fits_a_metadata_value():
    frames = {"person-%03d" % i: 1000 - i for i in range(100)}
    frames["none"] = 1
    text = tasks._frames_json(frames)
    kept = json.loads(text)
    assert len(text) <= 256 and "none" in kept and "person-000" in kept and "person-099" not in kept


# -- training steps ----------------------------------------------------------
def _crops(faces_data, pattern="*.jpeg"):
    crops = []
    for path in sorted((faces_data / "train").glob(pattern)):
        _, body = tasks.extract([FakeInput(path.read_bytes())], {"size": "64"})
        crops.append(("crops/" + path.stem + ".png", body, face_label(path)))
    return crops


def _job(names):
    return FakeInput(shards.job_body(names))


def test_pack_merge_fit_make_a_model_that_recognizes(faces_data, faces_model):
    crops = _crops(faces_data)
    rng = np.random.default_rng(0)
    crops = [crops[i] for i in rng.permutation(len(crops))]
    packed = []
    for start in range(0, len(crops), 16):
        group = crops[start : start + 16]
        meta, body = shards.run(
            [_job([n for n, _, _ in group])]
            + [FakeInput(png, {"Name": label}) for _, png, label in group],
            {"step": "pack", "source": "c/job"},
        )
        assert meta == {"Shard-Rows": str(len(group))}
        packed.append(body)
    meta, merged = shards.run(
        [_job(["s0", "s1", "s2"])] + [FakeInput(b) for b in packed[:3]],
        {"step": "merge", "source": "c/job"},
    )
    assert meta["Shard-Rows"] == str(48)
    inputs = [merged] + packed[3:]
    meta, body = shards.run(
        [_job(["s%d" % i for i in range(len(inputs))])] + [FakeInput(b) for b in inputs],
        {"step": "fit", "source": "c/job"},
    )
    assert meta["samples"] == str(len(crops)) and meta["shards"] == str(len(inputs))
    assert json.loads(meta["classes"]) == ["bibi", "merkel", "obama", "trump"]
    model = load_model(body, "model")
    # The same faces as the in-memory model, in another order: the same
    # open-set threshold.
    assert model.threshold == pytest.approx(faces_model.threshold, abs=1e-6)
    for path in sorted((faces_data / "test").glob("*.jpeg")):
        _, _, embedding = tasks.photo_face(path.read_bytes(), path.name)
        assert recognize(model, embedding)[0] == face_label(path), path.name


def test_pack_names_the_crop_at_fault(faces_data):
    ((name, png, label),) = _crops(faces_data, "obama1.jpeg")
    _, plain = cv2.imencode(".png", np.zeros((32, 32), np.uint8))
    cases = [
        ({}, png, "no label"),
        ({"Name": "obama"}, b"not a png", "not a PNG face crop"),
        ({"Name": "obama"}, plain.tobytes(), "a PNG without a face embedding"),
    ]
    for metadata, data, match in cases:
        with pytest.raises(ObjectError, match=match) as err:
            shards.run(
                [
                    _job(["c/good", "c/bad"]),
                    FakeInput(png, {"Name": label}),
                    FakeInput(data, metadata),
                ],
                {"step": "pack", "source": "c/job"},
            )
        assert err.value.name == "c/bad"


def test_fit_names_the_shard_at_fault():
    good = pack_shard(np.ones((2, 128), np.float32), ["a", "b"])
    with pytest.raises(ObjectError, match="not a training shard") as err:
        shards.run(
            [_job(["c/s0", "c/s1"]), FakeInput(good), FakeInput(pickle.dumps([1]))],
            {"step": "fit", "source": "c/job"},
        )
    assert err.value.name == "c/s1"
    with pytest.raises(ObjectError, match="at least two people, found only 'a'") as err:
        shards.run(
            [_job(["c/s0"]), FakeInput(pack_shard(np.ones((1, 128), np.float32), ["a"]))],
            {"step": "fit", "source": "c/job"},
        )
    assert err.value.name == "c/job"


def test_a_crop_carries_what_a_person_sees():
    chip = np.zeros((150, 150, 3), np.uint8)
    chip[..., 0] = 255  # red
    png = encode_crop(chip, np.zeros(128))
    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert tuple(decoded[0, 0]) == (0, 0, 255)  # OpenCV's BGR: still red


@pytest.mark.parametrize(
    "job, params, match",
    [
        (b"{}", {"step": "pack"}, "not a training job"),
        (shards.job_body(["a", "b"]), {"step": "pack"}, "names 2 inputs but the request reads 1"),
        (shards.job_body(["a"]), {"step": "dance"}, "parameter step"),
    ],
)
def test_a_bad_job_is_refused_by_its_name(job, params, match):
    with pytest.raises(ObjectError, match=match) as err:
        shards.run([FakeInput(job), FakeInput(b"x")], dict(params, source="c/job"))
    assert err.value.name == "c/job"
