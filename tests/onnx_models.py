"""Small ONNX models built by the tests themselves, never downloaded:
image operators with a known result, a classifier with labels, a
convolutional image-to-image network, and hostile models."""

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def _model(nodes, inputs, outputs, initializers=(), properties=None, opset=OPSET):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=opset)
    model.ir_version = 8
    for key, value in (properties or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def serialize(model):
    return model.SerializeToString()


def image_input(layout="NCHW", size=None, channels=3, name="image"):
    h, w = size or ("h", "w")
    shape = [1, channels, h, w] if layout == "NCHW" else [1, h, w, channels]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def invert(layout="NCHW", pixel_range=None, pixel_format=None, size=None, white=255.0):
    """``white - x``: the negative of the image in the model's range."""
    properties = {}
    if pixel_range:
        properties["Image.NominalPixelRange"] = pixel_range
    if pixel_format:
        properties["Image.BitmapPixelFormat"] = pixel_format
    channels = 1 if pixel_format == "Gray8" else 3
    return serialize(
        _model(
            [helper.make_node("Sub", ["white", "image"], ["styled"])],
            [image_input(layout, size, channels)],
            [helper.make_tensor_value_info("styled", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(np.array(white, np.float32), "white")],
            properties,
        )
    )


def swap_red_blue():
    """A 1x1 convolution that swaps the first and last channels."""
    weight = np.zeros((3, 3, 1, 1), np.float32)
    weight[0, 2] = weight[1, 1] = weight[2, 0] = 1
    return serialize(
        _model(
            [helper.make_node("Conv", ["image", "w"], ["styled"])],
            [image_input()],
            [helper.make_tensor_value_info("styled", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(weight, "w")],
        )
    )


def convnet(width=16, depth=3, seed=0):
    """A small fully convolutional image-to-image network (3x3 convolutions
    and ReLUs, any size in and out): the shape of a style network's
    cost, not its look."""
    rng = np.random.default_rng(seed)
    nodes, inits, previous, channels = [], [], "image", 3
    for i in range(depth):
        out = 3 if i == depth - 1 else width
        w = rng.normal(0, 0.1, (out, channels, 3, 3)).astype(np.float32)
        b = np.full(out, 40.0 if i == depth - 1 else 0.0, np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        name = "styled" if i == depth - 1 else f"h{i}"
        nodes.append(helper.make_node("Conv", [previous, f"w{i}", f"b{i}"], [name], pads=[1] * 4))
        if i != depth - 1:
            nodes.append(helper.make_node("Relu", [name], [name + "r"]))
            name += "r"
        previous, channels = name, out
    return serialize(
        _model(
            nodes,
            [image_input()],
            [helper.make_tensor_value_info("styled", TensorProto.FLOAT, None)],
            inits,
        )
    )


def classifier(labels, seed=0, size=(32, 32)):
    """Mean colour through a linear layer and a softmax: scores per label."""
    weight = np.random.default_rng(seed).normal(0, 0.05, (3, len(labels))).astype(np.float32)
    return serialize(
        _model(
            [
                helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
                helper.make_node("Flatten", ["pooled"], ["flat"]),
                helper.make_node("MatMul", ["flat", "w"], ["logits"]),
                helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
            ],
            [image_input(size=size)],
            [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, len(labels)])],
            [numpy_helper.from_array(weight, "w")],
            {"mlstorlets.labels": json.dumps(labels)},
        )
    )


def classifier_reference(model_bytes, rgb):
    """What :func:`classifier` computes, in numpy, for an RGB image (already
    at the model's size)."""
    model = onnx.load_model_from_string(model_bytes)
    weight = numpy_helper.to_array(model.graph.initializer[0])
    logits = rgb.astype(np.float32).mean(axis=(0, 1)) @ weight
    e = np.exp(logits - logits.max())
    return e / e.sum()


# -- hostile models -----------------------------------------------------------


def _added(tensor):
    """The image plus ``tensor``: a model around one stored tensor."""
    return serialize(
        _model(
            [helper.make_node("Add", ["image", tensor.name], ["styled"])],
            [image_input()],
            [helper.make_tensor_value_info("styled", TensorProto.FLOAT, None)],
            [tensor],
        )
    )


def custom_operator():
    """A node of a domain only a custom-operator library would implement."""
    return serialize(
        _model(
            [helper.make_node("Steal", ["image"], ["styled"], domain="evil.ops")],
            [image_input()],
            [helper.make_tensor_value_info("styled", TensorProto.FLOAT, None)],
            opset=OPSET + [helper.make_opsetid("evil.ops", 1)],
        )
    )


def external_data(location="../../../etc/passwd"):
    """Weights read from a file beside the model: any file the runtime
    could open."""
    tensor = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return _added(tensor)


def huge_input():
    """An input declared far larger than any image."""
    return invert(size=(100_000, 100_000))


def huge_constant():
    """A tensor of 2.5e9 elements made at run time from a constant shape."""
    shape = numpy_helper.from_array(np.array([50_000, 50_000], np.int64), "shape")
    return serialize(
        _model(
            [
                helper.make_node("ConstantOfShape", ["shape"], ["big"]),
                helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
                helper.make_node("Add", ["image", "total"], ["styled"]),
            ],
            [image_input()],
            [helper.make_tensor_value_info("styled", TensorProto.FLOAT, None)],
            [shape],
        )
    )


def huge_initializer():
    """An initializer declaring 2^31 elements (its data left out)."""
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2**16, 2**15])
    return _added(tensor)


def large_weights(n_bytes):
    """An ``Add`` of a constant image-sized tensor: about ``n_bytes`` of
    genuine weights."""
    side = max(1, int((n_bytes / 12) ** 0.5))
    weight = np.ones((1, 3, side, side), np.float32)
    return serialize(
        _model(
            [helper.make_node("Add", ["image", "w"], ["styled"])],
            [image_input(size=(side, side))],
            [helper.make_tensor_value_info("styled", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(weight, "w")],
        )
    )


def sklearn_pipeline(seed=0):
    """A scaled random forest on four features, fitted, and its ONNX export
    (as :func:`mlstorlets.client.models.export` makes it), with data."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from mlstorlets.client.models import to_onnx

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(np.int64)
    pipeline = make_pipeline(
        StandardScaler(), RandomForestClassifier(n_estimators=10, random_state=seed)
    ).fit(X, y)
    return pipeline, serialize(to_onnx(pipeline, X)), X
