"""A user's own ONNX models over images and tables (the functions the
``apply_model`` storlet runs), their checks, and the hostile models they
refuse; models made here with ``onnx.helper`` and ``skl2onnx``."""

import io
import json

import cv2
import numpy as np
import onnx_models as om
import pytest
from sgd_fakes import FakeInput
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import Ridge

from mlstorlets.client.errors import UsageError
from mlstorlets.client.models import apply_model as apply_remote
from mlstorlets.client.models import export, remote_predict, to_onnx
from mlstorlets.sandbox.errors import ObjectError, ParameterError
from mlstorlets.sandbox.models import graph, layout
from mlstorlets.sandbox.models.tasks import apply_model


def _image(shape=(48, 64), seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((*shape, 3)) * 255).astype(np.uint8)


def _png(image):
    return cv2.imencode(".png", image)[1].tobytes()


def _decode(body):
    return cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)


def _apply(data, onnx_bytes, **params):
    params.setdefault("source", "photos/a.png")
    params.setdefault("model", "models/m.onnx")
    return apply_model([FakeInput(data), FakeInput(onnx_bytes)], params)


def _npy(array):
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


# -- images to images ----------------------------------------------------------


@pytest.mark.parametrize(
    "layout_, pixel_range, white",
    [
        ("NCHW", None, 255.0),
        ("NHWC", None, 255.0),
        ("NCHW", "Normalized_0_1", 1.0),
        ("NHWC", "Normalized_1_1", 0.0),
    ],
)
def test_a_known_image_operator_is_pixel_exact_in_every_layout_and_range(
    layout_, pixel_range, white
):
    image = _image()
    model = om.invert(layout_, pixel_range, white=white)
    metadata, body = _apply(_png(image), model)
    assert np.array_equal(_decode(body), 255 - image)
    assert metadata["Model"] == "models/m.onnx"
    assert metadata["Model-Output"] == "styled"


def test_channel_order_is_the_models_rgb_by_default_and_bgr_when_declared():
    image = _image()
    _, body = _apply(_png(image), om.swap_red_blue())
    assert np.array_equal(_decode(body), image[..., ::-1])


def test_a_gray_model_gets_one_channel_and_gives_gray_back():
    image = _image()
    _, body = _apply(_png(image), om.invert(pixel_format="Gray8"))
    gray = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), cv2.COLOR_RGB2GRAY)
    out = _decode(body)
    assert np.array_equal(out[..., 0], 255 - gray)
    assert np.array_equal(out[..., 0], out[..., 2])


def test_a_fixed_size_model_gets_a_resized_image_and_the_output_is_resized_back():
    image = _image((90, 120))
    _, body = _apply(_png(image), om.invert(size=(32, 32)))
    out = _decode(body)
    assert out.shape == image.shape
    # The negative of a picture blurred by the round trip, not noise.
    small = cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA)
    back = cv2.resize(255 - small, (120, 90), interpolation=cv2.INTER_LINEAR)
    assert np.abs(out.astype(int) - back).max() <= 1


def test_jpeg_stays_jpeg_and_width_scales_a_free_size_model_input():
    image = _image((60, 80))
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    _, body = _apply(jpeg, om.invert(), source="f/000001.jpg", width="40", quality="95")
    assert body.startswith(b"\xff\xd8\xff")
    assert _decode(body).shape == image.shape


def test_a_convolutional_network_runs_at_any_size():
    for shape in ((36, 52), (72, 128)):
        _, body = _apply(_png(_image(shape)), om.convnet())
        assert _decode(body).shape == (*shape, 3)


# -- images to tensors ---------------------------------------------------------


def test_a_classifier_writes_its_scores_as_npy_equal_to_a_local_reference():
    labels = ["cat", "dog", "car"]
    model = om.classifier(labels)
    image = cv2.resize(_image(), (32, 32))
    _, body = _apply(_png(image), model, output="npy")
    scores = np.load(io.BytesIO(body))
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    assert np.allclose(scores[0], om.classifier_reference(model, rgb), atol=1e-5)


def test_tags_name_the_top_labels_in_metadata_and_keep_the_image():
    labels = ["cat", "dog", "car"]
    model = om.classifier(labels, seed=3)
    data = _png(cv2.resize(_image(), (32, 32)))
    metadata, body = _apply(data, model, output="tags", top_k="2")
    assert body == data
    top = json.loads(metadata["Model-Top"])
    assert len(top) == 2 and top[0][0] == metadata["Model-Label"] in labels
    assert top[0][1] >= top[1][1]
    assert float(metadata["Model-Score"]) == pytest.approx(top[0][1], abs=1e-4)


def test_the_top_list_fits_one_swift_metadata_value():
    labels = ["a label of some length number %d" % i for i in range(50)]
    metadata, _ = _apply(_png(_image()), om.classifier(labels, size=None), output="tags")
    assert len(metadata["Model-Top"].encode()) <= 256
    assert len(json.loads(metadata["Model-Top"])) >= 1


def test_an_image_output_is_asked_of_a_model_that_gives_scores():
    with pytest.raises(ParameterError, match="not an image: pass output=npy"):
        _apply(_png(_image()), om.classifier(["a", "b"]))


# -- tables --------------------------------------------------------------------


def test_an_exported_pipeline_predicts_as_it_does_locally():
    pipeline, model, X = om.sklearn_pipeline()
    metadata, body = _apply(_npy(X.astype(np.float64)), model, source="t/x.npy")
    assert np.array_equal(np.load(io.BytesIO(body)), pipeline.predict(X))
    assert metadata["Model-Rows"] == str(len(X))
    _, body = _apply(_npy(X), model, source="t/x.npy", output_name="probabilities")
    assert np.allclose(np.load(io.BytesIO(body)), pipeline.predict_proba(X), atol=1e-5)


def test_csv_rows_in_small_batches_give_the_same_predictions():
    pipeline, model, X = om.sklearn_pipeline()
    text = "\n".join(",".join("%r" % float(v) for v in row) for row in X).encode()
    _, body = _apply(text, model, source="t/x.csv", batch_size="7")
    assert np.array_equal(np.load(io.BytesIO(body)), pipeline.predict(X))


def test_a_table_with_the_wrong_feature_count_is_refused_by_name():
    _, model, X = om.sklearn_pipeline()
    with pytest.raises(ObjectError, match="t/x.npy: .*3 features, models/m.onnx takes 4"):
        _apply(_npy(X[:, :3]), model, source="t/x.npy")


def test_a_regressor_exports_and_predicts():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 3))
    ridge = Ridge().fit(X, X @ [1.0, -2.0, 0.5])
    model = to_onnx(ridge).SerializeToString()
    _, body = _apply(_npy(X), model, source="t/x.npy")
    assert np.allclose(np.load(io.BytesIO(body)).ravel(), ridge.predict(X), atol=1e-4)


def test_images_and_tables_go_to_models_that_take_them():
    _, table_model, X = om.sklearn_pipeline()
    with pytest.raises(ObjectError, match="photos/a.png: an image, but models/m.onnx does not"):
        _apply(_png(_image()), table_model)
    with pytest.raises(ObjectError, match="not a JPEG, PNG or GIF image"):
        _apply(_npy(X), om.invert(), source="t/x.npy")


def test_a_classifier_exported_with_zipmap_is_refused_with_the_way_out():
    import skl2onnx
    from skl2onnx.common.data_types import FloatTensorType

    pipeline, _, X = om.sklearn_pipeline()
    zipmap = skl2onnx.to_onnx(
        pipeline, initial_types=[("X", FloatTensorType([None, 4]))], target_opset=17
    ).SerializeToString()
    with pytest.raises(ObjectError, match="zipmap"):
        _apply(_npy(X), zipmap, source="t/x.npy", output_name="output_probability")


# -- hostile models and bad parameters -------------------------------------------


@pytest.mark.parametrize(
    "make, reason",
    [
        (om.custom_operator, "operator set 'evil.ops': custom operators are not run"),
        (om.external_data, "tensor 'w' keeps its data in an external file"),
        (om.huge_input, "input 'image' declares 30000000000 elements"),
        (om.huge_constant, "value 'big' declares 2500000000 elements"),
        (om.huge_initializer, "tensor 'w' declares 2147483648 elements"),
        (lambda: b"\x08\x07garbage" * 10, "not an ONNX model"),
        (lambda: b"", "empty object"),
    ],
)
def test_a_hostile_model_is_refused_by_name_before_the_runtime_loads_it(make, reason):
    with pytest.raises(ObjectError) as err:
        _apply(_png(_image()), make(), model="models/evil.onnx")
    assert err.value.name == "models/evil.onnx"
    assert reason in err.value.reason


def test_a_model_over_the_size_bound_is_refused(monkeypatch):
    monkeypatch.setattr(graph, "MAX_MODEL_BYTES", 64 * 1024)
    with pytest.raises(ObjectError, match="models/m.onnx: larger than the 65536 bytes"):
        _apply(_png(_image()), om.large_weights(256 * 1024))


def test_an_image_too_large_for_the_model_is_refused(monkeypatch):
    monkeypatch.setattr(layout, "MAX_TENSOR_ELEMENTS", 1000)
    with pytest.raises(ObjectError, match="photos/a.png: an input of 64x48 is too large"):
        _apply(_png(_image()), om.invert())


def test_a_custom_operator_inside_a_subgraph_is_found():
    from onnx import TensorProto, helper

    inner = helper.make_graph(
        [helper.make_node("Steal", ["image"], ["y"], domain="evil.ops")],
        "inner",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    node = helper.make_node("If", ["cond"], ["styled"], then_branch=inner, else_branch=inner)
    graph_ = helper.make_graph(
        [node],
        "g",
        [om.image_input(), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("styled", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph_, opset_imports=om.OPSET)
    with pytest.raises(ObjectError, match="custom operator \\(evil.ops.Steal\\)"):
        graph.check_model(model.SerializeToString(), "m")


@pytest.mark.parametrize(
    "params, parameter",
    [
        ({"output": "pdf"}, "output"),
        ({"threads": "100000"}, "threads"),
        ({"top_k": "0", "output": "tags"}, "top_k"),
        ({"quality": "5"}, "quality"),
    ],
)
def test_a_bad_parameter_is_the_callers_error(params, parameter):
    with pytest.raises(ParameterError) as err:
        _apply(_png(_image()), om.invert(), **params)
    assert err.value.parameter == parameter


def test_without_the_model_as_extra_resource_the_call_is_refused():
    with pytest.raises(ObjectError, match="needs the model as the one extra resource"):
        apply_model([FakeInput(_png(_image()))], {"source": "p/a.png"})


def test_a_model_is_built_once_per_worker_and_content():
    graph.SESSIONS.clear()
    model = om.invert()
    first = graph.session(model, "m")
    assert graph.session(model, "m") is first
    assert graph.session(om.invert(white=1.0), "m") is not first
    assert len(graph.SESSIONS) == 2


# -- the client ------------------------------------------------------------------


class _Opaque(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.n_features_in_ = np.asarray(X).shape[1]
        return self


def test_an_estimator_skl2onnx_cannot_convert_is_a_usage_error():
    with pytest.raises(UsageError, match="cannot export _Opaque to ONNX"):
        to_onnx(_Opaque().fit([[0.0], [1.0]], [0, 1]))


def test_the_client_applies_models_to_files_with_the_same_storlet(tmp_path):
    pipeline, _, X = om.sklearn_pipeline()
    (tmp_path / "tables").mkdir()
    for i in range(3):
        np.save(tmp_path / "tables" / ("part%d.npy" % i), X[i * 100 : (i + 1) * 100])
    model = "file://%s/models/forest.onnx" % tmp_path
    (tmp_path / "models").mkdir()

    def predict():
        return remote_predict(
            pipeline,
            "file://%s/tables/" % tmp_path,
            "file://%s/pred/" % tmp_path,
            model=model,
            method="predict_proba",
            progress=False,
        )

    summary = predict()
    assert summary.ok and len(summary.done) == 3
    for i in range(3):
        got = np.load(tmp_path / "pred" / ("part%d.npy" % i))
        assert np.allclose(got, pipeline.predict_proba(X[i * 100 : (i + 1) * 100]), atol=1e-5)
    # Resumed: the same estimator exports the same bytes.
    again = predict()
    assert not again.done and len(again.skipped) == 3

    (tmp_path / "photos").mkdir()
    image = _image()
    (tmp_path / "photos" / "a.png").write_bytes(_png(image))
    (tmp_path / "models" / "negative.onnx").write_bytes(om.invert())
    summary = apply_remote(
        "file://%s/models/negative.onnx" % tmp_path,
        "file://%s/photos/" % tmp_path,
        "file://%s/styled/" % tmp_path,
        progress=False,
    )
    assert summary.ok
    assert np.array_equal(cv2.imread(str(tmp_path / "styled" / "a.png")), 255 - image)


def test_a_missing_model_is_named_before_any_work(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_bytes(_png(_image()))
    with pytest.raises(ObjectError, match="nothing.onnx"):
        apply_remote(
            "file://%s/nothing.onnx" % tmp_path,
            "file://%s/photos/" % tmp_path,
            "file://%s/out/" % tmp_path,
        )


def test_export_stores_the_model_where_asked(tmp_path):
    ridge = Ridge().fit(np.eye(3), [1.0, 2.0, 3.0])
    export(ridge, "file://%s/m/ridge.onnx" % tmp_path)
    assert (tmp_path / "m" / "ridge.onnx").read_bytes() == to_onnx(ridge).SerializeToString()
