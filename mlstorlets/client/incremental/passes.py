"""The passes of the remote estimators, as plain functions: each call's
parameters and payload, a pass of ``partial_fit``, ``score`` or class
discovery over objects through a transport, and the epochs of
``remote_fit``.  :mod:`mlstorlets.client.incremental.mixin` is their
public face; ``kind`` is the estimator class a state must be
(:func:`mlstorlets.sandbox.incremental.state.kind_of`).
"""

import sys
import time

import numpy as np

from mlstorlets.client.errors import StorletFailed, UsageError
from mlstorlets.sandbox import protocol
from mlstorlets.sandbox.incremental import data, state, training


def request_params(op, data_options, extra=None):
    """The parameters of an ``op`` call, the data options checked."""
    params = {"op": op}
    for key, value in (data_options or {}).items():
        if key not in data.OPTIONS:
            raise UsageError(f"unknown data option {key!r}; expected one of {sorted(data.OPTIONS)}")
        if value is not None:
            params[key] = str(value)
    params.update(extra or {})
    return params


def object_weights(uris, sample_weight):
    """{uri: (object weight, row weights or None)} from ``sample_weight``."""
    if sample_weight is None:
        return {}
    if not isinstance(sample_weight, dict):
        if len(uris) != 1:
            raise UsageError(
                f"an array of sample weights is for one object; {len(uris)} "
                "objects given (pass a dict of URI to weights)"
            )
        sample_weight = {uris[0]: sample_weight}
    unknown = set(sample_weight) - set(uris)
    if unknown:
        raise UsageError(f"sample weights for objects not in the source: {sorted(unknown)}")
    weights = {}
    for uri, value in sample_weight.items():
        if np.ndim(value) == 0:
            weight = float(value)
            if not np.isfinite(weight) or weight < 0:
                raise UsageError(f"sample weight of {uri} must be finite and >= 0")
            weights[uri] = (weight, None)
        else:
            array = np.asarray(value, dtype=np.float64)
            if array.ndim != 1 or not np.all(np.isfinite(array)) or (array < 0).any():
                raise UsageError(f"sample weights of {uri} must be 1-D, finite and >= 0")
            weights[uri] = (1.0, array)
    return weights


def calls_of(transport, uris, params, weights):
    """[(entries, row weights or None)] of each invocation, in order: an
    object with an array of weights is called alone."""
    calls, run = [], []

    def flush():
        for group in transport.plan(run, params) if run else []:
            calls.append(([(u, weights.get(u, (1.0, None))[0]) for u in group], None))
        run.clear()

    for uri in uris:
        array = weights.get(uri, (1.0, None))[1]
        if array is None:
            run.append(uri)
            continue
        flush()
        calls.append(([(uri, 1.0)], array))
    flush()
    return calls


def payload_of(transport, entries, blob, classes=None, sample_weight=None):
    """The state sent to one call over ``entries`` (and their weights)."""
    job = None
    if len(entries) > 1:
        job = [[uri, float(w), transport.size_of(uri)] for uri, w in entries]
    return state.pack(blob, classes=classes, sample_weight=sample_weight, job=job)


def checked_answer(kind, where, body, metadata, sent):
    """The storlet's new state, checked to continue ``sent``."""
    new = state.loads(body, name=where, kind=kind)
    if repr(sorted(new.get_params().items())) != repr(sorted(sent.get_params().items())):
        raise StorletFailed(where, "the storlet returned a state for other hyper-parameters")
    if not hasattr(new, "n_features_in_"):
        raise StorletFailed(where, "the storlet returned an unfitted state")
    if hasattr(sent, "n_features_in_") and new.n_features_in_ != sent.n_features_in_:
        raise StorletFailed(where, "the storlet changed the number of features")
    if hasattr(sent, "classes_") and not np.array_equal(new.classes_, sent.classes_):
        raise StorletFailed(where, "the storlet returned other classes")
    try:
        report = protocol.storlet_json(metadata[training.REPORT_KEY.lower()])
        if not isinstance(report["n_samples"], int) or report["n_samples"] < 1:
            raise ValueError("no samples")
    except (KeyError, ValueError, TypeError) as exc:
        raise StorletFailed(where, f"the storlet's report is malformed ({exc})") from None
    return new, report


def train_pass(kind, transport, uris, blob, params, weights, classes=None, bar=None):
    """partial_fit over ``uris`` in order; the final state (bytes, and
    decoded), the rows trained and the progressive score sums."""
    current = state.loads(blob, kind=kind)
    n_samples, progressive = 0, None
    for entries, rows in calls_of(transport, uris, params, weights):
        first = not hasattr(state.final_of(current), "n_features_in_")
        payload = payload_of(transport, entries, blob, classes if first else None, rows)
        where = (
            entries[0][0] if len(entries) == 1 else f"{entries[0][0]} (and {len(entries) - 1} more)"
        )
        metadata, body = transport.call(entries, params, payload)
        current, report = checked_answer(kind, where, body, metadata, current)
        if first and classes is not None and not np.array_equal(current.classes_, classes):
            raise StorletFailed(where, "the storlet returned other classes")
        blob = body
        n_samples += report["n_samples"]
        if report.get("progressive"):
            progressive = (
                report["progressive"]
                if progressive is None
                else training.merge_sums(progressive, report["progressive"])
            )
        if bar is not None:
            bar.update(len(entries))
    return blob, current, n_samples, progressive


def score_pass(transport, uris, blob, params, weights):
    """The score of ``blob`` over ``uris``, from the calls' partial sums."""
    total = None
    for entries, rows in calls_of(transport, uris, params, weights):
        payload = payload_of(transport, entries, blob, sample_weight=rows)
        _, body = transport.call(entries, params, payload)
        try:
            sums = protocol.storlet_json(body)
            if sums.get("format") != training.SCORE_FORMAT:
                raise ValueError("not a score")
            total = sums if total is None else training.merge_sums(total, sums)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StorletFailed(
                entries[0][0], f"the storlet's score is malformed ({exc})"
            ) from None
    return training.final_score(total)


def discover_classes(transport, uris, params):
    """Classes over all objects (one 'labels' call per group)."""
    counts = {}
    for entries, _ in calls_of(transport, uris, params, {}):
        _, body = transport.call(entries, params, payload_of(transport, entries, None))
        try:
            answer = protocol.storlet_json(body)
            if answer.get("format") != training.LABELS_FORMAT:
                raise ValueError("not a labels answer")
            pairs = list(zip(answer["labels"], answer["counts"], strict=True))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StorletFailed(
                entries[0][0], f"the storlet's labels are malformed ({exc})"
            ) from None
        for label, count in pairs:
            counts[label] = counts.get(label, 0) + int(count)
    classes = np.array(sorted(counts))
    if classes.dtype.kind == "f" and np.all(classes == np.round(classes)):
        # text objects carry no type: integral labels become ints
        classes = classes.astype(np.int64)
    return classes


def fit_transformers(kind, transport, uris, blob, params, weights, n_steps, verbose):
    """A pipeline's first ``n_steps`` (its transformers) trained in turn,
    one pass of ``partial_fit`` each over ``uris`` in their order, each on
    what the steps before it output; the new state."""
    for step in range(n_steps):
        started = time.monotonic()
        step_params = dict(params, step=str(step))
        blob, _, n, _ = train_pass(kind, transport, uris, blob, step_params, weights)
        if verbose:
            print(f"-- Step {step}, {n} samples, {time.monotonic() - started:.2f} s", flush=True)
    return blob


def fit_epochs(
    kind,
    transport,
    uris,
    held,
    blob,
    params,
    score_params,
    weights,
    classes,
    *,
    epochs,
    order,
    stop,
    verbose,
    progress,
    tasks=None,
):
    """The epochs of ``remote_fit``: the objects ``uris`` in an order
    drawn from ``order`` (a RandomState; None keeps theirs), scored on
    ``held`` with ``score_params`` when given, until ``stop`` (tol,
    patience) or a callback of ``tasks``
    (:class:`~mlstorlets.client.incremental.callbacks.FitTasks`) says so.
    Returns (final estimator, history)."""
    history, best, stale, final = [], -np.inf, 0, None
    epoch_bar = progress_bar(progress, epochs, "epochs", "epoch")
    try:
        for epoch in range(1, epochs + 1):
            started = time.monotonic()
            if tasks is not None:
                tasks.epoch_begin()
            visit = list(uris) if order is None else [uris[i] for i in order.permutation(len(uris))]
            object_bar = progress_bar(progress, len(visit), f"epoch {epoch}", "obj")
            try:
                blob, final, n, progressive = train_pass(
                    kind, transport, visit, blob, params, weights, classes, object_bar
                )
            finally:
                if object_bar is not None:
                    object_bar.close()
            record = {
                "epoch": epoch,
                "n_samples": n,
                "train_score": None,
                "validation_score": None,
            }
            if progressive is not None and progressive["n"]:
                record["train_score"] = training.final_score(progressive)
            if score_params is not None:
                record["validation_score"] = score_pass(
                    transport, held, blob, score_params, weights
                )
            record["seconds"] = time.monotonic() - started
            history.append(record)
            if verbose:
                print(epoch_line(record), flush=True)
            if epoch_bar is not None:
                epoch_bar.update(1)
            if tasks is not None and tasks.epoch_end(record, final):
                break
            score = record["validation_score" if score_params is not None else "train_score"]
            if stop is not None and score is not None:
                tol, patience = stop
                stale = stale + 1 if score < best + tol else 0
                best = max(best, score)
                if stale >= patience:
                    break
    finally:
        if epoch_bar is not None:
            epoch_bar.close()
    return final, history


def progress_bar(enabled, total, label, unit):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit=unit, file=sys.stderr, leave=False)


def epoch_line(record):
    parts = [f"-- Epoch {record['epoch']}", f"{record['n_samples']} samples"]
    if record["train_score"] is not None:
        parts.append(f"train score {record['train_score']:.6g}")
    if record["validation_score"] is not None:
        parts.append(f"validation score {record['validation_score']:.6g}")
    parts.append(f"{record['seconds']:.2f} s")
    return ", ".join(parts)
