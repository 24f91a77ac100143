"""Data and comparisons shared by the estimator tests, on the client
(tests/unit/test_estimator_flows.py) and in the cluster
(tests/functional/test_estimators_cluster.py)."""

import numpy as np
from sklearn.base import clone

N, D, BATCH = 40, 5, 16


def make_parts(seed, n_parts=3, classifier=True):
    rng = np.random.RandomState(seed)
    w = rng.normal(size=D)
    parts = []
    for _ in range(n_parts):
        X = rng.rand(N, D) * 2
        score = X @ w + 0.1 * rng.normal(size=N)
        y = (
            np.digitize(score, np.percentile(score, [33, 66])).astype(np.float64)
            if classifier
            else score + 0.5
        )
        parts.append((X, y))
    return parts


def csv_bytes(X, y=None):
    rows = X if y is None else np.column_stack([X, y])
    return ("\n".join(",".join(repr(float(v)) for v in row) for row in rows) + "\n").encode()


def local_partial_fit(estimator, parts, classes=None, weights=None):
    """What a user does locally: partial_fit on the same mini-batches."""
    local = clone(estimator).to_sklearn()
    first = True
    for i, (X, y) in enumerate(parts):
        for start in range(0, len(y), BATCH):
            kwargs = {}
            if classes is not None and first:
                kwargs["classes"] = classes
            if weights is not None:
                kwargs["sample_weight"] = weights[i][start : start + BATCH]
            if type(local).__name__ == "MiniBatchKMeans":
                local.partial_fit(X[start : start + BATCH], **kwargs)
            else:
                local.partial_fit(X[start : start + BATCH], y[start : start + BATCH], **kwargs)
            first = False
    return local


def local_pipeline_fit(transformers, estimator, parts, epochs, classes=None):
    """A pipeline's steps trained locally as remote_fit trains them: each
    transformer in turn, one pass of partial_fit over every mini-batch of
    what the steps before it output, then the estimator's epochs, the parts
    in their order.  The steps, fitted in place."""

    def through(X, steps):
        for step in steps:
            X = step.transform(X)
        return X

    batches = [
        (X[start : start + BATCH], y[start : start + BATCH])
        for X, y in parts
        for start in range(0, len(y), BATCH)
    ]
    for i, step in enumerate(transformers):
        for X, _ in batches:
            step.partial_fit(through(X, transformers[:i]))
    for epoch in range(epochs):
        for j, (X, y) in enumerate(batches):
            first = classes is not None and epoch == 0 and j == 0
            estimator.partial_fit(
                through(X, transformers), y, **({"classes": classes} if first else {})
            )
    return transformers + [estimator]


def arrays_of(est):
    """Every float array an estimator holds, by name."""
    found = {}
    for key, value in vars(est).items():
        values = value if isinstance(value, list) else [value]
        for i, v in enumerate(values):
            if isinstance(v, np.ndarray) and v.dtype.kind == "f":
                found["%s[%d]" % (key, i)] = v
    return found


def max_difference(a, b):
    fa, fb = arrays_of(a), arrays_of(b)
    assert fa.keys() == fb.keys()
    assert fa, "no arrays to compare"
    return max(float(np.max(np.abs(fa[k] - fb[k]))) if fa[k].size else 0.0 for k in fa)
