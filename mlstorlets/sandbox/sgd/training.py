"""What the SGD storlet computes, as pure functions of its inputs.

:func:`run` takes the storlet's input files and string parameters and returns
the output metadata and body; the storlet class only moves bytes. Operations
(parameter ``op``):

``partial_fit``
    Rebuild the estimator from the state, call scikit-learn's
    ``partial_fit`` on each mini-batch of the object in order, return the new
    state. Its ``report`` holds the sums :meth:`remote_fit` needs for its
    stopping rule: ``objective`` (one sum per one-vs-rest problem, see
    :func:`objective_sums`; null with parameter ``objective=0``) and
    ``n_samples``.
``score``
    Return JSON sums that combine across objects: weighted correct count and
    weight sum for a classifier; weighted SSE, weight sum, weighted mean and
    weighted sum of squared deviations of ``y`` for a regressor.
``labels``
    Return JSON with the distinct labels, their counts, the number of rows and
    of features, for :meth:`remote_fit` to find ``classes`` and
    ``class_weight='balanced'`` weights.

One invocation reads one object or a *group* of objects, in order, as if
each had been read by its own invocation but with the model kept in memory
between them (one round trip instead of one per object).

* One object: parameter ``name``; the state arrives either in parameters
  ``state_parts`` and ``state_0`` … (URL-safe base64 chunks) or, when too
  big for the request, as the second input file (an extra resource).
* A group: parameter ``job`` is the JSON list of the inputs,
  ``[[name, object_weight, bytes or null], ...]``, and the state rides in
  ``state_parts`` as above; input files are the data objects in order.  When
  that is too big for the request, ``job=resource`` and the second input
  file holds ``<JSON list>\n<state>``, the data objects being the first
  and the third onwards.  The engine passes extra resources on the proxy, so
  a group runs there.  ``bytes`` (from the client's listing) is checked
  against what was read, so an object that vanished or changed under the
  fit is refused rather than trained on an error page.
"""

import base64
import binascii
import fcntl
import io
import json
import math
import os
import platform
import stat

import numpy as np

from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.invocation import float_param, int_param
from mlstorlets.sandbox.sgd import data, state

OPERATIONS = ("partial_fit", "score", "labels")
SCORE_FORMAT = "mlstorlets.sgd-score"
LABELS_FORMAT = "mlstorlets.sgd-labels"
MAX_LABELS = 10000
#: Bytes of a state the storlet reads: default and hard maximum (parameter
#: ``max_state_bytes``).  A 3-class, 1M-feature averaged state is 72 MB.
MAX_STATE_BYTES = (128 << 20, 1 << 30)
#: Longest ``job`` list, in bytes of JSON.
MAX_JOB_BYTES = 1 << 20
RESOURCE = "resource"


def encode_state_params(blob, chunk_size):
    """Storlet parameters carrying ``blob``, in chunks of ``chunk_size`` characters."""
    text = base64.urlsafe_b64encode(blob).decode("ascii")
    chunks = [text[i:i + chunk_size] for i in range(0, len(text), chunk_size)] or [""]
    params = {"state_parts": str(len(chunks))}
    params.update({f"state_{i}": c for i, c in enumerate(chunks)})
    return params


def decode_state_params(params):
    """Inverse of :func:`encode_state_params`; None when the state is not in ``params``."""
    if "state_parts" not in params:
        return None
    try:
        parts = int(params["state_parts"])
        text = "".join(params[f"state_{i}"] for i in range(parts))
        return base64.urlsafe_b64decode(text.encode("ascii"))
    except (ValueError, KeyError, binascii.Error) as exc:
        raise ObjectError("model state", f"bad state parameters ({exc})") from None


def _read_bounded(f, limit, name, what):
    chunks, n = [], 0
    while True:
        chunk = f.read(min(1 << 20, limit + 1 - n))
        if not chunk:
            return b"".join(chunks)
        n += len(chunk)
        if n > limit:
            raise ObjectError(name, f"{what} is over max_state_bytes={limit} bytes")
        chunks.append(chunk)


#: Linux's fcntl command to resize a pipe (not in Python's fcntl before 3.10
#: on every platform), and the size asked for: the default pipe-max-size.
F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20


def _widen_pipe(source):
    """Let the engine write up to 1 MiB ahead into an input pipe.

    On the proxy, the engine feeds each input from its event loop through a
    blocking write to a 64 KiB pipe: every 64 KiB the proxy process waits
    for this one to read, a pair of process switches.  A pipe's size
    belongs to the pipe, so the reading end may set it.  Not a pipe, or not
    allowed: left as is.
    """
    try:
        fd = source.fileno()
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        pass


class _Counted:
    """A storlet input that counts the bytes read from it."""

    def __init__(self, source):
        self._source = source
        self.n_bytes = 0

    def read(self, size=-1):
        data = self._source.read(size)
        self.n_bytes += len(data)
        return data

    def get_metadata(self):
        return self._source.get_metadata()


class Input:
    """One data object of an invocation: its name, weight, expected size, file."""

    def __init__(self, name, weight, size, file):
        self.name = name
        self.weight = weight
        self.size = size
        _widen_pipe(file)
        self.file = _Counted(file)

    def batches(self, params):
        options = data.DataOptions.from_sources(params, self.file.get_metadata(), self.name)
        yield from data.iter_batches(self.file, options, self.name)
        if self.size is not None:
            while self.file.read(1 << 20):
                pass
            if self.file.n_bytes != self.size:
                raise ObjectError(self.name, f"read {self.file.n_bytes} bytes where the "
                                             f"listing said {self.size}: the object "
                                             "changed or vanished during the call")


def encode_job(inputs):
    """The ``job`` JSON of a group: ``inputs`` is a list of (name, weight, bytes)."""
    return json.dumps([[n, float(w), None if b is None else int(b)] for n, w, b in inputs],
                      separators=(",", ":"))


def decode_job(text, n_files):
    """Inverse of :func:`encode_job`, checked against the number of data files."""
    try:
        inputs = json.loads(text)
        if not isinstance(inputs, list) or len(inputs) != n_files:
            raise ValueError(f"{n_files} data inputs")
        for entry in inputs:
            name, weight, size = entry
            if (not isinstance(name, str) or not isinstance(weight, (int, float))
                    or not math.isfinite(weight) or weight < 0
                    or not (size is None or (isinstance(size, int) and size >= 0))):
                raise ValueError(f"bad entry {entry!r}")
    except (ValueError, TypeError) as exc:
        raise ObjectError("job", f"bad job parameter ({exc})") from None
    return [tuple(entry) for entry in inputs]


def read_inputs(in_files, params):
    """The data inputs of an invocation and its state blob (or None).

    Returns
    -------
    inputs : list of Input
    blob : bytes or None
    via : {'parameters', 'extra-resource'}
    """
    limit = int_param(params, "max_state_bytes", MAX_STATE_BYTES[0], 1, MAX_STATE_BYTES[1],
                      params.get("name") or "job")
    job = params.get("job")
    blob = decode_state_params(params)
    via = "parameters"
    if job is None:
        name = params.get("name") or "object"
        weight = float_param(params, "object_weight", 1.0, name=name)
        if weight < 0:
            raise ObjectError(name, "object_weight must be >= 0")
        if blob is None and len(in_files) > 1:
            blob, via = _read_bounded(in_files[1], limit, name, "the state"), "extra-resource"
        return [Input(name, weight, None, in_files[0])], blob, via
    files = list(in_files)
    if job == RESOURCE:
        if len(files) < 2:
            raise ObjectError("job", "job=resource but no job input")
        text = _read_bounded(files.pop(1), limit + MAX_JOB_BYTES, "job", "the job")
        job, _, rest = text.partition(b"\n")
        try:
            job = job.decode("utf-8")
        except UnicodeDecodeError:
            raise ObjectError("job", "the job is not UTF-8") from None
        blob, via = (rest or None), "extra-resource"
    elif len(job) > MAX_JOB_BYTES:
        raise ObjectError("job", f"the job is over {MAX_JOB_BYTES} bytes")
    entries = decode_job(job, len(files))
    if blob is not None and len(blob) > limit:
        raise ObjectError("model state", f"the state is over max_state_bytes={limit} bytes")
    return [Input(n, w, b, f) for (n, w, b), f in zip(entries, files)], blob, via


def _weights(batch, object_weight):
    if batch.sample_weight is None:
        return np.full(batch.X.shape[0], object_weight)
    return batch.sample_weight * object_weight


def _check_labels(classes, batch, name):
    if classes is None:
        return
    if batch.y.dtype.kind == "U" and classes.dtype.kind != "U":
        raise ObjectError(name, f"{batch.where(0)}: label {batch.y[0].item()!r} is not a number "
                                "but the classes are")
    bad = ~np.isin(batch.y, classes)
    if bad.any():
        row = int(np.argmax(bad))
        raise ObjectError(name, f"{batch.where(row)}: label {batch.y[row].item()!r} is not one of "
                                f"the classes {classes.tolist()}")


def pointwise_loss(estimator, loss, target, raw):
    """The loss of each row, as scikit-learn's SGD computes it (``cy_loss``).

    scikit-learn's common losses (``log_loss``, ``squared_error``,
    ``huber``) compute it vectorized with ``loss.loss``. The SGD-only ones
    (hinge, squared hinge, perceptron, modified Huber, the epsilon-insensitive
    losses) inherit a ``loss`` method that writes nothing, so their formulas
    from ``sklearn.linear_model._sgd_fast`` are applied here.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if not hasattr(loss, "py_loss"):
            out = np.empty_like(raw)
            loss.loss(target, raw, None, out)
            return out
        name = estimator.loss
        args = estimator.loss_functions[name][1:]
        if name in ("epsilon_insensitive", "squared_epsilon_insensitive"):
            args = (estimator.epsilon,)
        z = raw * target
        if name in ("hinge", "perceptron"):
            return np.maximum(args[0] - z, 0.0)
        if name == "squared_hinge":
            return np.maximum(args[0] - z, 0.0) ** 2
        if name == "modified_huber":
            return np.where(z >= 1.0, 0.0, np.where(z >= -1.0, (1.0 - z) ** 2, -4.0 * z))
        if name == "epsilon_insensitive":
            return np.maximum(np.abs(target - raw) - args[0], 0.0)
        if name == "squared_epsilon_insensitive":
            return np.maximum(np.abs(target - raw) - args[0], 0.0) ** 2
        # a loss this module does not know: scikit-learn's scalar version
        return np.fromiter((loss.py_loss(p, t) for p, t in zip(raw, target)),
                           dtype=np.float64, count=len(raw))


def objective_sums(estimator, X, y, classes):
    """Sum over rows of scikit-learn's SGD objective, before training on them.

    scikit-learn's ``fit`` stops on the mean over an epoch of ``loss(y, p) +
    alpha * penalty(w)`` where ``p`` and ``w`` are taken just before each
    sample's update. Within the storlet we cannot observe that without
    re-implementing SGD, so we evaluate the same terms with the weights
    current at the start of each mini-batch (a prequential estimate at
    mini-batch granularity). Samples are unweighted, as in scikit-learn.

    Returns
    -------
    sums : list of float
        One sum per one-vs-rest problem (one for regression and binary).
    """
    n_features = X.shape[1]
    loss = estimator._get_loss_function(estimator.loss)
    if classes is not None:
        n_out = 1 if len(classes) == 2 else len(classes)
    else:
        n_out = 1
    if getattr(estimator, "coef_", None) is None:
        W = np.zeros((n_out, n_features))
        b = np.zeros(n_out)
    elif estimator.average:
        # scikit-learn's updates and losses use the standard weights
        W = np.asarray(estimator._standard_coef).reshape(n_out, n_features)
        b = np.asarray(estimator._standard_intercept).reshape(n_out)
    else:
        W = np.asarray(estimator.coef_).reshape(n_out, n_features)
        b = np.asarray(estimator.intercept_).reshape(n_out)
    penalty = estimator.penalty
    if penalty is None or estimator.learning_rate in ("pa1", "pa2"):
        l1_ratio = None
    else:
        l1_ratio = {"l2": 0.0, "l1": 1.0}.get(penalty, estimator.l1_ratio)
    label_encode = estimator.loss == "log_loss"
    sums = []
    for i in range(n_out):
        if classes is None:
            target = np.ascontiguousarray(y, dtype=np.float64)
        else:
            positive = classes[1] if len(classes) == 2 else classes[i]
            target = np.where(y == positive, 1.0, 0.0 if label_encode else -1.0)
        raw = np.ascontiguousarray(X @ W[i] + b[i])
        total = float(pointwise_loss(estimator, loss, np.ascontiguousarray(target), raw).sum())
        if l1_ratio is not None:
            w = W[i]
            total += len(y) * estimator.alpha * (
                (1 - l1_ratio) * 0.5 * float(w @ w) + l1_ratio * float(np.abs(w).sum()))
        sums.append(total)
    return sums


def _rows(batch, object_weight, holdout, name, train):
    """X, y and weights of the batch's training (or held-out) rows."""
    X, y = batch.X, batch.y
    weights = _weights(batch, object_weight)
    if holdout is not None:
        held = data.holdout_mask(len(y), batch.start, holdout[0], holdout[1], name)
        keep = ~held if train else held
        X, y, weights = X[keep], y[keep], weights[keep]
    return X, y, weights


def _train_object(estimator, classes, batches, name, object_weight, holdout,
                  with_objective=True):
    """partial_fit ``estimator`` on one object's batches.

    Returns (objective sums, rows trained, batches trained)."""
    objective = None
    n_samples = n_batches = 0
    for batch in batches:
        X, y, weights = _rows(batch, object_weight, holdout, name, train=True)
        if not len(y):
            continue
        _check_labels(classes, batch, name)
        n_features = getattr(estimator, "n_features_in_", None)
        if n_features is not None and X.shape[1] != n_features:
            raise ObjectError(name, f"{batch.where(0)}: {X.shape[1]} features, the model "
                                    f"has {n_features}")
        if with_objective:
            sums = objective_sums(estimator, X, y, classes)
            if not all(math.isfinite(v) for v in sums):
                raise ObjectError(name, f"{batch.where(0)}: the loss overflowed; training "
                                        "diverged (try a smaller eta0 or scaled features)")
            objective = sums if objective is None else [a + b for a, b in zip(objective, sums)]
        try:
            if classes is not None:
                first = getattr(estimator, "coef_", None) is None
                estimator.partial_fit(X, y, classes=classes if first else None,
                                      sample_weight=weights)
            else:
                estimator.partial_fit(X, y, sample_weight=weights)
        except ValueError as exc:
            # scikit-learn's own refusals, e.g. floating-point overflow
            raise ObjectError(name, f"{batch.where(0)}: {exc}") from None
        n_samples += len(y)
        n_batches += 1
    if not n_samples:
        raise ObjectError(name, "no training rows (all held out)")
    return objective, n_samples, n_batches


def partial_fit(model, objects, holdout=None, with_objective=True):
    """Train ``model`` (a :class:`state.State`) with partial_fit semantics.

    Parameters
    ----------
    model : mlstorlets.sandbox.sgd.state.State
    objects : iterable of (batches, name, object_weight)
        The objects in training order: an iterable of :class:`data.Batch`,
        the object's name and the weight multiplying its rows' weights.
    holdout : (fraction, seed) or None
        Rows drawn by :func:`data.holdout_mask` are skipped.
    with_objective : bool, default=True
        Compute the objective sums of the report (None otherwise): only a
        stopping rule on the training loss needs them, and they cost about
        a quarter of the training.

    Returns
    -------
    blob : bytes
        The new state, with its ``report``.
    """
    estimator = model.build()
    classes = model.classes if model.kind == "SGDClassifier" else None
    if classes is None and model.kind == "SGDClassifier":
        raise ObjectError("model state", "the classifier's classes are unknown (pass classes=)")
    objective = None
    n_samples = n_batches = n_objects = 0
    for batches, name, object_weight in objects:
        sums, n, nb = _train_object(estimator, classes, batches, name, object_weight, holdout,
                                    with_objective)
        if with_objective:
            objective = sums if objective is None else [a + b for a, b in zip(objective, sums)]
        n_samples += n
        n_batches += nb
        n_objects += 1
    report = {"op": "partial_fit", "n_samples": n_samples, "n_batches": n_batches,
              "n_objects": n_objects,
              "objective": objective, "node": platform.node()}
    return state.dumps(estimator, report=report)


def score_sums(model, objects, holdout=None):
    """Sums over the objects' rows from which a score across objects is computed.

    ``objects`` is as for :func:`partial_fit`; with ``holdout``, only the
    held-out rows count.
    """
    if not model.fitted:
        raise ObjectError("model state", "cannot score with a model that is not fitted")
    estimator = model.build()
    classifier = model.kind == "SGDClassifier"
    sums = {"format": SCORE_FORMAT, "n": 0, "weight_sum": 0.0}
    sums.update({"correct": 0.0} if classifier else {"sse": 0.0, "mean": 0.0, "m2": 0.0})
    for batches, name, object_weight in objects:
        for batch in batches:
            X, y, weights = _rows(batch, object_weight, holdout, name, train=False)
            if not len(y):
                continue
            if X.shape[1] != estimator.n_features_in_:
                raise ObjectError(name, f"{batch.where(0)}: {X.shape[1]} features, the "
                                        f"model has {estimator.n_features_in_}")
            pred = estimator.predict(X)
            sw = float(weights.sum())
            if classifier:
                sums["correct"] += float(weights @ (pred == y))
            else:
                sums["sse"] += float(weights @ (y - pred) ** 2)
                if sw > 0:
                    mean = float(weights @ y) / sw
                    m2 = float(weights @ (y - mean) ** 2)
                    combine_moments(sums, sw, mean, m2)
            if classifier or sw <= 0:
                sums["weight_sum"] += sw
            sums["n"] += len(y)
    return sums


def combine_moments(total, weight_sum, mean, m2):
    """Merge weighted (sum, mean, M2) into ``total`` in place (Chan et al.)."""
    w_a, w_b = total["weight_sum"], weight_sum
    w = w_a + w_b
    if w <= 0:
        return total
    delta = mean - total["mean"]
    total["mean"] += delta * w_b / w
    total["m2"] += m2 + delta * delta * w_a * w_b / w
    total["weight_sum"] = w
    return total


def label_counts(objects):
    """Distinct labels with their counts, number of rows and of features."""
    counts = {}
    n_rows = 0
    n_features = None
    for batches, name, _ in objects:
        for batch in batches:
            values, c = np.unique(batch.y, return_counts=True)
            for v, k in zip(values.tolist(), c.tolist()):
                counts[v] = counts.get(v, 0) + k
            if len(counts) > MAX_LABELS:
                raise ObjectError(name, f"more than {MAX_LABELS} distinct labels; "
                                        "is this a regression target?")
            n_rows += len(batch.y)
            n_features = batch.X.shape[1]
    labels = sorted(counts)
    return {"format": LABELS_FORMAT, "labels": labels, "counts": [counts[v] for v in labels],
            "n_rows": n_rows, "n_features": n_features}


def run(in_files, params):
    """Everything the storlet does, given its input files and parameters.

    Parameters
    ----------
    in_files : list of file-like
        The data objects and, as an extra resource, the state or job (see the
        module's docstring).  Each has ``read(size)`` and ``get_metadata()``.
    params : dict of str to str

    Returns
    -------
    metadata : dict of str to str
        User metadata of the output (returned as ``X-Object-Meta-*``).
    body : bytes

    Raises
    ------
    mlstorlets.sandbox.errors.ObjectError
        Invalid state, parameters or data; nothing has been written.
    """
    op = params.get("op", "partial_fit")
    if op not in OPERATIONS:
        raise ObjectError(params.get("name") or "object",
                          f"unknown op {op!r}, expected one of {OPERATIONS}")
    inputs, blob, via = read_inputs(in_files, params)
    # Each object's options (and its metadata) are read when its turn comes.
    objects = ((i.batches(params), i.name, i.weight) for i in inputs)
    metadata = {"Mlstorlets-Op": op, "Mlstorlets-Node": platform.node(),
                "Mlstorlets-Objects": str(len(inputs))}
    if op == "labels":
        return metadata, json.dumps(label_counts(objects)).encode("utf-8")
    name = inputs[0].name
    if blob is None:
        raise ObjectError(name, "no model state: neither state parameters nor a "
                                "state object")
    metadata["Mlstorlets-State-Via"] = via
    model = state.loads(blob, name="model state")
    fraction = float_param(params, "holdout_fraction", 0.0, name=name)
    if not 0 <= fraction < 1:
        raise ObjectError(name, "holdout_fraction must be in [0, 1)")
    holdout = None
    if fraction > 0:
        holdout = (fraction, int(float_param(params, "holdout_seed", 0, name=name)))
    if op == "partial_fit":
        return metadata, partial_fit(model, objects, holdout, params.get("objective") != "0")
    return metadata, json.dumps(score_sums(model, objects, holdout)).encode("utf-8")
