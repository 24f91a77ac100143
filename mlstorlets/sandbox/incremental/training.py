"""What the estimator storlet computes, as pure functions of its inputs.

:func:`run` takes the storlet's input files and string parameters and returns
the output metadata and body; the storlet class only moves bytes, and the
client runs the very same function over objects outside the cluster.  The
model is scikit-learn's own estimator rebuilt from its state
(:mod:`mlstorlets.sandbox.incremental.state`): training is its own
``partial_fit``, prediction its own ``predict``.  Operations (parameter
``op``):

``partial_fit``
    ``partial_fit`` on each mini-batch of each object in order; the body is
    the new state, the output metadata ``Mlstorlets-Report`` a JSON report:
    ``n_samples``, ``n_batches``, ``n_objects`` and, with ``progressive=1``,
    ``progressive``: the score sums (as ``score``) of each mini-batch taken
    just before training on it, a per-epoch training score at no extra pass.
    A pipeline's steps are trained in turn on each mini-batch, or only step
    ``step`` on what the fitted steps before it output.
``score``
    JSON sums that combine across objects (:func:`score_sums`).
``labels``
    JSON with the distinct labels and their counts (for ``classes`` and
    ``class_weight='balanced'``).
``predict``, ``predict_proba``, ``decision_function``, ``transform``
    The method's output over every row of the object, as an ``.npy``.

Inputs.  The first file is the first data object.  The *payload* (state,
classes of a first call, one object's sample weights, a group's object
list: see :func:`~mlstorlets.sandbox.incremental.state.pack`) comes either
in parameters (:func:`mlstorlets.sandbox.protocol.state_parameters`) or,
with ``payload=resource``, as the second input file (the request's body,
or an extra resource),
the data objects being the first and the third onwards.  Without a job the
object is named by parameter ``name`` (or ``source``) and weighted by
``object_weight``; a job ``[[name, weight, bytes], ...]`` names each data
file, and ``bytes`` is checked against what was read, so that an object that
changed under the call is refused rather than trained on.
"""

import fcntl
import inspect
import io
import json
import os
import platform
import stat

import numpy as np
from sklearn.base import is_classifier, is_regressor

from mlstorlets.sandbox import protocol
from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.incremental import data, state
from mlstorlets.sandbox.invocation import float_param, int_param

OPERATIONS = (
    "partial_fit",
    "score",
    "labels",
    "predict",
    "predict_proba",
    "decision_function",
    "transform",
)
PREDICTIONS = OPERATIONS[3:]
SCORE_FORMAT = "mlstorlets.score"
LABELS_FORMAT = "mlstorlets.labels"
REPORT_KEY = "Mlstorlets-Report"
MAX_LABELS = 10000
RESOURCE = "resource"


def _read_bounded(f, limit, name):
    blob = data.buffered(f).read(limit + 1)
    if len(blob) > limit:
        raise ObjectError(name, f"the payload is over max_state_bytes={limit} bytes")
    return blob


#: Linux's fcntl command to resize a pipe, and the size asked for: the
#: default pipe-max-size.
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
        chunk = self._source.read(size)
        self.n_bytes += len(chunk)
        return chunk

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
                raise ObjectError(
                    self.name,
                    f"read {self.file.n_bytes} bytes where the "
                    f"listing said {self.size}: the object "
                    "changed or vanished during the call",
                )


def read_inputs(in_files, params):
    """The data inputs of an invocation and its payload.

    Returns
    -------
    inputs : list of Input
    payload : mlstorlets.sandbox.incremental.state.Payload
    via : {'parameters', 'input', None}
    """
    name = params.get("name") or params.get("source") or "object"
    limit = int_param(
        params, "max_state_bytes", state.MAX_STATE_BYTES[0], 1, state.MAX_STATE_BYTES[1], name
    )
    files = list(in_files)
    via = None
    if params.get("payload") == RESOURCE:
        if len(files) < 2:
            raise ObjectError(name, "payload=resource but no payload input")
        blob, via = _read_bounded(files.pop(1), limit, name), "input"
    else:
        try:
            blob = protocol.read_state_parameters(params, limit)
        except ValueError as exc:
            raise ObjectError(name, str(exc)) from None
        via = None if blob is None else "parameters"
    payload = state.Payload() if blob is None else state.unpack(blob, limit)
    if payload.job is None:
        weight = float_param(params, "object_weight", 1.0, 0.0, name=name)
        entries = [(name, weight, None)]
    else:
        entries = payload.job
    if len(entries) != len(files):
        raise ObjectError(name, f"{len(entries)} objects named for {len(files)} data inputs")
    if payload.sample_weight is not None and len(entries) != 1:
        raise ObjectError(name, "sample weights are for a call over one object")
    return [Input(n, w, b, f) for (n, w, b), f in zip(entries, files)], payload, via


class _RowWeights:
    """The weights of an object's rows: its rows' own, times the object's
    weight, times the caller's array (consumed batch after batch)."""

    def __init__(self, object_weight, array, name):
        self.object_weight = object_weight
        self.array = array
        self.used = 0
        self.name = name

    def __call__(self, batch):
        n = batch.X.shape[0]
        weights = batch.sample_weight
        if self.array is not None:
            if self.used + n > len(self.array):
                raise ObjectError(
                    self.name, f"more rows than the {len(self.array)} sample weights given"
                )
            part = self.array[self.used : self.used + n]
            weights = part if weights is None else weights * part
            self.used += n
        if self.object_weight != 1.0:
            weights = (
                np.full(n, self.object_weight) if weights is None else weights * self.object_weight
            )
        return weights

    def check_all_used(self):
        if self.array is not None and self.used != len(self.array):
            raise ObjectError(self.name, f"{self.used} rows for {len(self.array)} sample weights")


def _supervised(estimator):
    return is_classifier(estimator) or is_regressor(estimator)


def _kind_of_score(estimator):
    if is_classifier(estimator):
        return "accuracy"
    if is_regressor(estimator):
        return "r2"
    return "sum"


def new_sums(estimator):
    """Empty score sums for ``estimator``."""
    kind = _kind_of_score(estimator)
    sums = {"format": SCORE_FORMAT, "kind": kind, "n": 0, "weight_sum": 0.0}
    sums.update(
        {
            "accuracy": {"correct": 0.0},
            "r2": {"sse": 0.0, "mean": 0.0, "m2": 0.0},
            "sum": {"total": 0.0},
        }[kind]
    )
    return sums


def add_scores(sums, estimator, X, y, weights):
    """Add one mini-batch to ``sums``, with scikit-learn's own predictions."""
    w = np.ones(X.shape[0]) if weights is None else weights
    kind = sums["kind"]
    if kind == "accuracy":
        sums["correct"] += float(w @ (estimator.predict(X) == y))
        sums["weight_sum"] += float(w.sum())
    elif kind == "r2":
        sums["sse"] += float(w @ (y - estimator.predict(X)) ** 2)
        sw = float(w.sum())
        if sw > 0:
            mean = float(w @ y) / sw
            combine_moments(sums, sw, mean, float(w @ (y - mean) ** 2))
    else:
        # a clusterer's score is a sum over rows (minus the inertia)
        sums["total"] += float(estimator.score(X, sample_weight=weights))
        sums["weight_sum"] += float(w.sum())
    sums["n"] += X.shape[0]
    return sums


def merge_sums(total, sums):
    """Add the sums of another call to ``total`` (in place)."""
    if total["kind"] != sums["kind"]:
        raise ValueError("sums of different kinds")
    total["n"] += sums["n"]
    if total["kind"] == "r2":
        total["sse"] += sums["sse"]
        combine_moments(total, sums["weight_sum"], sums["mean"], sums["m2"])
    else:
        key = "correct" if total["kind"] == "accuracy" else "total"
        total[key] += sums[key]
        total["weight_sum"] += sums["weight_sum"]
    return total


def final_score(sums):
    """The score of the concatenated rows: accuracy, R^2 (scikit-learn's
    convention for a constant target) or a clusterer's summed score."""
    if sums["kind"] == "sum":
        return sums["total"]
    if sums["weight_sum"] <= 0:
        raise ValueError("nothing to score (no rows or zero weights)")
    if sums["kind"] == "accuracy":
        return sums["correct"] / sums["weight_sum"]
    if sums["m2"] > 0:
        return 1.0 - sums["sse"] / sums["m2"]
    return 1.0 if sums["sse"] == 0 else 0.0


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


def _fitted(estimator):
    return hasattr(estimator, "n_features_in_")


def _check_features(estimator, batch, name):
    n_features = getattr(estimator, "n_features_in_", None)
    if n_features is not None and batch.X.shape[1] != n_features:
        raise ObjectError(
            name, f"{batch.where(0)}: {batch.X.shape[1]} features, the model has {n_features}"
        )


def _labels(estimator, batch, name):
    if estimator is None or not _supervised(estimator):
        return None
    if batch.y is None:
        raise ObjectError(name, "no labels (label_column=none) for a supervised estimator")
    return batch.y


def _steps_to_train(estimator, params, name):
    """(fitted steps applied first, steps trained) for parameter ``step``:
    ``all`` (the default) trains every step on each mini-batch in turn,
    each step's output feeding the next; ``i`` trains step ``i`` of a
    pipeline on the output of the steps before it, which must be fitted."""
    parts = state.parts_of(estimator)
    if params.get("step", "all") == "all":
        return [], parts
    index = int_param(params, "step", 0, 0, len(parts) - 1, name)
    for i, part in enumerate(parts[:index]):
        if not _fitted(part):
            raise ObjectError(
                name, f"step {i} of the pipeline is not fitted: train the steps in order"
            )
    return parts[:index], [parts[index]]


def _train_one(step, X, y, weights, payload, where, final):
    kwargs = {}
    if weights is not None:
        if "sample_weight" in _signature(step.partial_fit):
            kwargs["sample_weight"] = weights
        elif step is final:
            raise ObjectError(where, f"{type(step).__name__}.partial_fit takes no sample weights")
        # A scaler without weights (MaxAbsScaler, MinMaxScaler) takes the
        # rows as they are, as scikit-learn's routing gives it none.
    if is_classifier(step) and not _fitted(step):
        if payload.classes is None:
            raise ObjectError(where, "the first partial_fit of a classifier needs its classes")
        kwargs["classes"] = payload.classes
    if y is None or not _supervised(step):
        step.partial_fit(X, **kwargs)
    else:
        step.partial_fit(X, y, **kwargs)


def partial_fit(estimator, inputs, params, payload):
    """``partial_fit`` ``estimator`` on every mini-batch of ``inputs``: each
    step of a pipeline, or the one of parameter ``step`` (see
    :func:`_steps_to_train`).

    Returns the report (see the module's docstring).
    """
    progressive = new_sums(estimator) if params.get("progressive") == "1" else None
    final = state.final_of(estimator)
    before, trained = _steps_to_train(estimator, params, inputs[0].name)
    n_samples = n_batches = 0
    for item in inputs:
        weights_of = _RowWeights(item.weight, payload.sample_weight, item.name)
        for batch in item.batches(params):
            y = _labels(final if any(s is final for s in trained) else None, batch, item.name)
            weights = weights_of(batch)
            _check_features(estimator, batch, item.name)
            try:
                if progressive is not None and _fitted(final):
                    add_scores(progressive, estimator, batch.X, y, weights)
                X = batch.X
                for step in before:
                    X = step.transform(X)
                for i, step in enumerate(trained):
                    _train_one(step, X, y, weights, payload, item.name, final)
                    if i < len(trained) - 1:
                        X = step.transform(X)
            except ValueError as exc:
                # scikit-learn's own refusals: an unknown label, overflow...
                raise ObjectError(item.name, f"{batch.where(0)}: {exc}") from None
            n_samples += batch.X.shape[0]
            n_batches += 1
        weights_of.check_all_used()
    return {
        "op": "partial_fit",
        "n_samples": n_samples,
        "n_batches": n_batches,
        "n_objects": len(inputs),
        "progressive": progressive,
        "node": platform.node(),
    }


def _signature(method):
    return inspect.signature(method).parameters


def score_sums(estimator, inputs, params, payload):
    """Score sums over the rows of ``inputs`` (see :func:`final_score`)."""
    if not _fitted(state.final_of(estimator)):
        raise ObjectError(inputs[0].name, "cannot score with a model that is not fitted")
    sums = new_sums(estimator)
    for item in inputs:
        weights_of = _RowWeights(item.weight, payload.sample_weight, item.name)
        for batch in item.batches(params):
            y = _labels(estimator, batch, item.name)
            _check_features(estimator, batch, item.name)
            add_scores(sums, estimator, batch.X, y, weights_of(batch))
        weights_of.check_all_used()
    return sums


def predictions(estimator, method, inputs, params):
    """``method``'s output over every row, as the bytes of an ``.npy``."""
    if not _fitted(state.final_of(estimator)):
        raise ObjectError(inputs[0].name, "cannot predict with a model that is not fitted")
    if not hasattr(estimator, method):
        raise ObjectError(inputs[0].name, f"{type(estimator).__name__} has no {method}")
    parts = []
    for item in inputs:
        for batch in item.batches(params):
            _check_features(estimator, batch, item.name)
            try:
                parts.append(getattr(estimator, method)(batch.X))
            except ValueError as exc:
                raise ObjectError(item.name, f"{batch.where(0)}: {exc}") from None
    out = io.BytesIO()
    np.save(out, np.concatenate(parts), allow_pickle=False)
    return out.getvalue()


def label_counts(inputs, params):
    """Distinct labels with their counts, number of rows and of features."""
    counts = {}
    n_rows = 0
    n_features = None
    for item in inputs:
        for batch in item.batches(params):
            if batch.y is None:
                raise ObjectError(item.name, "no labels (label_column=none)")
            values, c = np.unique(batch.y, return_counts=True)
            for v, k in zip(values.tolist(), c.tolist()):
                counts[v] = counts.get(v, 0) + k
            if len(counts) > MAX_LABELS:
                raise ObjectError(
                    item.name,
                    f"more than {MAX_LABELS} distinct labels; is this a regression target?",
                )
            n_rows += len(batch.y)
            n_features = batch.X.shape[1]
    labels = sorted(counts)
    return {
        "format": LABELS_FORMAT,
        "labels": labels,
        "counts": [counts[v] for v in labels],
        "n_rows": n_rows,
        "n_features": n_features,
    }


def run(in_files, params):
    """Everything the storlet does, given its input files and parameters.

    Parameters
    ----------
    in_files : list of file-like
        Each has ``read(size)`` and ``get_metadata()``.
    params : dict of str to str

    Returns
    -------
    metadata : dict of str to str
        User metadata of the output (``X-Object-Meta-*`` of the answer).
    body : bytes

    Raises
    ------
    mlstorlets.sandbox.errors.ObjectError
        Invalid state, parameters or data; nothing has been written.
    """
    op = params.get("op", "partial_fit")
    name = params.get("name") or params.get("source") or "object"
    if op not in OPERATIONS:
        raise ObjectError(name, f"unknown op {op!r}, expected one of {OPERATIONS}")
    inputs, payload, via = read_inputs(in_files, params)
    metadata = {
        "Mlstorlets-Op": op,
        "Mlstorlets-Node": platform.node(),
        "Mlstorlets-Objects": str(len(inputs)),
    }
    if via is not None:
        metadata["Mlstorlets-State-Via"] = via
    if op == "labels":
        return metadata, json.dumps(label_counts(inputs, params)).encode("utf-8")
    if payload.state is None:
        raise ObjectError(name, "no model state: neither state parameters nor a payload input")
    estimator = state.loads(payload.state)
    if op == "partial_fit":
        # The estimator's own progress lines are for no terminal here (and
        # would reach the user's when the client runs this): the client
        # prints its epochs itself.  The state goes back as it came.
        loud = [
            (p, p.verbose)
            for p in state.parts_of(estimator)
            if "verbose" in p.get_params(deep=False) and p.verbose
        ]
        for part, _ in loud:
            part.set_params(verbose=0)
        report = partial_fit(estimator, inputs, params, payload)
        for part, verbose in loud:
            part.set_params(verbose=verbose)
        metadata[REPORT_KEY] = json.dumps(report, separators=(",", ":"))
        return metadata, state.dumps(estimator)
    if op == "score":
        return metadata, json.dumps(score_sums(estimator, inputs, params, payload)).encode()
    return metadata, predictions(estimator, op, inputs, params)
