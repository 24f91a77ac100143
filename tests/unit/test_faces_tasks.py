"""The face storlets' computations, with stand-ins for the engine's files."""

import json
import pickle

import cv2
import numpy as np
import pytest
from conftest import face_label
from sgd_fakes import FakeInput, FakeOutput

from mlstorlets.sandbox import faces, invocation
from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.faces import shards, tasks


class Logger:
    def info(self, msg):
        pass


def _model_bytes(model):
    return faces.dump_model(model, model.spec, model.classes, model.n_samples)


def test_extract_outputs_a_png_crop_with_label_source_and_box(faces_data):
    path = faces_data / "train" / "obama14.jpeg"
    meta, body = tasks.extract(
        [FakeInput(path.read_bytes(), {"Name": "obama"})],
        {"source": "photos/obama14.jpeg", "size": "48"},
    )
    crop = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)
    assert crop.shape == (48, 48)
    assert meta["Name"] == "obama" and meta["Source"] == "photos/obama14.jpeg"
    x, y, w, h = map(int, meta["Face-Box"].split(","))
    assert w > 20 and h > 20


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
    assert out.metadata == {invocation.ERROR_KEY: "c/empty.jpg: empty object, expected an image"}
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
    assert meta == {"Face-Name": "none", "Face-Box": "", "Face-Confidence": ""}


def test_recognize_threshold_makes_unknown(faces_model, faces_data):
    data = (faces_data / "test" / "obama_test1.jpeg").read_bytes()
    meta, _ = tasks.recognize(
        [FakeInput(data), FakeInput(_model_bytes(faces_model))], {"threshold": "1"}
    )
    assert meta["Face-Name"] == "unknown"


@pytest.mark.parametrize(
    "model, match",
    [
        (b"not a model at all", "not a skops model file"),
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
        crop, _ = faces.extract_face(path.read_bytes(), path.name)
        crops.append(("crops/" + path.name, faces.encode_png(crop), face_label(path)))
    return crops


def _job(names):
    return FakeInput(shards.job_body(names))


def test_pack_merge_fit_make_a_model_that_recognizes(faces_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
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
        assert meta == {"Shard-Rows": str(2 * len(group))}
        packed.append(body)
    meta, merged = shards.run(
        [_job(["s0", "s1", "s2"])] + [FakeInput(b) for b in packed[:3]],
        {"step": "merge", "source": "c/job"},
    )
    assert meta["Shard-Rows"] == str(2 * 48)
    inputs = [merged] + packed[3:]
    meta, body = shards.run(
        [_job(["s%d" % i for i in range(len(inputs))])] + [FakeInput(b) for b in inputs],
        {"step": "fit", "source": "c/job", "epochs": "20"},
    )
    assert meta["samples"] == str(2 * len(crops)) and meta["shards"] == str(len(inputs))
    assert json.loads(meta["classes"]) == ["bibi", "merkel", "obama", "trump"]
    model = faces.load_model(body, "model")
    right = sum(
        faces.recognize_image(model, p.read_bytes(), p.name)["name"] == face_label(p)
        for p in sorted((faces_data / "test").glob("*.jpeg"))
    )
    assert right >= 7
    # The spilled shards are gone.
    assert list(tmp_path.iterdir()) == []


def test_pack_names_the_crop_at_fault(faces_data):
    ((name, png, label),) = _crops(faces_data, "obama1.jpeg")
    cases = [
        ({}, png, "no label"),
        ({"Name": "obama"}, b"not a png", "not a readable image"),
        (
            {"Name": "obama"},
            faces.encode_png(np.zeros((32, 32), np.uint8)),
            "not a 64x64 face crop",
        ),
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
    good = faces.pack_shard(
        np.ones((2, faces.feature_length(faces.default_spec())), np.float32), ["a", "b"]
    )
    with pytest.raises(ObjectError, match="not a training shard") as err:
        shards.run(
            [_job(["c/s0", "c/s1"]), FakeInput(good), FakeInput(pickle.dumps([1]))],
            {"step": "fit", "source": "c/job"},
        )
    assert err.value.name == "c/s1"
    with pytest.raises(ObjectError, match="at least two people"):
        shards.run(
            [_job(["c/s0"]), FakeInput(faces.pack_shard(np.ones((1, 1764), np.float32), ["a"]))],
            {"step": "fit", "source": "c/job"},
        )


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
