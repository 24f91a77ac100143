"""An incremental estimator's state as it travels: a skops file, never pickle.

The state of an estimator between two ``partial_fit`` calls is what
scikit-learn keeps on it: ``get_params()`` and the fitted attributes
(arrays, counts, an optimizer's moments, a ``RandomState``).  skops writes
exactly that, as JSON and ``.npy`` members of a zip, and reads back only the
types it is told to trust: the estimator classes of :data:`KINDS` (which
skops trusts by default) and the helpers of :data:`HELPERS`.  Anything else
in a state, from a client or from a storlet, is refused.

A state may also be a scikit-learn ``Pipeline``: incremental transformers
(:data:`STEPS`, each with ``partial_fit``) then one estimator of
:data:`KINDS`, with no caching ``memory``.  :func:`final_of` is the
estimator a pipeline ends with (the estimator itself otherwise).

:func:`dumps` writes the same bytes for the same state (skops names members
after ``id()`` and stamps the time: both are normalised), so that a digest
of the state says which model made an output.

A *payload* is what one invocation receives besides its data: the state and,
when needed, the classes of a first ``partial_fit``, the sample weights of
one object and the list of a group's objects.  It is an ``.npz`` read with
the decoding bounds of :mod:`mlstorlets.sandbox.incremental.data`.
"""

import io
import json
import math
import re
import zipfile

import numpy as np
import skops.io as sio
from sklearn.cluster import MiniBatchKMeans
from sklearn.linear_model import (
    PassiveAggressiveClassifier,
    PassiveAggressiveRegressor,
    Perceptron,
    SGDClassifier,
    SGDOneClassSVM,
    SGDRegressor,
)
from sklearn.naive_bayes import BernoulliNB, ComplementNB, GaussianNB, MultinomialNB
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler

from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.incremental import data

#: The estimators a state may hold: scikit-learn's own classes with
#: ``partial_fit``, by name.
KINDS = {
    cls.__name__: cls
    for cls in (
        SGDClassifier,
        SGDRegressor,
        SGDOneClassSVM,
        Perceptron,
        PassiveAggressiveClassifier,
        PassiveAggressiveRegressor,
        MLPClassifier,
        MLPRegressor,
        MiniBatchKMeans,
        MultinomialNB,
        BernoulliNB,
        ComplementNB,
        GaussianNB,
    )
}
#: The transformers a pipeline's state may hold before its estimator.
STEPS = {cls.__name__: cls for cls in (StandardScaler, MaxAbsScaler, MinMaxScaler)}
#: Most steps of a pipeline.
MAX_STEPS = 16
#: Attributes of a live estimator that are not its state: scikit-learn's
#: callbacks (``set_callbacks``) and their contexts during a fit, and the
#: container its ``transform`` returns (``set_output``).  Never written in a
#: state, and a state that holds one is refused: they change what a step
#: calls and returns.
LIVE_ATTRIBUTES = frozenset(
    (
        "_skl_callbacks",
        "_skl_callbacks_to_teardown",
        "_callback_fit_ctx",
        "_parent_callback_ctx",
        "_sklearn_output_config",
    )
)
#: Types inside a state that skops does not trust by default.
HELPERS = (
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
)
#: Bytes of a state or payload: default and hard maximum (parameter
#: ``max_state_bytes``).
MAX_STATE_BYTES = (128 << 20, 1 << 30)
#: Members of a state's zip (an MLP has a few per layer).
MAX_STATE_MEMBERS = 4096
#: What a payload may hold.
PAYLOAD_MEMBERS = ("state", "classes", "sample_weight", "job")

_ID = re.compile(r'("__id__": |")(\d+)(\.npy"|(?=[,\s}]))')
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _class_among(estimator, classes):
    """The class of ``classes`` that ``estimator`` is or subclasses, or None."""
    for cls in type(estimator).__mro__:
        if classes.get(cls.__name__) is cls:
            return cls
    return None


def kind_of(estimator):
    """The scikit-learn class of :data:`KINDS` that ``estimator`` is (or
    subclasses); ``Pipeline`` for a pipeline."""
    if isinstance(estimator, Pipeline):
        return Pipeline
    cls = _class_among(estimator, KINDS)
    if cls is None:
        raise TypeError(
            f"{type(estimator).__name__} is not one of the incremental estimators "
            f"a storlet can rebuild ({', '.join(sorted(KINDS))})"
        )
    return cls


def final_of(estimator):
    """The estimator ``estimator`` ends with: its last step for a pipeline."""
    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator


def parts_of(estimator):
    """The estimators a state trains: a pipeline's steps, or ``estimator``."""
    if isinstance(estimator, Pipeline):
        return [step for _, step in estimator.steps]
    return [estimator]


def fitted_attributes(estimator):
    """``estimator``'s state besides its parameters: its fitted attributes,
    without :data:`LIVE_ATTRIBUTES`."""
    names = set(type(estimator)._get_param_names()) | LIVE_ATTRIBUTES
    return {k: v for k, v in vars(estimator).items() if k not in names}


def pipeline_problem(pipeline, exact=True):
    """What makes ``pipeline`` other than transformers of :data:`STEPS`
    then one estimator of :data:`KINDS` (their very classes when
    ``exact``, else subclasses too), without caching or input routing; None
    when nothing does."""
    steps = pipeline.steps
    if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_STEPS:
        return f"a pipeline has 1 to {MAX_STEPS} steps in a list"
    if not all(isinstance(s, tuple) and len(s) == 2 and isinstance(s[0], str) for s in steps):
        return "a pipeline's steps are (name, estimator) pairs"
    names = [name for name, _ in steps]
    if len(set(names)) != len(names) or any(not n or "__" in n for n in names):
        return "a pipeline's step names are unique, non-empty and hold no '__'"
    if len({id(step) for _, step in steps}) != len(steps):
        return "a pipeline's steps are distinct estimators"
    for (_, step), classes in zip(steps, [STEPS] * (len(steps) - 1) + [KINDS]):
        cls = _class_among(step, classes)
        if cls is None or (exact and cls is not type(step)):
            what = "an incremental transformer" if classes is STEPS else "an incremental estimator"
            return (
                f"a pipeline's step {type(step).__name__} is not {what} "
                f"({', '.join(sorted(classes))})"
            )
    if pipeline.memory is not None or getattr(pipeline, "transform_input", None) is not None:
        return "a pipeline's memory and transform_input must be None"
    return None


def plain(estimator, params=None):
    """A plain scikit-learn estimator with ``estimator``'s parameters
    (updated with ``params``) and fitted attributes, which it shares.

    For a pipeline, a plain ``Pipeline`` of plain steps, ``params`` applying
    to its final estimator.
    """
    if not isinstance(estimator, Pipeline):
        return _plain(estimator, kind_of(estimator), params)
    problem = pipeline_problem(estimator, exact=False)
    if problem:
        raise TypeError(problem)
    *transforms, (name, last) = estimator.steps
    steps = [(n, _plain(step, _class_among(step, STEPS))) for n, step in transforms]
    return Pipeline(steps + [(name, plain(last, params))], verbose=estimator.verbose)


def _plain(estimator, cls, params=None):
    names = cls._get_param_names()
    values = {name: getattr(estimator, name) for name in names}
    values.update(params or {})
    out = cls(**values)
    for key, value in fitted_attributes(estimator).items():
        setattr(out, key, value)
    return out


def _canonical(blob):
    """skops' zip with ids numbered in order of appearance and no time."""
    with zipfile.ZipFile(io.BytesIO(blob)) as src:
        schema = src.read("schema.json").decode("utf-8")
        ids = {}

        def number(match):
            new = ids.setdefault(match.group(2), str(len(ids)))
            return match.group(1) + new + (match.group(3) or "")

        schema = _ID.sub(number, schema)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as dst:
            dst.writestr(zipfile.ZipInfo("schema.json", _EPOCH), schema, zipfile.ZIP_DEFLATED)
            members = sorted(
                (ids[i.filename[:-4]], i) for i in src.infolist() if i.filename != "schema.json"
            )
            for new, info in sorted(members, key=lambda m: int(m[0])):
                dst.writestr(
                    zipfile.ZipInfo(new + ".npy", _EPOCH), src.read(info), zipfile.ZIP_DEFLATED
                )
    return out.getvalue()


def dumps(estimator, params=None):
    """The state of ``estimator`` (any subclass of a :data:`KINDS` class),
    as a plain scikit-learn estimator with ``params`` overriding its own."""
    return _canonical(sio.dumps(plain(estimator, params)))


def _fail(name, reason):
    raise ObjectError(name, f"invalid model state: {reason}")


def _arrays(value):
    if isinstance(value, np.ndarray):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _arrays(item)


def loads(blob, name="model state", kind=None, limit=MAX_STATE_BYTES[0]):
    """The estimator a state describes, validated.

    Parameters
    ----------
    blob : bytes
    name : str
        Where it came from, for errors.
    kind : type, optional
        The class it must be.
    limit : int
        Most bytes of the state, and of all its members uncompressed.

    Raises
    ------
    mlstorlets.sandbox.errors.ObjectError
        Not a state, over a bound, an untrusted type, another kind, invalid
        parameters (scikit-learn's own constraints) or NaN in an array.
    """
    if len(blob) > limit:
        _fail(name, f"{len(blob)} bytes, over max_state_bytes={limit}")
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_STATE_MEMBERS:
                _fail(name, f"{len(infos)} members, over {MAX_STATE_MEMBERS}")
            if sum(i.file_size for i in infos) > limit:
                _fail(name, f"over max_state_bytes={limit} bytes uncompressed")
        untrusted = sio.get_untrusted_types(data=blob)
        refused = sorted(set(untrusted) - set(HELPERS))
        if refused:
            _fail(name, f"untrusted types {refused}")
        estimator = sio.loads(blob, trusted=untrusted)
    except ObjectError:
        raise
    except Exception as exc:  # skops and zipfile raise many kinds on bad input
        _fail(name, f"not a readable state ({type(exc).__name__}: {exc})")
    cls = type(estimator)
    if cls is Pipeline:
        problem = pipeline_problem(estimator)
        if problem:
            _fail(name, problem)
        parts = [estimator, *parts_of(estimator)]
    elif KINDS.get(cls.__name__) is cls:
        parts = [estimator]
    else:
        _fail(name, f"a {cls.__name__} is not an incremental estimator")
    if kind is not None and cls is not kind:
        _fail(name, f"a {cls.__name__} where a {kind.__name__} was expected")
    for part in parts:
        foreign = sorted(LIVE_ATTRIBUTES & set(vars(part)))
        if foreign:
            _fail(name, f"{type(part).__name__} holds {foreign}")
        try:
            part._validate_params()
        except (ValueError, TypeError) as exc:
            _fail(name, f"invalid hyper-parameters ({exc})")
        for key, value in vars(part).items():
            for array in _arrays(value):
                if array.dtype.kind == "f" and np.isnan(array).any():
                    _fail(name, f"{key} holds NaN")
    return estimator


# -- payloads ----------------------------------------------------------------
def pack(state, classes=None, sample_weight=None, job=None):
    """A payload: ``state`` (bytes), ``classes`` and ``sample_weight``
    (arrays) and ``job`` (JSON-able), those given."""
    arrays = {} if state is None else {"state": np.frombuffer(state, dtype=np.uint8)}
    if classes is not None:
        classes = np.asarray(classes)
        if classes.dtype.hasobject:
            classes = classes.astype(str)
        arrays["classes"] = classes
    if sample_weight is not None:
        arrays["sample_weight"] = np.asarray(sample_weight, dtype=np.float64)
    if job is not None:
        text = json.dumps(job, separators=(",", ":")).encode("utf-8")
        arrays["job"] = np.frombuffer(text, dtype=np.uint8)
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


class Payload:
    """A decoded payload: ``state`` (bytes or None), ``classes``,
    ``sample_weight`` (arrays or None), ``job`` (list or None)."""

    def __init__(self, state=None, classes=None, sample_weight=None, job=None):
        self.state = state
        self.classes = classes
        self.sample_weight = sample_weight
        self.job = job


def unpack(blob, limit=MAX_STATE_BYTES[0]):
    """The :class:`Payload` of ``blob``, decoded within ``limit`` bytes."""
    name = "model state"
    options = data.DataOptions(
        max_archive_bytes=limit, max_array_bytes=limit, max_members=len(PAYLOAD_MEMBERS)
    )
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            infos = archive.infolist()
            if len(infos) > options.max_members:
                _fail(name, f"{len(infos)} members in the payload")
            found = {}
            for info in infos:
                key = info.filename[:-4]
                if key not in PAYLOAD_MEMBERS or not info.filename.endswith(".npy"):
                    _fail(name, f"unexpected payload member {info.filename!r}")
                found[key] = data.npz_member(archive, info, options, name)
    except ObjectError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError) as exc:
        _fail(name, f"unreadable payload ({exc})")
    payload = Payload()
    if "state" in found:
        payload.state = found["state"].astype(np.uint8, copy=False).tobytes()
    if "classes" in found:
        classes = found["classes"]
        if classes.ndim != 1 or classes.dtype.kind not in "biufU" or len(classes) < 2:
            _fail(name, "classes must be a 1-D array of at least two numbers or strings")
        payload.classes = classes
    if "sample_weight" in found:
        weights = found["sample_weight"]
        if (
            weights.ndim != 1
            or weights.dtype.kind != "f"
            or not np.all(np.isfinite(weights))
            or (weights < 0).any()
        ):
            _fail(name, "sample_weight must be 1-D, finite and >= 0")
        payload.sample_weight = weights
    if "job" in found:
        payload.job = decode_job(found["job"].astype(np.uint8, copy=False).tobytes())
    return payload


def decode_job(text):
    """A group's objects: ``[[name, weight, bytes or None], ...]``, checked."""
    try:
        entries = json.loads(text)
        if not isinstance(entries, list) or not entries:
            raise ValueError("not a non-empty list")
        for entry in entries:
            entry_name, weight, size = entry
            if (
                not isinstance(entry_name, str)
                or isinstance(weight, bool)
                or not isinstance(weight, (int, float))
                or not math.isfinite(weight)
                or weight < 0
                or not (size is None or (isinstance(size, int) and size >= 0))
            ):
                raise ValueError(f"bad entry {entry!r}")
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ObjectError("job", f"bad job ({exc})") from None
    return [tuple(entry) for entry in entries]
