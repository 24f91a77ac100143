"""Training, storing and applying the face recognition model.

One model type serves every path: a :class:`~sklearn.pipeline.Pipeline` of
:class:`~sklearn.preprocessing.StandardScaler` and a log-loss
:class:`~sklearn.linear_model.SGDClassifier`. :func:`train` fits it on
arrays in memory; :func:`train_incremental` fits the same pipeline with
``partial_fit`` over shards, so that a training set of any size never has to
sit in memory at once. Recognition therefore has a single code path.

Among the linear models measured on the sample set (see the tests), a
strongly regularised (``alpha=1``) averaged SGD was as accurate as logistic
regression and a calibrated linear SVM, and, unlike weakly regularised SGD,
its probabilities are spread enough to carry a meaningful ``unknown``
threshold.
"""

import collections.abc
import dataclasses
import io
import json
import zipfile

import numpy as np
import skops.io
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.faces.detect import extract_face
from mlstorlets.sandbox.faces.features import feature_length, features, spec_json, validate_spec
from mlstorlets.sandbox.faces.image import MAX_PIXELS

__all__ = [
    "UNKNOWN",
    "FaceModel",
    "make_estimator",
    "train",
    "pack_shard",
    "load_shard",
    "train_incremental",
    "dump_model",
    "load_model",
    "model_metadata",
    "recognize",
    "recognize_image",
]

#: Name given to a face the model is not confident about.
UNKNOWN = "unknown"

_FORMAT = "mlstorlets.sandbox.faces.model"
_VERSION = 1

#: The only types a model file may contain, checked on the file's schema
#: before skops instantiates anything, and handed to skops as its trusted
#: list. Everything else, including other scikit-learn estimators that skops
#: trusts by default, is refused.
TRUSTED_TYPES = (
    "builtins.bool",
    "builtins.dict",
    "builtins.float",
    "builtins.int",
    "builtins.list",
    "builtins.str",
    "builtins.tuple",
    "numpy.dtype",
    "numpy.float32",
    "numpy.float64",
    "numpy.int64",
    "numpy.ndarray",
    "sklearn._loss._loss.CyHalfBinomialLoss",
    "sklearn.linear_model._stochastic_gradient.SGDClassifier",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
)

#: Upper bound on the decompressed size of a model file or shard: zip
#: archives can expand a few kilobytes into gigabytes.
MAX_UNPACKED_BYTES = 512 * 2**20

# Swift refuses metadata values over 256 bytes.
_MAX_META_VALUE = 256


@dataclasses.dataclass(frozen=True)
class FaceModel:
    """A trained recognizer with everything needed to apply it.

    Attributes
    ----------
    estimator : Pipeline
        StandardScaler followed by SGDClassifier.
    spec : dict
        The feature spec the estimator was trained with.
    classes : tuple of str
        The names the estimator can return, sorted.
    n_samples : int
        Number of training rows.
    """

    estimator: Pipeline
    spec: dict
    classes: tuple
    n_samples: int

    @property
    def metadata(self):
        """Summary for Swift object metadata; see :func:`model_metadata`."""
        return model_metadata(self.spec, self.classes, self.n_samples)


def make_estimator(alpha=1.0, max_iter=100, random_state=0):
    """Return the unfitted pipeline every training path uses.

    Parameters
    ----------
    alpha : float, default=1.0
        L2 regularisation; strong, because HOG vectors have far more
        dimensions than a typical training set has faces.
    max_iter : int, default=100
        Passes over the data for :func:`train`.
    random_state : int, default=0
        Seed of the SGD shuffling, for reproducible models.

    Returns
    -------
    estimator : Pipeline
    """
    # Averaging the SGD iterates makes the result insensitive to the order in
    # which shards arrive, which matters for incremental training.
    classifier = SGDClassifier(
        loss="log_loss",
        alpha=alpha,
        average=True,
        max_iter=max_iter,
        tol=None,
        random_state=random_state,
    )
    return Pipeline([("scale", StandardScaler()), ("classify", classifier)])


def _check_xy(X, y, name, n_features=None):
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
        raise ObjectError(
            name, f"expected X of shape (n, d) and y of shape (n,), got {X.shape} and {y.shape}"
        )
    if not np.issubdtype(X.dtype, np.floating) or not np.isfinite(X).all():
        raise ObjectError(name, "X must hold finite floating-point values")
    if y.dtype.kind != "U":
        raise ObjectError(name, f"labels must be a unicode string array, got dtype {y.dtype}")
    if n_features is not None and X.shape[1] != n_features:
        raise ObjectError(name, f"expected {n_features} features a row, got {X.shape[1]}")
    return X.astype(np.float32, copy=False), y


def train(X, y, spec, **estimator_params):
    """Fit a recognizer on features held in memory.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Feature rows, from :func:`~mlstorlets.sandbox.faces.features.features`.
    y : array-like of str, shape (n_samples,)
        The person in each row.
    spec : mapping
        The feature spec ``X`` was computed with.
    **estimator_params
        Passed to :func:`make_estimator`.

    Returns
    -------
    model : FaceModel
    """
    spec = validate_spec(spec)
    X, y = _check_xy(X, np.asarray(y, dtype=str), "training set", feature_length(spec))
    estimator = make_estimator(**estimator_params).fit(X, y)
    classes = tuple(str(c) for c in estimator.classes_)
    return FaceModel(estimator, spec, classes, len(y))


def pack_shard(X, y):
    """Serialise a block of training rows as ``.npz`` bytes.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Feature rows; stored as float32.
    y : array-like of str, shape (n_samples,)
        Labels; stored as a unicode array, so loading needs no pickle.

    Returns
    -------
    shard : bytes
    """
    X, y = _check_xy(X, np.asarray(y, dtype=str), "shard")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, X=X, y=y)
    return buffer.getvalue()


def _check_zip(data, name, what):
    """Open ``data`` as a zip archive whose members fit in memory."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise ObjectError(name, f"not a {what} (not a zip archive)") from None
    unpacked = sum(member.file_size for member in members)
    if unpacked > MAX_UNPACKED_BYTES:
        raise ObjectError(
            name, f"{what} unpacks to {unpacked} bytes, over the {MAX_UNPACKED_BYTES} limit"
        )
    return archive


def _check_npy_header(archive, member, name):
    # np.load allocates what the .npy header declares before reading the
    # data, so a small member could claim a huge shape; compare first.
    with archive.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize > member.file_size:
        raise ObjectError(name, f"array {member.filename} declares more data than it holds")


def load_shard(data, name):
    """Read a shard written by :func:`pack_shard`.

    Parameters
    ----------
    data : bytes-like
        The shard object.
    name : str
        Its name, for error messages.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), dtype float32
    y : ndarray of shape (n_samples,), dtype unicode

    Raises
    ------
    ObjectError
        If the object is not a well-formed shard.
    """
    if not data:
        raise ObjectError(name, "empty object, expected a training shard")
    archive = _check_zip(data, name, "training shard")
    try:
        members = {member.filename: member for member in archive.infolist()}
        if set(members) != {"X.npy", "y.npy"}:
            raise ObjectError(
                name, f"a shard holds exactly X.npy and y.npy, found {sorted(members)}"
            )
        for member in members.values():
            _check_npy_header(archive, member, name)
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            X, y = npz["X"], npz["y"]
    except ObjectError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, MemoryError) as exc:
        raise ObjectError(name, f"corrupt training shard ({exc})") from None
    if X.dtype != np.float32:
        raise ObjectError(name, f"shard features must be float32, got {X.dtype}")
    return _check_xy(X, y, name)


def _shard_passes(shards, rng):
    if callable(shards):
        return shards
    if iter(shards) is shards:
        # A generator would be empty on the second pass and training would
        # silently stop early.
        raise TypeError(
            "shards must be re-iterable (a list, or a callable returning a fresh "
            "iterable), because training reads them several times"
        )
    if isinstance(shards, collections.abc.Sequence):
        # Visiting shards in a new order each epoch keeps a shard written
        # late (say, the last person added) from dominating the model.
        return lambda: (shards[i] for i in rng.permutation(len(shards)))
    return lambda: shards


def _named_shards(shards):
    for index, item in enumerate(shards()):
        if isinstance(item, tuple):
            name, data = item
        else:
            name, data = f"shard {index}", item
        yield name, load_shard(data, name)


def train_incremental(shards, classes, spec, epochs=20, alpha=1.0, random_state=0):
    """Fit a recognizer shard by shard, in bounded memory.

    One pass fits the scaler with ``partial_fit``; then ``epochs`` passes fit
    the classifier with ``partial_fit``, each shard shuffled. Only one shard
    is decoded at a time.

    Parameters
    ----------
    shards : iterable or callable
        The shards, read ``epochs + 1`` times: either a re-iterable (e.g. a
        list, visited in a new random order each epoch) or a callable
        returning a fresh iterable on each call (e.g. one that streams
        objects from Swift). Each item is the bytes of a shard from
        :func:`pack_shard`, or a ``(name, bytes)`` pair so that errors name
        the object. Shards should mix people: SGD learns poorly from shards
        that each hold one or two people when they also arrive in a fixed
        order (measured on the sample set: 4 to 6 of 8 test photos right,
        against 7 of 8 with mixed shards or a reshuffled list), so write
        them from a shuffled list of faces.
    classes : sequence of str
        Every label that can occur; ``partial_fit`` needs them up front.
    spec : mapping
        The feature spec the shards were computed with.
    epochs : int, default=20
        Classifier passes over the shards.
    alpha : float, default=1.0
        See :func:`make_estimator`.
    random_state : int, default=0
        Seed for the SGD and for shuffling rows within a shard.

    Returns
    -------
    model : FaceModel
        Of the same type as :func:`train` returns.

    Raises
    ------
    ObjectError
        If a shard is malformed, has the wrong feature length or a label
        outside ``classes``.
    ValueError
        If there are no training rows.
    """
    spec = validate_spec(spec)
    n_features = feature_length(spec)
    classes = np.array(sorted({str(c) for c in classes}))
    rng = np.random.default_rng(random_state)
    passes = _shard_passes(shards, rng)
    estimator = make_estimator(alpha=alpha, random_state=random_state)
    scaler, classifier = estimator.named_steps["scale"], estimator.named_steps["classify"]

    n_samples = 0
    for name, (X, y) in _named_shards(passes):
        if X.shape[1] != n_features:
            raise ObjectError(name, f"expected {n_features} features a row, got {X.shape[1]}")
        unknown = np.setdiff1d(y, classes)
        if unknown.size:
            raise ObjectError(name, f"labels not among the classes: {', '.join(unknown[:5])}")
        scaler.partial_fit(X)
        n_samples += len(y)
    if n_samples == 0:
        raise ValueError("no training rows in the shards")

    for _ in range(epochs):
        for _, (X, y) in _named_shards(passes):
            # SGD assumes rows in random order; shards are often written one
            # person at a time.
            order = rng.permutation(len(y))
            classifier.partial_fit(scaler.transform(X[order]), y[order], classes=classes)
    return FaceModel(estimator, spec, tuple(str(c) for c in classes), n_samples)


def model_metadata(spec, classes, n_samples):
    """Summarise a model for Swift object metadata.

    Parameters
    ----------
    spec : mapping
        The feature spec.
    classes : sequence of str
        The model's names.
    n_samples : int
        Number of training rows.

    Returns
    -------
    metadata : dict of str to str
        ``classes`` (JSON list; left out when longer than the 256 bytes
        Swift allows a value), ``class-count``, ``samples`` and
        ``feature-spec`` (compact JSON), well under Swift's 4 KB total.
    """
    metadata = {
        "class-count": str(len(classes)),
        "samples": str(int(n_samples)),
        "feature-spec": spec_json(spec),
    }
    names = json.dumps(list(classes), separators=(",", ":"))
    if len(names.encode()) <= _MAX_META_VALUE:
        metadata["classes"] = names
    return metadata


def dump_model(model, spec, classes, n_samples):
    """Serialise a model, with its feature spec, to skops bytes.

    Parameters
    ----------
    model : Pipeline or FaceModel
        The fitted estimator (a :class:`FaceModel`'s ``estimator`` is used).
    spec : mapping
        The feature spec it was trained with.
    classes : sequence of str
        Its classes, in the estimator's order.
    n_samples : int
        Number of training rows.

    Returns
    -------
    data : bytes
        A skops archive; read it back with :func:`load_model`.
    """
    estimator = model.estimator if isinstance(model, FaceModel) else model
    bundle = {
        "format": _FORMAT,
        "version": _VERSION,
        "estimator": estimator,
        "spec": validate_spec(spec),
        "classes": [str(c) for c in classes],
        "n_samples": int(n_samples),
    }
    return skops.io.dumps(bundle)


def _schema_types(node, found):
    if isinstance(node, dict):
        if "__class__" in node and "__module__" in node:
            found.add(f"{node['__module__']}.{node['__class__']}")
        for value in node.values():
            _schema_types(value, found)
    elif isinstance(node, list):
        for value in node:
            _schema_types(value, found)
    return found


def load_model(data, name):
    """Load a model written by :func:`dump_model`, without running its code.

    The archive's schema is audited against :data:`TRUSTED_TYPES` before
    skops instantiates anything; pickles are refused outright.

    Parameters
    ----------
    data : bytes-like
        The model object.
    name : str
        Its name, for error messages.

    Returns
    -------
    model : FaceModel

    Raises
    ------
    ObjectError
        If the object is a pickle, not a skops archive, holds a type outside
        :data:`TRUSTED_TYPES`, or is not a consistent face model.
    """
    if not data:
        raise ObjectError(name, "empty object, expected a model")
    data = bytes(data)
    if data[:1] == b"\x80":
        raise ObjectError(
            name, "is a pickle; only skops model files are accepted, since unpickling runs code"
        )
    archive = _check_zip(data, name, "skops model file")
    try:
        schema = json.loads(archive.read("schema.json"))
    except (KeyError, ValueError, OSError, zipfile.BadZipFile, RecursionError):
        raise ObjectError(name, "not a skops model file (no readable schema)") from None
    untrusted = sorted(_schema_types(schema, set()) - set(TRUSTED_TYPES))
    if untrusted:
        raise ObjectError(name, f"model file holds untrusted types: {', '.join(untrusted)}")
    try:
        bundle = skops.io.loads(data, trusted=list(TRUSTED_TYPES))
    except Exception as exc:  # skops raises many types on malformed input
        raise ObjectError(
            name, f"cannot load the model file ({type(exc).__name__}: {exc})"
        ) from None
    return _check_bundle(bundle, name)


def _check_bundle(bundle, name):
    if not isinstance(bundle, dict) or bundle.get("format") != _FORMAT:
        raise ObjectError(name, "not a face model file")
    if bundle.get("version") != _VERSION:
        raise ObjectError(name, f"unsupported face model version {bundle.get('version')!r}")
    estimator = bundle.get("estimator")
    if not (
        type(estimator) is Pipeline
        and [type(step) for _, step in estimator.steps] == [StandardScaler, SGDClassifier]
    ):
        raise ObjectError(name, "model is not a StandardScaler + SGDClassifier pipeline")
    try:
        spec = validate_spec(bundle.get("spec"))
    except ValueError as exc:
        raise ObjectError(name, f"invalid feature spec: {exc}") from None
    classes = bundle.get("classes")
    fitted = getattr(estimator.named_steps["classify"], "classes_", None)
    if fitted is None or classes != [str(c) for c in fitted]:
        raise ObjectError(name, "stored classes do not match the estimator")
    if getattr(estimator.named_steps["scale"], "n_features_in_", None) != feature_length(spec):
        raise ObjectError(name, "estimator's feature count does not match the feature spec")
    n_samples = bundle.get("n_samples")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 0:
        raise ObjectError(name, f"invalid sample count {n_samples!r}")
    return FaceModel(estimator, spec, tuple(classes), n_samples)


def recognize(model, crop, threshold=0.5):
    """Name the person in a face crop.

    Parameters
    ----------
    model : FaceModel
        The recognizer.
    crop : ndarray of shape (size, size), dtype uint8
        A face cropped with the model's spec (``size``, ``margin``,
        ``equalize``).
    threshold : float, default=0.5
        Below this probability the name is :data:`UNKNOWN`.

    Returns
    -------
    name : str
    confidence : float
        Probability of the most likely class, in [0, 1].
    """
    vector = features(crop, model.spec)
    probabilities = model.estimator.predict_proba(vector[np.newaxis])[0]
    best = int(np.argmax(probabilities))
    confidence = float(probabilities[best])
    name = str(model.estimator.classes_[best]) if confidence >= threshold else UNKNOWN
    return name, confidence


def recognize_image(model, data, name, threshold=0.5, max_pixels=MAX_PIXELS):
    """Find and name the largest face in an image object.

    Parameters
    ----------
    model : FaceModel
        The recognizer.
    data : bytes-like
        A JPEG, PNG or GIF object.
    name : str
        Its name, for error messages.
    threshold : float, default=0.5
        See :func:`recognize`.
    max_pixels : int, default=MAX_PIXELS
        See :func:`mlstorlets.sandbox.faces.image.decode_image`.

    Returns
    -------
    result : dict
        ``name`` (str), ``confidence`` (float) and ``box`` (x, y, w, h).

    Raises
    ------
    ObjectError
        If the object is not a usable image or holds no face.
    """
    spec = model.spec
    crop, box = extract_face(
        data,
        name,
        size=spec["size"],
        margin=spec["margin"],
        equalize=spec["equalize"],
        max_pixels=max_pixels,
    )
    person, confidence = recognize(model, crop, threshold=threshold)
    return {"name": person, "confidence": confidence, "box": box}
