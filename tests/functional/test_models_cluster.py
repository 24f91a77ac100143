"""Users' own ONNX models applied in the real cluster: images to images,
images to scores, tables to predictions, the rotoscope with a model in
place of a filter, and hostile models refused with nothing written."""

import io
import json
import os
import tempfile

import cv2
import numpy as np
import onnx_models as om
import pytest
from support import data_dir

from mlstorlets.client.cli import main
from mlstorlets.client.models import apply_model, export, remote_predict
from mlstorlets.client.rotoscope import rotoscope

META = "x-object-meta-"


def _image(shape=(48, 64), seed=0):
    return (np.random.default_rng(seed).random((*shape, 3)) * 255).astype(np.uint8)


def _png(image):
    return cv2.imencode(".png", image)[1].tobytes()


def _apply(conn, container, model, dest, **kwargs):
    """``models/<model>`` over ``photos/`` into ``<dest>/``, in the cluster."""
    return apply_model(
        "swift://%s/models/%s" % (container, model),
        "swift://%s/photos/" % container,
        "swift://%s/%s/" % (container, dest),
        connection=conn,
        progress=False,
        **kwargs,
    )


def _names(conn, container, prefix):
    return sorted(e["name"] for e in conn.get_container(container, prefix=prefix)[1])


def test_an_image_model_runs_next_to_the_photos(conn, container):
    images = [_image(seed=i) for i in range(3)]
    for i, image in enumerate(images):
        conn.put_object(container, "photos/%d.png" % i, _png(image), content_type="image/png")
    conn.put_object(container, "models/negative.onnx", om.invert())
    summary = _apply(conn, container, "negative.onnx", "styled")
    assert summary.ok and len(summary.done) == 3, summary.format()
    assert summary.placement == "cluster"
    for i, image in enumerate(images):
        headers, body = conn.get_object(container, "styled/%d.png" % i)
        out = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert np.array_equal(out, 255 - image)
        assert headers[META + "model"] == "%s/models/negative.onnx" % container
        assert headers["content-type"] == "image/png"


def test_a_classifier_tags_photos_in_their_metadata(conn, container):
    labels = ["red", "green", "blue"]
    # Weights that score the mean of each channel: a red photo is "red".
    conn.put_object(container, "models/colour.onnx", om.classifier(labels, seed=0))
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 2] = 255
    conn.put_object(container, "photos/red.png", _png(red), content_type="image/png")
    summary = _apply(conn, container, "colour.onnx", "tagged", output="tags", params={"top_k": 3})
    assert summary.ok, summary.format()
    headers, body = conn.get_object(container, "tagged/red.png")
    assert body == _png(red)
    expected = om.classifier_reference(om.classifier(labels, seed=0), red[..., ::-1])
    assert headers[META + "model-label"] == labels[int(np.argmax(expected))]
    top = json.loads(headers[META + "model-top"])
    assert [name for name, _ in top] == [labels[i] for i in np.argsort(-expected)]


def test_any_exported_pipeline_predicts_next_to_the_tables(conn, container):
    pipeline, _, X = om.sklearn_pipeline()
    for i in range(3):
        buf = io.BytesIO()
        np.save(buf, X[i * 100 : (i + 1) * 100])
        conn.put_object(container, "tables/part%d.npy" % i, buf.getvalue())
    summary = remote_predict(
        pipeline,
        "swift://%s/tables/" % container,
        "swift://%s/pred/" % container,
        model="swift://%s/models/forest.onnx" % container,
        connection=conn,
        progress=False,
    )
    assert summary.ok and summary.placement == "cluster", summary.format()
    for i in range(3):
        _, body = conn.get_object(container, "pred/part%d.npy" % i)
        got = np.load(io.BytesIO(body), allow_pickle=False)
        assert np.array_equal(got, pipeline.predict(X[i * 100 : (i + 1) * 100]))


@pytest.mark.parametrize(
    "make, reason",
    [
        (om.custom_operator, "custom operators are not run"),
        (om.external_data, "keeps its data in an external file"),
        (om.huge_constant, "declares 2500000000 elements"),
    ],
)
def test_a_hostile_model_is_refused_by_name_and_nothing_is_written(conn, container, make, reason):
    photo = _png(_image())
    conn.put_object(container, "photos/a.png", photo, content_type="image/png")
    conn.put_object(container, "models/evil.onnx", make())
    summary = _apply(conn, container, "evil.onnx", "out")
    assert not summary.ok
    ((uri, error),) = summary.failed
    assert "models/evil.onnx" in error and reason in error, error
    assert _names(conn, container, "out/") == []
    assert conn.get_object(container, "photos/a.png")[1] == photo
    # The sandbox keeps serving: a good model runs right after.
    conn.put_object(container, "models/good.onnx", om.invert())
    again = _apply(conn, container, "good.onnx", "out")
    assert again.ok, again.format()


def test_export_then_cli_run_over_a_prefix(conn, container, cluster, monkeypatch, capsys):
    from sklearn.linear_model import Ridge

    for key, value in cluster.env().items():
        monkeypatch.setenv(key, value)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    ridge = Ridge().fit(X, X @ [1.0, 2.0, 3.0])
    export(ridge, "swift://%s/models/ridge.onnx" % container, connection=conn)
    text = "\n".join(",".join(str(v) for v in row) for row in X)
    conn.put_object(container, "rows/a.csv", text.encode())
    code = main(
        [
            "run",
            "apply_model.py",
            "swift://%s/rows/" % container,
            "swift://%s/pred/" % container,
            "--extra-resource",
            "/%s/models/ridge.onnx" % container,
            "-p",
            "model=%s/models/ridge.onnx" % container,
            "--json",
        ]
    )
    assert code == 0, capsys.readouterr()
    _, body = conn.get_object(container, "pred/a.csv")
    assert np.allclose(np.load(io.BytesIO(body)).ravel(), ridge.predict(X), atol=1e-4)


@pytest.mark.parametrize("temporal", [0.0, 0.6])
def test_rotoscope_with_a_model_in_place_of_a_filter(conn, container, temporal):
    root = os.path.join(data_dir(), "video")
    with open(os.path.join(root, sorted(os.listdir(root))[0]), "rb") as f:
        conn.put_object(container, "in/clip.avi", f.read(), content_type="video/x-msvideo")
    conn.put_object(container, "models/negative.onnx", om.invert())
    summary = rotoscope(
        conn,
        "swift://%s/in/clip.avi" % container,
        "swift://%s/out/" % container,
        model="swift://%s/models/negative.onnx" % container,
        temporal=temporal,
        every=10,
        width=160,
        progress=False,
    )
    assert summary.ok, summary.format()
    assert summary.client_bytes == 0
    work = _names(conn, container, "out/clip-negative.work/")
    frames = [n for n in work if "/frames-" in n]
    styled = [n for n in work if "/negative-" in n]
    assert len(frames) == summary.frames > 0
    _, body = conn.get_object(container, "out/clip-negative.avi")
    with tempfile.NamedTemporaryFile(suffix=".avi") as f:
        f.write(body)
        f.flush()
        capture = cv2.VideoCapture(f.name)
        video = [capture.read()[1] for _ in range(len(frames))]
    # Each video frame is its frame's negative (within JPEG's error, and
    # the blend along the motion with temporal).
    for frame, out in zip(frames[:3], video[:3]):
        a = cv2.imdecode(np.frombuffer(conn.get_object(container, frame)[1], np.uint8), 1)
        assert np.abs((255 - a.astype(int)) - out).mean() < 8
    if temporal:
        assert not styled  # filtered in segments: no frame objects
    else:
        assert len(styled) == len(frames)
