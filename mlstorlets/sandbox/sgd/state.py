"""Versioned, pickle-free serialization of an SGD estimator's training state.

The state travels between the client and the storlet on every object, so it
must be exact (float64 bit for bit), self-describing and safe to parse from an
untrusted peer. Layout of one state blob::

    MAGIC (6 bytes) | header length (uint32 little-endian) | JSON header (UTF-8)
    | arrays: raw little-endian float64, in the order the header lists them

The JSON header holds the format version, the estimator kind, every
hyper-parameter, the scalars (``t_``, ``n_iter_``, ``n_features_in_``), the
classes, the list of arrays with their shapes, which public array is a view of
which private one (scikit-learn aliases ``coef_`` to ``_standard_coef`` or
``_average_coef`` and later in-place updates rely on it), and an optional
``report`` the storlet fills with what it observed while training.
"""

import json
import math
import struct

import numpy as np
from sklearn.linear_model import SGDClassifier as _SkSGDClassifier
from sklearn.linear_model import SGDRegressor as _SkSGDRegressor

from mlstorlets.sandbox.errors import ObjectError

MAGIC = b"\x93MLSGD"
VERSION = 1
FORMAT = "mlstorlets.sgd-state"

#: The estimator kinds a state can describe, and the plain scikit-learn class
#: the storlet rebuilds for each.
KINDS = {"SGDClassifier": _SkSGDClassifier, "SGDRegressor": _SkSGDRegressor}

_COEF_ARRAYS = ("coef_", "_standard_coef", "_average_coef")
_INTERCEPT_ARRAYS = ("intercept_", "_standard_intercept", "_average_intercept")
_ARRAYS = _COEF_ARRAYS + _INTERCEPT_ARRAYS
_PUBLIC_ALIASES = {
    "coef_": ("_standard_coef", "_average_coef"),
    "intercept_": ("_standard_intercept", "_average_intercept"),
}
_HEADER_LIMIT = 1 << 20


def sklearn_param_names(kind):
    """Names of the hyper-parameters of scikit-learn's own estimator ``kind``."""
    return sorted(KINDS[kind]._get_param_names())


def _kind_of(estimator):
    for kind, cls in KINDS.items():
        if isinstance(estimator, cls):
            return kind
    raise TypeError(f"not an SGDClassifier or SGDRegressor: {type(estimator)!r}")


def _encode_param(name, value):
    if name == "random_state":
        if value is None or isinstance(value, (int, np.integer)):
            return None if value is None else int(value)
        raise ValueError(
            "random_state must be None or an int to be sent to a storlet "
            f"(got {type(value).__name__})"
        )
    if name == "class_weight" and isinstance(value, dict):
        # JSON objects only have string keys; class labels may be numbers.
        return {"pairs": [[_encode_label(k), float(w)] for k, w in value.items()]}
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"hyper-parameter {name} is not finite: {value!r}")
        return value
    raise ValueError(f"hyper-parameter {name} of type {type(value).__name__} "
                     "cannot be serialized")


def _decode_param(name, value):
    if name == "class_weight" and isinstance(value, dict):
        pairs = value.get("pairs")
        if not isinstance(pairs, list) or set(value) != {"pairs"}:
            raise ValueError("class_weight must be encoded as {'pairs': [...]}")
        return {_decode_label(p[0]): float(p[1]) for p in pairs}
    return value


def _encode_label(label):
    if isinstance(label, (bool, np.bool_)):
        return bool(label)
    if isinstance(label, (int, np.integer)):
        return int(label)
    if isinstance(label, (float, np.floating)):
        if not math.isfinite(label):
            raise ValueError(f"class label is not finite: {label!r}")
        return float(label)
    if isinstance(label, (str, np.str_)):
        return str(label)
    raise ValueError(f"class label of type {type(label).__name__} cannot be serialized")


def _decode_label(label):
    if isinstance(label, (bool, int, float, str)):
        return label
    raise ValueError(f"invalid class label {label!r}")


def encode_classes(classes):
    """JSON form of a classes array: its dtype family and its values."""
    classes = np.asarray(classes)
    if classes.ndim != 1:
        raise ValueError("classes must be one-dimensional")
    if classes.dtype.kind == "b":
        dtype = "bool"
    elif classes.dtype.kind in "iu":
        dtype = "int64"
    elif classes.dtype.kind == "f":
        dtype = "float64"
    elif classes.dtype.kind == "U":
        dtype = "str"
    else:
        raise ValueError(f"classes of dtype {classes.dtype} cannot be serialized")
    return {"dtype": dtype, "values": [_encode_label(c) for c in classes.tolist()]}


def decode_classes(encoded):
    """Inverse of :func:`encode_classes`, validated (sorted, unique, finite)."""
    if not isinstance(encoded, dict) or set(encoded) != {"dtype", "values"}:
        raise ValueError("classes must be {'dtype': ..., 'values': [...]}")
    dtypes = {"bool": bool, "int64": np.int64, "float64": np.float64, "str": str}
    if encoded["dtype"] not in dtypes or not isinstance(encoded["values"], list):
        raise ValueError(f"unknown classes dtype {encoded['dtype']!r}")
    values = encoded["values"]
    if encoded["dtype"] == "str":
        if not all(isinstance(v, str) for v in values):
            raise ValueError("string classes must all be strings")
        classes = np.array(values, dtype=str)
    else:
        if not all(isinstance(v, (bool, int, float)) and not isinstance(v, str)
                   for v in values):
            raise ValueError("numeric classes must all be numbers")
        classes = np.array(values, dtype=dtypes[encoded["dtype"]])
        if classes.dtype.kind == "f" and not np.all(np.isfinite(classes)):
            raise ValueError("classes must be finite")
    if len(classes) < 2 or not np.array_equal(np.unique(classes), classes):
        raise ValueError("classes must hold at least two sorted, unique labels")
    return classes


def dumps(estimator, report=None, pending_classes=None, params=None):
    """Serialize everything ``estimator`` needs to continue training.

    Parameters
    ----------
    estimator : sklearn.linear_model.SGDClassifier or SGDRegressor
        Fitted or not; any subclass (mlstorlets' estimators included).
    report : dict, default=None
        JSON-serializable observations from the storlet (loss sums, counts).
    pending_classes : array-like, default=None
        For a classifier not fitted yet: the ``classes`` the first
        ``partial_fit`` must receive.
    params : dict, default=None
        Hyper-parameters to record instead of the estimator's own (the
        client sends an integer seed in place of a RandomState, say).

    Returns
    -------
    blob : bytes
    """
    kind = _kind_of(estimator)
    overrides = params or {}
    params = {}
    for name in sklearn_param_names(kind):
        value = overrides[name] if name in overrides else getattr(estimator, name)
        params[name] = _encode_param(name, value)
    header = {"format": FORMAT, "version": VERSION, "kind": kind, "params": params}
    coef = getattr(estimator, "coef_", None)
    fitted = coef is not None
    header["fitted"] = fitted
    if kind == "SGDClassifier":
        classes = getattr(estimator, "classes_", None) if fitted else pending_classes
        header["classes"] = None if classes is None else encode_classes(classes)
    arrays = []
    if fitted:
        header["n_features_in_"] = int(estimator.n_features_in_)
        header["t_"] = float(estimator.t_)
        n_iter = getattr(estimator, "n_iter_", None)
        header["n_iter_"] = None if n_iter is None else (
            int(n_iter) if isinstance(n_iter, (int, np.integer)) else float(n_iter))
        aliases = {}
        for name in _ARRAYS:
            value = getattr(estimator, name, None)
            if value is None:
                continue
            arrays.append((name, np.asarray(value, dtype=np.float64)))
        present = dict(arrays)
        for public, candidates in _PUBLIC_ALIASES.items():
            for private in candidates:
                if private in present and np.shares_memory(
                        getattr(estimator, public), getattr(estimator, private)):
                    aliases[public] = private
        arrays = [(n, a) for n, a in arrays if n not in aliases]
        header["aliases"] = aliases
    header["arrays"] = [{"name": n, "shape": list(a.shape)} for n, a in arrays]
    header["report"] = report
    text = json.dumps(header, sort_keys=True, separators=(",", ":"),
                      allow_nan=False).encode("utf-8")
    body = b"".join(np.ascontiguousarray(a, dtype="<f8").tobytes() for _, a in arrays)
    return MAGIC + struct.pack("<I", len(text)) + text + body


def size(n_features, n_outputs=1, average=False, header_bytes=1200):
    """Approximate size in bytes of a fitted state.

    ``n_outputs`` is 1 for a regressor or a binary classifier, else the
    number of classes. With ``average`` the standard and averaged copies of
    the coefficients travel too (the public ones are views of either).
    """
    copies = 2 if average else 1
    return header_bytes + 8 * copies * n_outputs * (n_features + 1)


class State:
    """A validated, decoded state.

    Attributes
    ----------
    kind : str
    params : dict
        scikit-learn hyper-parameters, decoded.
    fitted : bool
    classes : ndarray or None
    attrs : dict
        Fitted attributes to set on an estimator (arrays already aliased).
    report : dict or None
    """

    def __init__(self, kind, params, fitted, classes, attrs, report):
        self.kind = kind
        self.params = params
        self.fitted = fitted
        self.classes = classes
        self.attrs = attrs
        self.report = report

    def build(self):
        """A plain scikit-learn estimator holding this state."""
        estimator = KINDS[self.kind](**self.params)
        self.apply(estimator, params=False)
        return estimator

    def apply(self, estimator, params=True):
        """Set this state's fitted attributes (and hyper-parameters) on ``estimator``.

        Fitted attributes of ``estimator`` absent from the state are removed,
        so that the estimator ends up exactly as described.
        """
        if _kind_of(estimator) != self.kind:
            raise ValueError(f"state of a {self.kind} cannot be applied to "
                             f"{type(estimator).__name__}")
        if params:
            for name, value in self.params.items():
                if name == "random_state" and not isinstance(
                        estimator.random_state, (type(None), int, np.integer)):
                    # the caller's generator stays; the state only carried a draw
                    continue
                setattr(estimator, name, value)
        for name in _ARRAYS + ("classes_", "t_", "n_iter_", "n_features_in_"):
            if name in estimator.__dict__ and name not in self.attrs:
                delattr(estimator, name)
        for name, value in self.attrs.items():
            setattr(estimator, name, value)
        return estimator


def _fail(name, reason):
    raise ObjectError(name, f"invalid model state: {reason}")


def loads(blob, name=""):
    """Parse and validate a state blob.

    Parameters
    ----------
    blob : bytes
    name : str
        Where the blob came from, for error messages.

    Returns
    -------
    state : State

    Raises
    ------
    mlstorlets.sandbox.errors.ObjectError
        Wrong magic or version, malformed header, unknown kind or
        hyper-parameter, inconsistent shapes, non-finite values.
    """
    blob = bytes(blob)
    if len(blob) < len(MAGIC) + 4 or not blob.startswith(MAGIC):
        _fail(name, "not an mlstorlets SGD state (bad magic)")
    (hlen,) = struct.unpack_from("<I", blob, len(MAGIC))
    start = len(MAGIC) + 4
    if hlen > _HEADER_LIMIT or start + hlen > len(blob):
        _fail(name, "truncated header")
    try:
        header = json.loads(blob[start:start + hlen].decode("utf-8"),
                            parse_constant=lambda c: _fail(name, f"{c} in header"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(name, f"header is not JSON ({exc})")
    if not isinstance(header, dict):
        _fail(name, "header is not a JSON object")
    if header.get("format") != FORMAT:
        _fail(name, f"unknown format {header.get('format')!r}")
    if header.get("version") != VERSION:
        _fail(name, f"unsupported version {header.get('version')!r} "
                    f"(this library reads version {VERSION})")
    kind = header.get("kind")
    if kind not in KINDS:
        _fail(name, f"unknown estimator kind {kind!r}")
    raw_params = header.get("params")
    expected = set(sklearn_param_names(kind))
    if not isinstance(raw_params, dict) or set(raw_params) != expected:
        got = set(raw_params) if isinstance(raw_params, dict) else set()
        _fail(name, "hyper-parameters do not match scikit-learn's "
                    f"(unknown: {sorted(got - expected)}, missing: {sorted(expected - got)})")
    try:
        params = {k: _decode_param(k, v) for k, v in raw_params.items()}
        if params["random_state"] is not None and not isinstance(params["random_state"], int):
            raise ValueError("random_state must be null or an integer")
        # scikit-learn's own constraint check: types, ranges, known options
        KINDS[kind](**params)._validate_params()
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        _fail(name, f"invalid hyper-parameters ({exc})")

    classes = None
    if kind == "SGDClassifier" and header.get("classes") is not None:
        try:
            classes = decode_classes(header["classes"])
        except ValueError as exc:
            _fail(name, str(exc))
    fitted = header.get("fitted")
    if not isinstance(fitted, bool):
        _fail(name, "'fitted' must be a boolean")
    report = header.get("report")
    if report is not None and not isinstance(report, dict):
        _fail(name, "'report' must be an object")

    specs = header.get("arrays")
    if not isinstance(specs, list):
        _fail(name, "'arrays' must be a list")
    offset = start + hlen
    arrays = {}
    for spec in specs:
        if not isinstance(spec, dict) or set(spec) != {"name", "shape"}:
            _fail(name, f"bad array entry {spec!r}")
        aname, shape = spec["name"], spec["shape"]
        if aname not in _ARRAYS or aname in arrays:
            _fail(name, f"unexpected array {aname!r}")
        if (not isinstance(shape, list) or not 1 <= len(shape) <= 2
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                           for s in shape)):
            _fail(name, f"bad shape {shape!r} for {aname}")
        nbytes = 8 * math.prod(shape)
        if offset + nbytes > len(blob):
            _fail(name, f"truncated data for {aname}")
        value = np.frombuffer(blob, dtype="<f8", count=math.prod(shape), offset=offset)
        arrays[aname] = value.astype(np.float64).reshape(shape)
        offset += nbytes
    if offset != len(blob):
        _fail(name, f"{len(blob) - offset} trailing bytes after the arrays")

    attrs = {}
    if not fitted:
        if arrays:
            _fail(name, "an unfitted state carries no arrays")
    else:
        attrs = _validate_fitted(name, kind, header, params, classes, arrays)
    return State(kind, params, fitted, classes, attrs, report)


def _validate_fitted(name, kind, header, params, classes, arrays):
    n_features = header.get("n_features_in_")
    if not isinstance(n_features, int) or isinstance(n_features, bool) or n_features < 1:
        _fail(name, f"bad n_features_in_ {n_features!r}")
    t = header.get("t_")
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not t >= 1:
        _fail(name, f"bad t_ {t!r}")
    n_iter = header.get("n_iter_")
    if n_iter is not None and (isinstance(n_iter, bool) or not isinstance(n_iter, (int, float))
                               or not n_iter >= 0):
        _fail(name, f"bad n_iter_ {n_iter!r}")
    if kind == "SGDClassifier":
        if classes is None:
            _fail(name, "a fitted classifier needs its classes")
        n_out = 1 if len(classes) == 2 else len(classes)
    else:
        n_out = 1
    aliases = header.get("aliases")
    if not isinstance(aliases, dict):
        _fail(name, "'aliases' must be an object")
    for public, private in aliases.items():
        if public not in _PUBLIC_ALIASES or private not in _PUBLIC_ALIASES[public]:
            _fail(name, f"bad alias {public!r} -> {private!r}")
        if private not in arrays or public in arrays:
            _fail(name, f"alias {public!r} -> {private!r} does not match the arrays")
    for aname, value in arrays.items():
        if aname in _COEF_ARRAYS:
            ok_shapes = [(n_out, n_features)] if kind == "SGDClassifier" else []
            if n_out == 1:
                ok_shapes.append((n_features,))
        else:
            ok_shapes = [(n_out,)]
        if value.shape not in ok_shapes:
            _fail(name, f"{aname} has shape {value.shape}, expected one of {ok_shapes}")
        if not np.all(np.isfinite(value)):
            _fail(name, f"{aname} holds NaN or infinite values")
    has_avg = [a in arrays for a in ("_standard_coef", "_standard_intercept",
                                     "_average_coef", "_average_intercept")]
    if any(has_avg) and not all(has_avg):
        _fail(name, "averaged state is incomplete")
    if all(has_avg) != bool(params["average"]):
        _fail(name, "averaged state present iff average is set")
    for public in _PUBLIC_ALIASES:
        if public not in arrays and public not in aliases:
            _fail(name, f"{public} missing")

    attrs = dict(arrays)
    public_shape = (n_out, n_features) if kind == "SGDClassifier" else (n_features,)
    for public, private in aliases.items():
        shape = public_shape if public == "coef_" else (n_out,)
        attrs[public] = attrs[private].reshape(shape)
    if kind == "SGDClassifier" and attrs["coef_"].shape != public_shape:
        _fail(name, f"coef_ has shape {attrs['coef_'].shape}, expected {public_shape}")
    attrs["n_features_in_"] = n_features
    attrs["t_"] = float(t)
    if n_iter is not None:
        attrs["n_iter_"] = n_iter
    if kind == "SGDClassifier":
        attrs["classes_"] = classes
    return attrs
