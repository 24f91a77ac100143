"""Training, storing and applying the face recognizer over embeddings.

A model names faces from their 128-d embeddings
(:mod:`mlstorlets.sandbox.faces.embed`) with a linear SVM, and refuses to
name a face whose nearest training face is farther than its open-set
threshold: such a face is :data:`UNKNOWN`. The threshold is calibrated on
the training data itself (:func:`calibrate`): each training face's distance
to the nearest other face of the same person (how far a known person's new
photo may lie) against its distance to the nearest face of anyone else (how
near a stranger may come), and the threshold is the one that makes the
fewest errors of both kinds together.

The model file is an ``.npz`` archive of plain arrays and one JSON
document, read back with ``allow_pickle=False``: loading it runs no code.
"""

import dataclasses
import io
import json
import zipfile
import zlib

import numpy as np
from sklearn.svm import LinearSVC

from mlstorlets.sandbox import npz
from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.faces.embed import DESCRIPTOR, EMBEDDING_SIZE

__all__ = [
    "UNKNOWN",
    "DEFAULT_THRESHOLD",
    "FaceModel",
    "train",
    "calibrate",
    "pack_shard",
    "load_shard",
    "dump_model",
    "load_model",
    "recognize",
]

#: Name given to a face farther than the threshold from every known face.
UNKNOWN = "unknown"

#: dlib's customary same-person distance, used only when the training data
#: has no two faces of one person to calibrate with.
DEFAULT_THRESHOLD = 0.6

_FORMAT = "mlstorlets.sandbox.faces.model"
_VERSION = 2
_ARRAYS = ("coef", "intercept", "embeddings", "labels", "meta")
# Members an archive may list before it is refused unread.
_MAX_MEMBERS = 64

#: Faces used to calibrate the threshold at most (the distances are
#: quadratic in their number); a seeded sample of larger training sets.
MAX_CALIBRATION_FACES = 4000

#: Upper bound on the decompressed size of a model file or shard: zip
#: archives can expand a few kilobytes into gigabytes.
MAX_UNPACKED_BYTES = 512 * 2**20

# Swift refuses metadata values over 256 bytes.
_MAX_META_VALUE = 256


@dataclasses.dataclass(frozen=True, eq=False)
class FaceModel:
    """A trained recognizer with everything needed to apply it.

    Attributes
    ----------
    classes : tuple of str
        The people the model names, sorted.
    coef, intercept : ndarray
        The linear SVM (one row per class, or one row for two classes).
    embeddings : ndarray of shape (n_samples, EMBEDDING_SIZE), dtype float32
        The training faces, for the open-set rule.
    labels : ndarray of shape (n_samples,), dtype int32
        Index into ``classes`` of each training face.
    threshold : float
        Open-set threshold: a face farther than this from every training
        face is :data:`UNKNOWN`.
    calibration : dict
        How the threshold was chosen (distances' quantiles, error rates).
    """

    classes: tuple
    coef: np.ndarray
    intercept: np.ndarray
    embeddings: np.ndarray
    labels: np.ndarray
    threshold: float
    calibration: dict

    @property
    def n_samples(self):
        return len(self.labels)

    @property
    def metadata(self):
        """Summary for Swift object metadata (each value under 256 bytes)."""
        metadata = {
            "class-count": str(len(self.classes)),
            "samples": str(self.n_samples),
            "threshold": f"{self.threshold:.4f}",
            "descriptor": DESCRIPTOR,
        }
        names = json.dumps(list(self.classes), separators=(",", ":"))
        if len(names.encode()) <= _MAX_META_VALUE:
            metadata["classes"] = names
        return metadata

    def predict_index(self, X):
        """Index into ``classes`` the SVM gives each row of ``X``."""
        scores = X @ self.coef.T + self.intercept
        if len(self.classes) == 2:
            return (scores[:, 0] > 0).astype(int)
        return np.argmax(scores, axis=1)


def _check_xy(X, y, name):
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y) or X.shape[1] != EMBEDDING_SIZE:
        raise ObjectError(
            name,
            f"expected embeddings of shape (n, {EMBEDDING_SIZE}) and labels of shape (n,), "
            f"got {X.shape} and {y.shape}",
        )
    if not np.issubdtype(X.dtype, np.floating) or not np.isfinite(X).all():
        raise ObjectError(name, "embeddings must hold finite floating-point values")
    if y.dtype.kind != "U":
        raise ObjectError(name, f"labels must be a unicode string array, got dtype {y.dtype}")
    return X.astype(np.float32, copy=False), y


def _pairwise(A, B):
    squared = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * (A @ B.T)
    return np.sqrt(np.maximum(squared, 0.0))


def calibrate(X, labels, seed=0):
    """Choose the open-set threshold from the training data's distances.

    For each face: ``within``, the distance to the nearest other face of
    the same person, and ``between``, to the nearest face of anyone else. A
    threshold ``t`` rejects a known face when ``within > t`` and accepts a
    stranger when ``between <= t``; the threshold minimises the sum of the
    two rates, in the middle of the range of thresholds that reach it.

    Parameters
    ----------
    X : ndarray of shape (n_samples, EMBEDDING_SIZE)
    labels : ndarray of shape (n_samples,), int
    seed : int, default=0
        Seeds the sample of :data:`MAX_CALIBRATION_FACES` faces.

    Faces that appear more than once (the same photo stored twice) count
    once.

    Returns
    -------
    threshold : float
    calibration : dict
        Faces used, quantiles of both distances, and the two error rates at
        the threshold.
    """
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(labels)
    # A photo stored twice is one face: its copy at distance 0 says nothing
    # about how far a new photo of the person lies.
    _, first = np.unique(np.round(X, 5), axis=0, return_index=True)
    first.sort()
    X, labels = X[first], labels[first]
    if len(X) > MAX_CALIBRATION_FACES:
        keep = np.random.default_rng(seed).choice(len(X), MAX_CALIBRATION_FACES, replace=False)
        X, labels = X[keep], labels[keep]
    within = np.full(len(X), np.inf)
    between = np.full(len(X), np.inf)
    for start in range(0, len(X), 1024):
        block = _pairwise(X[start : start + 1024], X)
        rows = np.arange(start, min(start + 1024, len(X)))
        block[rows - start, rows] = np.inf  # a face is not its own neighbour
        same = labels[rows][:, None] == labels[None, :]
        within[rows] = np.where(same, block, np.inf).min(1)
        between[rows] = np.where(same, np.inf, block).min(1)
    within = within[np.isfinite(within)]
    between = between[np.isfinite(between)]
    if len(within) == 0 or len(between) == 0:
        return DEFAULT_THRESHOLD, {"faces": len(X), "rule": "default: nothing to calibrate"}
    values = np.unique(np.concatenate([within, between]))
    candidates = np.concatenate([[values[0] / 2], (values[:-1] + values[1:]) / 2, [values[-1]]])
    rejected = (within[None, :] > candidates[:, None]).mean(1)
    accepted = (between[None, :] <= candidates[:, None]).mean(1)
    errors = rejected + accepted
    best = np.flatnonzero(errors == errors.min())
    # The first run of equally good thresholds; its middle is the farthest
    # from both kinds of error.
    run = best[: 1 + np.argmax(np.append(np.diff(best) > 1, True))]
    threshold = float((candidates[run[0]] + candidates[run[-1]]) / 2)
    calibration = {
        "faces": int(len(X)),
        "rule": "min(rejected known + accepted stranger) over nearest-face distances",
        "within": [round(float(q), 4) for q in np.quantile(within, [0.5, 0.95, 1.0])],
        "between": [round(float(q), 4) for q in np.quantile(between, [0.0, 0.05, 0.5])],
        "rejected": round(float((within > threshold).mean()), 4),
        "accepted": round(float((between <= threshold).mean()), 4),
    }
    return threshold, calibration


def train(X, y, C=1.0, seed=0):
    """Fit a recognizer on embeddings held in memory.

    Parameters
    ----------
    X : array-like of shape (n_samples, EMBEDDING_SIZE)
        Face embeddings, from :func:`~mlstorlets.sandbox.faces.embed.describe`.
    y : array-like of str, shape (n_samples,)
        The person of each face.
    C : float, default=1.0
        The linear SVM's regularisation.
    seed : int, default=0

    Returns
    -------
    model : FaceModel

    Raises
    ------
    ObjectError
        If there are fewer than two people: a recognizer needs someone to
        tell apart.
    """
    X, y = _check_xy(X, np.asarray(y, dtype=str), "training set")
    classes, labels = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        found = f"only {str(classes[0])!r}" if len(classes) else "none"
        raise ObjectError(
            "training set",
            f"training needs faces of at least two people, found {found} "
            f"({len(y)} face(s)); add labelled photos of another person",
        )
    svm = LinearSVC(C=C, random_state=seed).fit(X, labels)
    threshold, calibration = calibrate(X, labels, seed=seed)
    return FaceModel(
        classes=tuple(str(c) for c in classes),
        coef=np.asarray(svm.coef_, dtype=np.float64),
        intercept=np.asarray(svm.intercept_, dtype=np.float64),
        embeddings=X,
        labels=labels.astype(np.int32),
        threshold=threshold,
        calibration=calibration,
    )


def recognize(model, embedding, threshold=None):
    """Name the person of a face embedding.

    Parameters
    ----------
    model : FaceModel
    embedding : ndarray of shape (EMBEDDING_SIZE,)
    threshold : float, optional
        Overrides the model's calibrated open-set threshold.

    Returns
    -------
    name : str
        The SVM's person, or :data:`UNKNOWN` when the nearest training face
        is farther than the threshold.
    confidence : float
        ``1 - d / (2 * threshold)`` clipped to [0, 1], ``d`` the distance to
        the nearest training face of the named person (of anyone, for
        ``unknown``): 1 for an identical face, 0.5 at the threshold.
    distance : float
        Distance to the nearest training face.
    """
    threshold = model.threshold if threshold is None else float(threshold)
    vector = np.asarray(embedding, dtype=np.float32)[np.newaxis]
    distances = np.linalg.norm(model.embeddings - vector, axis=1)
    nearest = float(distances.min())
    best = int(model.predict_index(vector.astype(np.float64))[0])
    if nearest > threshold:
        name, d = UNKNOWN, nearest
    else:
        name, d = model.classes[best], float(distances[model.labels == best].min())
    confidence = float(np.clip(1.0 - d / (2.0 * threshold), 0.0, 1.0))
    return name, confidence, nearest


def pack_shard(X, y):
    """Serialise a block of training embeddings as ``.npz`` bytes.

    Parameters
    ----------
    X : array-like of shape (n_samples, EMBEDDING_SIZE)
        Stored as float32.
    y : array-like of str, shape (n_samples,)
        Stored as a unicode array, so loading needs no pickle.

    Returns
    -------
    shard : bytes
    """
    X, y = _check_xy(X, np.asarray(y, dtype=str), "shard")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, X=X, y=y)
    return buffer.getvalue()


def _arrays(data, name, what, expected):
    """The arrays of the ``.npz`` ``data``, which must hold exactly the
    members ``expected`` (names without ``.npy``); read by the bounded
    reader, never by ``np.load``."""
    archive = npz.open_archive(io.BytesIO(data), name, what, _MAX_MEMBERS, MAX_UNPACKED_BYTES)
    with archive:
        members = {member.filename: member for member in archive.infolist()}
        if set(members) != {key + ".npy" for key in expected}:
            return None, sorted(members)
        arrays = {key: npz.read_member(archive, members[key + ".npy"], name) for key in expected}
    return arrays, None


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
    try:
        arrays, found = _arrays(bytes(data), name, "training shard", ("X", "y"))
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ObjectError(name, f"corrupt training shard ({exc})") from None
    if arrays is None:
        raise ObjectError(name, f"a shard holds exactly X.npy and y.npy, found {found}")
    X, y = arrays["X"], arrays["y"]
    if X.dtype != np.float32:
        raise ObjectError(name, f"shard features must be float32, got {X.dtype}")
    return _check_xy(X, y, name)


def dump_model(model):
    """Serialise a model as ``.npz`` bytes: arrays and one JSON document.

    Parameters
    ----------
    model : FaceModel

    Returns
    -------
    data : bytes
        Read it back with :func:`load_model`.
    """
    meta = {
        "format": _FORMAT,
        "version": _VERSION,
        "descriptor": DESCRIPTOR,
        "classes": list(model.classes),
        "threshold": float(model.threshold),
        "calibration": model.calibration,
    }
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        coef=np.asarray(model.coef, dtype=np.float64),
        intercept=np.asarray(model.intercept, dtype=np.float64),
        embeddings=np.asarray(model.embeddings, dtype=np.float32),
        labels=np.asarray(model.labels, dtype=np.int32),
        meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
    )
    return buffer.getvalue()


def load_model(data, name):
    """Load a model written by :func:`dump_model`, without running its code.

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
        If the object is a pickle, not a model archive, or not a consistent
        face model of this version.
    """
    if not data:
        raise ObjectError(name, "empty object, expected a face model")
    data = bytes(data)
    if data[:1] == b"\x80":
        raise ObjectError(name, "is a pickle; only .npz face models are accepted")
    try:
        arrays, found = _arrays(data, name, "face model (.npz)", _ARRAYS)
        if arrays is None:
            raise ObjectError(
                name,
                f"not a face model of this version: it holds {found[:8]}, "
                f"expected {sorted(a + '.npy' for a in _ARRAYS)} (train it again)",
            )
        meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
    except ObjectError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, RecursionError) as exc:
        raise ObjectError(name, f"corrupt face model ({exc})") from None
    return _check_model(arrays, meta, name)


def _check_model(arrays, meta, name):
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise ObjectError(name, "not a face model file")
    if meta.get("version") != _VERSION:
        raise ObjectError(name, f"unsupported face model version {meta.get('version')!r}")
    if meta.get("descriptor") != DESCRIPTOR:
        raise ObjectError(name, f"model of embeddings {meta.get('descriptor')!r}, not {DESCRIPTOR}")
    classes = meta.get("classes")
    if not (
        isinstance(classes, list)
        and len(classes) >= 2
        and all(isinstance(c, str) for c in classes)
        and classes == sorted(set(classes))
    ):
        raise ObjectError(name, "model classes must be a sorted list of two or more names")
    threshold = meta.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ObjectError(name, f"invalid threshold {threshold!r}")
    if not 0 < threshold <= 2:
        raise ObjectError(name, f"threshold {threshold!r} outside (0, 2]")
    rows = 1 if len(classes) == 2 else len(classes)
    coef, intercept = arrays["coef"], arrays["intercept"]
    embeddings, labels = arrays["embeddings"], arrays["labels"]
    if (
        coef.shape != (rows, EMBEDDING_SIZE)
        or intercept.shape != (rows,)
        or embeddings.ndim != 2
        or embeddings.shape[1:] != (EMBEDDING_SIZE,)
        or embeddings.dtype != np.float32
        or labels.shape != (len(embeddings),)
        or labels.dtype != np.int32
        or len(labels) == 0
    ):
        raise ObjectError(name, "model arrays have inconsistent shapes or types")
    if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
        raise ObjectError(name, "model holds non-finite coefficients")
    if not np.isfinite(embeddings).all() or labels.min() < 0 or labels.max() >= len(classes):
        raise ObjectError(name, "model holds invalid training faces")
    calibration = meta.get("calibration")
    return FaceModel(
        classes=tuple(classes),
        coef=coef.astype(np.float64),
        intercept=intercept.astype(np.float64),
        embeddings=embeddings,
        labels=labels,
        threshold=float(threshold),
        calibration=calibration if isinstance(calibration, dict) else {},
    )
