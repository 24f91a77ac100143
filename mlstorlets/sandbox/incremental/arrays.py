"""``.npy`` objects, read a mini-batch at a time, and ``.npz`` archives,
read whole through the bounded reader of :mod:`mlstorlets.sandbox.npz`."""

import io
import zipfile
import zlib

import numpy as np
import scipy.sparse

from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.incremental.options import expected_columns, refusal
from mlstorlets.sandbox.incremental.rows import (
    Batch,
    check_batch,
    check_columns,
    check_rows,
    split_columns,
)
from mlstorlets.sandbox.npz import read_member, read_npy_header

# The members scipy.sparse.save_npz writes (each ".npy").
SPARSE = ("data", "indices", "indptr", "shape", "format")
SPARSE_MEMBERS = {key + ".npy" for key in SPARSE}


def npy_batches(stream, options, name):
    shape, fortran, dtype = read_npy_header(stream, name, ".npy")
    if dtype.kind not in "biuf":
        raise ObjectError(name, f".npy dtype {dtype} is not numeric")
    if len(shape) != 2:
        raise ObjectError(name, f".npy array must be 2-D, got shape {shape}")
    n_rows, n_columns = shape
    expected = expected_columns(options)
    if expected is not None and n_columns != expected:
        raise ObjectError(name, f".npy has {n_columns} columns, expected {expected}")
    check_columns(n_columns, options, name, ".npy")
    check_rows(n_rows, options, name)
    check_batch(min(options.batch_size, n_rows), n_columns, options, name, ".npy")
    row_bytes = n_columns * dtype.itemsize
    if fortran:
        # column-major: rows are not contiguous, so the array is read whole
        if n_rows * row_bytes > options.max_array_bytes:
            raise refusal(
                name,
                f"a column-major .npy of {n_rows * row_bytes} bytes",
                "max_array_bytes",
                options,
            )
        data = stream.read(n_rows * row_bytes)
        if len(data) != n_rows * row_bytes:
            raise ObjectError(name, ".npy data is truncated")
        arr = np.frombuffer(data, dtype=dtype).reshape(shape, order="F")
        for start in range(0, n_rows, options.batch_size):
            chunk = arr[start : start + options.batch_size].astype(np.float64)
            X, y, w = split_columns(chunk, n_columns, options, name, "row 0")
            yield Batch(X, y, w, None, start)
    else:
        for start in range(0, n_rows, options.batch_size):
            n = min(options.batch_size, n_rows - start)
            chunk = np.empty((n, n_columns), dtype=dtype)
            got = _read_into(stream, memoryview(chunk).cast("B"))
            if got != n * row_bytes:
                raise ObjectError(
                    name, f".npy data is truncated at row {start + got // max(row_bytes, 1)}"
                )
            chunk = chunk.astype(np.float64, copy=False)
            X, y, w = split_columns(chunk, n_columns, options, name, f"row {start}")
            yield Batch(X, y, w, None, start)
    if stream.read(1):
        raise ObjectError(name, ".npy has trailing bytes after its data")


def _read_into(stream, view):
    """Fill ``view`` from ``stream``; the number of bytes read (less at the end)."""
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def npz_member(archive, info, options, name):
    """One array of an ``.npz``, its size bounded by ``max_array_bytes``
    and its header checked against it (:func:`mlstorlets.sandbox.npz.read_member`)."""
    if info.file_size > options.max_array_bytes:
        raise refusal(
            name,
            f".npz member {info.filename} of {info.file_size} bytes uncompressed",
            "max_array_bytes",
            options,
        )
    return read_member(archive, info, name)


def _npz_arrays(stream, options, name):
    blob = stream.read(options.max_archive_bytes + 1)
    if len(blob) > options.max_archive_bytes:
        raise refusal(name, "the .npz archive", "max_archive_bytes", options, " bytes")
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            members = archive.infolist()
            if len(members) > options.max_members:
                raise refusal(name, f".npz with {len(members)} members", "max_members", options)
            by_name = {info.filename: info for info in members}
            if {"format.npy", "shape.npy"} <= set(by_name):
                return _sparse_arrays(archive, by_name, options, name)
            needed = {"X.npy"} if options.label_column is None else {"X.npy", "y.npy"}
            missing = needed - set(by_name)
            if missing:
                raise ObjectError(name, f".npz lacks array(s) {sorted(m[:-4] for m in missing)}")
            return [
                None if key not in by_name else npz_member(archive, by_name[key], options, name)
                for key in ("X.npy", "y.npy", "sample_weight.npy")
            ]
    except (
        ValueError,
        OSError,
        EOFError,
        zlib.error,
        zipfile.BadZipFile,
        NotImplementedError,
    ) as exc:
        raise ObjectError(name, f"unreadable .npz ({exc})") from None


def _sparse_arrays(archive, by_name, options, name):
    """(X, y, sample_weight) of a matrix written by ``scipy.sparse.save_npz``
    (CSR or CSC): its structure checked in full before any row is used.
    Labels are ``y.npy`` when the archive has one, else the matrix's
    ``label_column``; ``sample_weight.npy`` as for a dense ``.npz``."""
    fmt = npz_member(archive, by_name["format.npy"], options, name)
    fmt = fmt.tobytes().decode("ascii", "replace").strip("\x00")[:16]
    missing = SPARSE_MEMBERS - set(by_name)
    if fmt not in ("csr", "csc") or missing:
        raise ObjectError(name, f"a sparse .npz must hold a CSR or CSC matrix, got {fmt!r}")
    parts = {key: npz_member(archive, by_name[key + ".npy"], options, name) for key in SPARSE}
    shape = parts["shape"]
    if shape.shape != (2,) or shape.dtype.kind not in "iu":
        raise ObjectError(name, f"a sparse .npz shape must be two integers, got {shape!r}")
    n_rows, n_columns = (int(v) for v in shape)
    check_rows(n_rows, options, name)
    check_columns(n_columns, options, name, "sparse .npz")
    if parts["data"].dtype.kind not in "biuf":
        raise ObjectError(name, f"sparse .npz data must be numeric, got {parts['data'].dtype}")
    cls = scipy.sparse.csr_matrix if fmt == "csr" else scipy.sparse.csc_matrix
    try:
        X = cls((parts["data"], parts["indices"], parts["indptr"]), shape=(n_rows, n_columns))
        X.check_format(full_check=True)
    except (ValueError, TypeError) as exc:
        raise ObjectError(name, f"a malformed sparse matrix ({exc})") from None
    extra = {
        key: npz_member(archive, by_name[key + ".npy"], options, name)
        for key in ("y", "sample_weight")
        if key + ".npy" in by_name
    }
    return X.tocsr(), extra.get("y"), extra.get("sample_weight")


def _sparse_batches(X, y, w, options, name):
    if y is None and options.label_column is not None:
        X, y, column_w = split_columns(X, X.shape[1], options, name, "sparse .npz")
        w = column_w if w is None else w
    yield from _array_batches(X, y, w, options, name, "sparse .npz X")


def npz_batches(stream, options, name):
    X, y, w = _npz_arrays(stream, options, name)
    if scipy.sparse.issparse(X):
        yield from _sparse_batches(X, y, w, options, name)
        return
    if X.ndim != 2 or X.dtype.kind not in "biuf":
        raise ObjectError(name, f".npz X must be a 2-D numeric array, got {X.dtype} {X.shape}")
    if X.shape[1] > options.max_features:
        raise refusal(name, f".npz X: {X.shape[1]} features", "max_features", options)
    check_rows(X.shape[0], options, name)
    check_batch(min(options.batch_size, X.shape[0]), X.shape[1], options, name, ".npz X")
    yield from _array_batches(X, y, w, options, name, ".npz X")


def _array_batches(X, y, w, options, name, what):
    """Mini-batches of rows of ``X`` (dense or sparse) with their labels and
    weights, each checked against ``X``."""
    if options.label_column is None:
        y = None
    elif y is None or y.shape != (X.shape[0],) or y.dtype.kind not in "biufU":
        raise ObjectError(name, f".npz y must be 1-D numbers or strings of length {X.shape[0]}")
    if w is not None and (w.shape != (X.shape[0],) or w.dtype.kind not in "biuf"):
        raise ObjectError(name, ".npz sample_weight must be 1-D numbers, one per row")
    if options.num_features is not None and X.shape[1] != options.num_features:
        raise ObjectError(
            name, f"{what} has {X.shape[1]} features, expected {options.num_features}"
        )
    for start in range(0, X.shape[0], options.batch_size):
        stop = start + options.batch_size
        rows = X[start:stop]
        yield Batch(
            rows.astype(np.float64)
            if scipy.sparse.issparse(rows)
            else np.ascontiguousarray(rows, dtype=np.float64),
            None if y is None else y[start:stop] if y.dtype.kind == "U" else _floats(y[start:stop]),
            None if w is None else _floats(w[start:stop]),
            None,
            start,
        )


def _floats(values):
    return values.astype(np.float64)
