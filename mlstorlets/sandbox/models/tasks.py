"""What the ``apply_model`` storlet computes: a user's ONNX model over one
object.

Inputs, in the engine's order: ``in_files[0]`` is the object the request
names, ``in_files[1]`` the model (``X-Storlet-Extra-Resources``), as for
``recognize_face``.  What the object is decides the path:

* an image (JPEG, PNG, GIF) into a model taking one image
  (:mod:`~mlstorlets.sandbox.models.layout`): ``output=image`` writes the
  model's output image, resized back to the input's size, in the input's
  format (JPEG stays JPEG at ``quality``; anything else becomes PNG);
  ``output=npy`` the output tensor as ``.npy``; ``output=tags`` the input
  unchanged with the ``top_k`` highest scores in its metadata
  (``Model-Label``, ``Model-Score``, ``Model-Top``: a JSON list of
  ``[label, score]`` pairs within Swift's 256-byte value), labels from the
  model's ``mlstorlets.labels``, else the scores' indices.  ``output=auto``
  (default) is ``image`` for an image, ``npy`` for a table: what the
  output is named after never depends on the model.
* a table (``.npy``, ``.npz``, delimited text, read as the estimator
  storlet reads them, with ``label_column=none`` by default) into a model
  taking one 2-D tensor of features, such as a scikit-learn pipeline
  exported with ``skl2onnx``: the chosen output over every row, as
  ``.npy``.

``output_name`` picks the model's output (default its first: the label of
an exported classifier; ``probabilities`` for its scores).  ``width``
scales an image to that width first when the model takes any size.
``threads`` sets the runtime's threads (default 1: the agent runs a
worker per core).  Every refusal is an :class:`ObjectError` naming the
object or the model: the storlet answers 422 and nothing is written.
"""

import io
import json
import os

import cv2
import numpy as np

from mlstorlets.sandbox.errors import ObjectError, ParameterError
from mlstorlets.sandbox.faces.image import MAX_PIXELS, decode_image
from mlstorlets.sandbox.incremental import data
from mlstorlets.sandbox.inputs import model_input, read_input
from mlstorlets.sandbox.invocation import int_param
from mlstorlets.sandbox.models import graph, layout

__all__ = ["apply_model", "image_model", "OUTPUTS", "TAG_PREFIX"]

OUTPUTS = ("auto", "image", "npy", "tags")
#: Largest image object read (as the face storlets).
MAX_IMAGE_BYTES = 64 * 2**20
#: Metadata the storlet writes on its outputs.
TAG_PREFIX = "Model-"
MAX_META_VALUE = 256

_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")


def _cores():
    return len(os.sched_getaffinity(0))


def apply_model(in_files, params):
    """The model ``in_files[1]`` over ``in_files[0]`` (see module doc)."""
    name, model_name = model_input(in_files, params, "applying a model")
    output = params.get("output") or "auto"
    if output not in OUTPUTS:
        raise ParameterError(
            name, "output", f"parameter output must be one of {', '.join(OUTPUTS)}, got {output!r}"
        )
    threads = int_param(params, "threads", 1, 1, _cores(), name)
    # The model first: a bad model is refused before any work on the data.
    model = graph.session(
        read_input(in_files[1], model_name, graph.MAX_MODEL_BYTES), model_name, threads
    )
    index = model.output_index(params.get("output_name"), model_name)
    stream = data.buffered(in_files[0])
    head = stream.peek(16)[:16]
    spec = layout.image_spec(model, model_name)
    tags = {
        "Model": params.get("model", "")[:MAX_META_VALUE],
        "Model-Output": model.outputs[index].name,
    }
    if head.startswith(_IMAGE_MAGIC):
        if spec is None:
            raise ObjectError(name, f"an image, but {model_name} does not take images")
        body = read_input(stream, name, MAX_IMAGE_BYTES)
        return _image(model, spec, index, body, output, params, name, model_name, tags)
    if spec is not None:
        raise ObjectError(name, f"not a JPEG, PNG or GIF image, which {model_name} takes")
    if output not in ("auto", "npy"):
        raise ParameterError(name, "output", f"a table's predictions are npy, not {output}")
    metadata = in_files[0].get_metadata()
    rows, body = _table(model, index, stream, metadata, params, name, model_name)
    tags["Model-Rows"] = str(rows)
    return tags, body


def _run(model, spec, index, image, width, name):
    """Output ``index`` of the model over an RGB image, scaled to ``width``
    first where the model takes any size."""
    size = (image.shape[1], image.shape[0])
    if width and spec.width is None and width != size[0]:
        height = max(1, round(size[1] * width / size[0]))
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return model.run({model.inputs[0].name: layout.to_tensor(image, spec, name)}, name)[index]


def _image_output(model, spec, index, name, model_name):
    out_spec = layout.output_spec(model, index, spec, model_name)
    if out_spec is None:
        raise ParameterError(
            name,
            "output",
            f"{model_name}'s output {model.outputs[index].name!r} is not an image: "
            "pass output=npy or output=tags",
        )
    return out_spec


def image_model(data, params, name, model_name):
    """The image-to-image model ``data`` as a frame filter: a function of a
    BGR ``uint8`` frame (and its name, for errors) returning the model's
    output frame, BGR, of the same size.  The rotoscope's segments
    (:func:`mlstorlets.sandbox.video.tasks.assemble`) filter frames with it;
    parameters ``output_name``, ``width`` and ``threads`` as above."""
    threads = int_param(params, "threads", 1, 1, _cores(), name)
    model = graph.session(data, model_name, threads)
    spec = layout.image_spec(model, model_name)
    if spec is None:
        raise ObjectError(model_name, "the model does not take an image")
    index = model.output_index(params.get("output_name"), model_name)
    out_spec = _image_output(model, spec, index, name, model_name)
    width = int_param(params, "width", 0, 0, 8192, name)

    def apply(frame, frame_name):
        size = (frame.shape[1], frame.shape[0])
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        result = _run(model, spec, index, rgb, width, frame_name)
        return cv2.cvtColor(layout.to_image(result, out_spec, size, model_name), cv2.COLOR_RGB2BGR)

    return apply


def _image(model, spec, index, body, output, params, name, model_name, tags):
    image = decode_image(body, name, MAX_PIXELS, color=True)
    size = (image.shape[1], image.shape[0])
    width = int_param(params, "width", 0, 0, 8192, name)
    result = _run(model, spec, index, image, width, name)
    if output in ("auto", "image"):
        out_spec = _image_output(model, spec, index, name, model_name)
        pixels = cv2.cvtColor(
            layout.to_image(result, out_spec, size, model_name), cv2.COLOR_RGB2BGR
        )
        jpeg = body.startswith(_IMAGE_MAGIC[0])
        quality = int_param(params, "quality", 90, 10, 100, name)
        ok, encoded = cv2.imencode(
            ".jpg" if jpeg else ".png", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality] if jpeg else []
        )
        if not ok:
            raise RuntimeError(f"cannot encode the output of {name}")
        return tags, encoded.tobytes()
    array = _bounded(result, name, model_name)
    if output == "npy":
        return tags, _npy(array)
    top_k = int_param(params, "top_k", 5, 1, 100, name)
    return dict(tags, **_top(array, top_k, layout.labels_of(model, model_name))), body


def _top(array, k, labels):
    scores = np.asarray(array, np.float64).reshape(array.shape[0] if array.ndim else 1, -1)[0]
    order = np.argsort(-scores, kind="stable")[:k]
    names = [labels[i] if labels and i < len(labels) else str(i) for i in order.tolist()]
    top = [[n, round(float(scores[i]), 4)] for n, i in zip(names, order.tolist())]
    while True:
        text = json.dumps(top, separators=(",", ":"), ensure_ascii=False)
        if len(text.encode()) <= MAX_META_VALUE or len(top) <= 1:
            break
        top.pop()
    return {
        "Model-Label": names[0][:MAX_META_VALUE],
        "Model-Score": "%.4f" % scores[order[0]],
        "Model-Top": text[: MAX_META_VALUE * 4],
    }


def _bounded(result, name, model_name):
    if not isinstance(result, np.ndarray):
        raise ObjectError(
            name,
            f"{model_name} outputs a {type(result).__name__} per row, not a tensor "
            "(a classifier exported with ZipMap: export with options {'zipmap': False})",
        )
    if result.size > graph.MAX_TENSOR_ELEMENTS:
        raise ObjectError(name, f"{model_name} output {result.size} elements, over the limit")
    return result


def _npy(array):
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


def _table(model, index, stream, metadata, params, name, model_name):
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 2:
        shapes = [i.shape for i in model.inputs]
        raise ObjectError(
            name,
            f"{model_name} takes inputs of shapes {shapes}; a table feeds one 2-D "
            "tensor of features (export with a single input)",
        )
    arg = model.inputs[0]
    dtype = graph.tensor_type(arg)
    if dtype is None or not np.issubdtype(dtype, np.floating):
        raise ObjectError(name, f"{model_name} takes {arg.type}, not floating-point features")
    n_features = arg.shape[1] if isinstance(arg.shape[1], int) else None
    params = dict(params)
    params.setdefault("label_column", "none")
    options = data.DataOptions.from_sources(params, metadata, name)
    parts, total, rows = [], 0, 0
    for batch in data.iter_batches(stream, options, name):
        if batch.X.shape[0] * batch.X.shape[1] > graph.MAX_TENSOR_ELEMENTS:
            raise ObjectError(name, f"{batch.where(0)}: a batch over the model's tensor limit")
        # The runtime takes dense tensors: a sparse batch is densified.
        X = batch.X.toarray() if hasattr(batch.X, "toarray") else batch.X
        if n_features is not None and X.shape[1] != n_features:
            raise ObjectError(
                name,
                f"{batch.where(0)}: {X.shape[1]} features, {model_name} takes {n_features}",
            )
        part = _bounded(
            model.run({arg.name: X.astype(dtype, copy=False)}, name)[index], name, model_name
        )
        total += part.size
        if total > graph.MAX_TENSOR_ELEMENTS:
            raise ObjectError(name, f"the predictions exceed {graph.MAX_TENSOR_ELEMENTS} values")
        parts.append(part)
        rows += X.shape[0]
    return rows, _npy(np.concatenate(parts))
