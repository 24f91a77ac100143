"""Mini-batches of rows and the checks every reader applies to them: the
columns split into features, label and weight, the bounds of
:data:`~mlstorlets.sandbox.incremental.options.LIMITS`, finite values."""

import numpy as np
import scipy.sparse

from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.incremental.options import extra_columns, refusal


class Batch:
    """Rows of one mini-batch.

    Attributes
    ----------
    X : ndarray of shape (n, n_features), float64
    y : ndarray of shape (n,)
    sample_weight : ndarray of shape (n,) or None
    lines : ndarray of shape (n,) or None
        1-based line numbers of the rows, for text objects.
    start : int
        Index of the batch's first row in the object.
    """

    def __init__(self, X, y, sample_weight, lines, start):
        self.X = X
        self.y = y
        self.sample_weight = sample_weight
        self.lines = lines
        self.start = start

    def where(self, i):
        """Words locating row ``i`` of the batch in its object."""
        if self.lines is not None:
            return f"line {int(self.lines[i])}"
        return f"row {self.start + i}"


def split_columns(arr, n_columns, options, name, where):
    """Split a 2-D float array (or a sparse matrix) into X, y, w according to
    the column options."""
    label = options.label_column
    drop = []
    if label is not None:
        if not -n_columns <= label < n_columns:
            raise ObjectError(name, f"{where}: label_column {label} is outside {n_columns} columns")
        label %= n_columns
        drop.append(label)
    weight = options.weight_column
    if weight is not None:
        if not -n_columns <= weight < n_columns or weight % n_columns in drop:
            raise ObjectError(
                name, f"{where}: weight_column {weight} is invalid for {n_columns} columns"
            )
        weight %= n_columns
        drop.append(weight)
    keep = [c for c in range(n_columns) if c not in drop]
    if scipy.sparse.issparse(arr):
        # A sparse matrix (scipy.sparse.save_npz): the label and weight
        # columns made dense, the features kept sparse.
        X = arr[:, keep]

        def column(c):
            return arr[:, [c]].toarray().ravel()

    else:
        if keep and keep == list(range(keep[0], keep[-1] + 1)):
            # the features are adjacent (the label first or last): one strided copy
            X = np.ascontiguousarray(arr[:, keep[0] : keep[-1] + 1])
        else:
            X = np.take(arr, keep, axis=1)

        def column(c):
            return arr[:, c].copy()

    return (
        X,
        None if label is None else column(label),
        None if weight is None else column(weight),
    )


def check_finite(batch, name):
    for what, values in (
        ("feature", batch.X),
        ("label", batch.y),
        ("sample weight", batch.sample_weight),
    ):
        if values is None or values.dtype.kind not in "fc":
            continue
        if scipy.sparse.issparse(values):
            values = values.tocoo()
            bad = ~np.isfinite(values.data)
            if bad.any():
                row = int(values.row[np.argmax(bad)])
                raise ObjectError(name, f"{batch.where(row)}: {what} is NaN or infinite")
            continue
        if np.isfinite(values.sum()):
            # NaN or infinity anywhere makes the sum so; a sum that
            # overflowed over finite values is checked value by value
            continue
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise ObjectError(name, f"{batch.where(row)}: {what} is NaN or infinite")
    if batch.sample_weight is not None and (batch.sample_weight < 0).any():
        row = int(np.argmax(batch.sample_weight < 0))
        raise ObjectError(name, f"{batch.where(row)}: negative sample weight")


def check_columns(n_columns, options, name, where):
    n_features = n_columns - extra_columns(options)
    if n_features > options.max_features:
        raise refusal(name, f"{where}: {n_features} features", "max_features", options)


def check_rows(n_rows, options, name):
    if n_rows > options.max_rows:
        raise refusal(name, f"{n_rows} rows", "max_rows", options)


def check_batch(n_rows, n_columns, options, name, where):
    """Refuse a mini-batch whose float64 values would pass max_batch_bytes."""
    if n_rows * n_columns * 8 > options.max_batch_bytes:
        raise refusal(
            name,
            f"{where}: a mini-batch of {n_rows} rows x {n_columns} columns "
            f"({n_rows * n_columns * 8} bytes)",
            "max_batch_bytes",
            options,
            "; lower batch_size",
        )
