"""An ONNX model from an object store, checked before the runtime sees it.

A model object is a tenant's upload: hostile until checked.  ONNX holds
no code (no pickle), but a model file can still name operators from a
library the runtime would load, point its weights at files beside it
(external data: any file the sandbox can read), or declare tensors whose
allocation alone exhausts memory.  :func:`check_model` refuses each of
those by name, before ``onnxruntime`` parses the bytes; :func:`session`
builds the runtime session with the sandbox's bounds and keeps it for the
next request of the same worker (keyed by the model's content: a changed
model is a new entry).
"""

import math
import threading

import numpy as np
import onnx
import onnxruntime
from onnx import shape_inference

from mlstorlets.sandbox.content_cache import ContentCache
from mlstorlets.sandbox.errors import ObjectError

__all__ = [
    "DOMAINS",
    "MAX_MODEL_BYTES",
    "MAX_NODES",
    "MAX_TENSOR_ELEMENTS",
    "Model",
    "check_model",
    "session",
]

#: Largest model object read; a fast style-transfer network is about
#: 7 MB, a ResNet-50 about 100 MB.
MAX_MODEL_BYTES = 256 * 2**20
#: Largest tensor a model may declare or produce: an input, an output, an
#: initializer or any intermediate value whose shape is known (1 GiB of
#: float32).
MAX_TENSOR_ELEMENTS = 256 * 2**20
#: Nodes in all of a model's graphs and functions.
MAX_NODES = 200_000
#: The operator sets the runtime implements itself.  Anything else is a
#: custom operator, which only a library loaded into the runtime provides:
#: never done here.
DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})

#: Sessions of this worker, by model content and thread count.
SESSIONS = ContentCache(max_items=4, max_bytes=2 * MAX_MODEL_BYTES)
_BUILD = threading.Lock()


class Model:
    """A checked model and its runtime session.

    Attributes
    ----------
    session : onnxruntime.InferenceSession
    properties : dict of str to str
        The model's metadata properties (``metadata_props``).
    inputs, outputs : list of onnxruntime.NodeArg
    """

    def __init__(self, session, properties):
        self.session = session
        self.properties = properties
        self.inputs = session.get_inputs()
        self.outputs = session.get_outputs()

    def output_index(self, wanted, name):
        """The index of output ``wanted`` (a name; empty: the first)."""
        if not wanted:
            return 0
        names = [o.name for o in self.outputs]
        if wanted not in names:
            raise ObjectError(name, f"the model has no output {wanted!r} (it has {names})")
        return names.index(wanted)

    def run(self, feeds, name):
        """The model's outputs for ``feeds``; a runtime refusal (a shape or
        type the model does not take) is the object's error."""
        try:
            return self.session.run(None, feeds)
        except (onnxruntime.capi.onnxruntime_pybind11_state.Fail, RuntimeError) as exc:
            raise ObjectError(name, f"the model cannot run on it: {_first_line(exc)}") from None


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _graphs(model):
    """Every graph of the model: the main one, the subgraphs of its
    control-flow nodes, and its local functions (as node lists)."""
    pending = [model.graph]
    while pending:
        graph = pending.pop()
        yield graph
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    pending.append(attribute.g)
                pending.extend(attribute.graphs)


def _nodes(model):
    for graph in _graphs(model):
        yield from graph.node
    for function in model.functions:
        yield from function.node


def _tensors(model):
    """Every tensor stored in the model: initializers and constants."""
    for graph in _graphs(model):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
    for node in _nodes(model):
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("sparse_tensor"):
                yield attribute.sparse_tensor.values


def _declared_shapes(model):
    """``(what, dims)`` of every shape the model states: sparse tensors'
    dense shapes, and its inputs', outputs' and values' static dimensions."""
    for graph in _graphs(model):
        for sparse in graph.sparse_initializer:
            yield f"sparse initializer {sparse.values.name!r}", list(sparse.dims)
        for kind, infos in (
            ("input", graph.input),
            ("output", graph.output),
            ("value", graph.value_info),
        ):
            for info in infos:
                if info.type.HasField("tensor_type"):
                    dims = [
                        d.dim_value if d.HasField("dim_value") else None
                        for d in info.type.tensor_type.shape.dim
                    ]
                    yield f"{kind} {info.name!r}", dims
    for tensor in _tensors(model):
        yield f"tensor {tensor.name!r}", list(tensor.dims)


def _check_shapes(model, name):
    for what, dims in _declared_shapes(model):
        known = [d for d in dims if d is not None]
        if any(d < 0 for d in known):
            raise ObjectError(name, f"the model's {what} has a negative dimension")
        if math.prod(known) > MAX_TENSOR_ELEMENTS:
            raise ObjectError(
                name,
                f"the model's {what} declares {math.prod(known)} elements, over the "
                f"{MAX_TENSOR_ELEMENTS} accepted for one tensor",
            )


def check_model(data, name):
    """Parse and check a model object; return the ``onnx.ModelProto``.

    Refused, each as an :class:`ObjectError` naming ``name``: more than
    :data:`MAX_MODEL_BYTES`, bytes that are not an ONNX model, weights in
    external files, operators outside :data:`DOMAINS` (custom operators),
    more than :data:`MAX_NODES` nodes, and any tensor declared (or inferred
    from the model's constants) with more than :data:`MAX_TENSOR_ELEMENTS`
    elements.
    """
    if not data:
        raise ObjectError(name, "empty object, expected an ONNX model")
    if len(data) > MAX_MODEL_BYTES:
        raise ObjectError(name, f"model of {len(data)} bytes, over the {MAX_MODEL_BYTES} accepted")
    try:
        model = onnx.load_model_from_string(bytes(data))
    except Exception:
        raise ObjectError(name, "not an ONNX model (the protobuf does not parse)") from None
    if not model.HasField("graph") or not model.graph.node:
        raise ObjectError(name, "not an ONNX model: no graph")
    for tensor in _tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            raise ObjectError(
                name,
                f"tensor {tensor.name!r} keeps its data in an external file: "
                "a model must hold all its weights",
            )
    local = {f.domain for f in model.functions}
    for opset in model.opset_import:
        if opset.domain not in DOMAINS | local:
            raise ObjectError(
                name,
                f"the model imports operator set {opset.domain!r}: custom operators "
                f"are not run (only {', '.join(sorted(repr(d) for d in DOMAINS))})",
            )
    count = 0
    for node in _nodes(model):
        count += 1
        if node.domain not in DOMAINS | local:
            raise ObjectError(
                name,
                f"node {node.name or node.op_type!r} is a custom operator "
                f"({node.domain}.{node.op_type}): custom operators are not run",
            )
        if count > MAX_NODES:
            raise ObjectError(name, f"the model has more than {MAX_NODES} nodes")
    _check_shapes(model, name)
    # What the constants imply (ConstantOfShape of a constant, Expand,
    # Tile...): shapes inferred and propagated, then bounded as declared.
    try:
        inferred = shape_inference.infer_shapes(model, check_type=False, data_prop=True)
    except Exception:
        inferred = None
    if inferred is not None:
        _check_shapes(inferred, name)
    return model


def _build(data, name, threads):
    model = check_model(data, name)
    options = onnxruntime.SessionOptions()
    # One thread by default: the sandbox's agent already runs one worker
    # per core it may use.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    # Without the arena, what a run allocates is returned when it ends: a
    # worker keeps the model, not the peak of the largest frame it saw.
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 3
    try:
        runtime = onnxruntime.InferenceSession(
            bytes(data), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise ObjectError(name, f"the runtime cannot load the model: {_first_line(exc)}") from None
    properties = {p.key: p.value for p in model.metadata_props}
    return Model(runtime, properties)


def session(data, name, threads=1):
    """The :class:`Model` of ``data``, built once per worker and content.

    Parameters
    ----------
    data : bytes-like
        The model object's content.
    name : str
        Its name, for errors.
    threads : int, default=1
        The runtime's threads for one run.
    """
    key = "%s/%d" % (ContentCache.key_of(data), threads)
    # One build at a time: two threads of a worker asking for the same new
    # model would otherwise each hold a copy while building.
    with _BUILD:
        return SESSIONS.get(data, lambda d: _build(d, name, threads), key=key)


def tensor_type(arg):
    """The numpy dtype of an input ``arg`` (``tensor(float)``...), or None."""
    return _TYPES.get(arg.type)


_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}
