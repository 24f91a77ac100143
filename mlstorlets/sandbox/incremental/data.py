"""Formats of a training object and their streaming in mini-batches.

A training object is one of:

* delimited text: CSV (``,``), TSV (tab) or whitespace-separated numbers, one
  sample a line, the label in one column (``label_column``, default the last;
  ``none`` for objects without labels: clustering, or data to predict),
  optionally a per-row weight in another (``weight_column``), optionally
  ``header_rows`` lines to skip. Blank lines and lines starting with ``#`` are
  skipped (line numbers in errors still count them). Labels are numbers.
* ``.npy``: one 2-D float array, label in ``label_column`` (default last),
  weight in ``weight_column`` if given.
* ``.npz``: arrays ``X`` (2-D) and ``y`` (1-D, numbers or strings; absent with
  ``label_column=none``), optional
  ``sample_weight``; loaded with ``allow_pickle=False``.

Text and C-ordered ``.npy`` objects are read incrementally, ``batch_size``
rows at a time, so an object bigger than memory can be trained on; ``.npz``
is a zip archive whose directory sits at the end, so it is read whole.

Options come from the storlet parameters first, then from the object's user
metadata (``X-Object-Meta-Num-Features`` and friends), then defaults.

Every decoder is bounded (see :data:`LIMITS`): rows per object, bytes per
text line, features, bytes of one mini-batch, bytes of an ``.npz`` archive,
of each of its arrays and number of its members.  A caller may set each
limit through a parameter of the same name (``max_rows=1000``), never above
its hard maximum; limits are never read from object metadata.  A refusal is
an :class:`ObjectError` naming the object and the limit.
"""

import io
import zipfile
import zlib

import numpy as np

from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.npz import read_member, read_npy_header

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
FORMATS = ("auto", "csv", "tsv", "whitespace", "npy", "npz")
DELIMITERS = {"csv": ",", "tsv": "\t", "whitespace": None}
DEFAULT_BATCH_SIZE = 65536

#: limit -> (default, hard maximum).  Sized so that one decoding stays well
#: below a sandbox's memory: a batch is held about three times (text or
#: raw, float64 values, the split X), an archive once plus its arrays.
LIMITS = {
    "max_rows": (100_000_000, 10_000_000_000),
    "max_line_bytes": (1 << 20, 16 << 20),
    "max_features": (100_000, 10_000_000),
    "max_batch_bytes": (256 << 20, 2 << 30),
    "max_archive_bytes": (512 << 20, 4 << 30),
    "max_array_bytes": (512 << 20, 4 << 30),
    "max_members": (16, 1024),
}


def _label_column(text):
    """An int, or None for ``none`` (the object holds no labels)."""
    return None if str(text).lower() == "none" else int(text)


#: option name -> (metadata key, parser); parameters use the option name.
OPTIONS = {
    "format": ("Data-Format", str),
    "num_features": ("Num-Features", int),
    "label_column": ("Label-Column", _label_column),
    "weight_column": ("Weight-Column", int),
    "header_rows": ("Header-Rows", int),
    "batch_size": (None, int),
    **{limit: (None, int) for limit in LIMITS},
}


class DataOptions:
    """How to read one object.

    Parameters
    ----------
    format : {'auto', 'csv', 'tsv', 'whitespace', 'npy', 'npz'}, default='auto'
        'auto' recognises ``.npy``/``.npz`` by their magic bytes and tells the
        text delimiters apart from the first data line (comma, then tab, else
        whitespace).
    num_features : int, default=None
        Expected number of features; None infers it from the first row.
    label_column : int or None, default=-1
        Column of the label (negative counts from the end); None: no label
        (``Batch.y`` is None).
    weight_column : int, default=None
        Column of a per-row sample weight, if any.
    header_rows : int, default=0
        Leading text lines to skip.
    batch_size : int, default=65536
        Rows per mini-batch.
    **limits : int
        Any of :data:`LIMITS`, each in [1, its hard maximum].
    """

    def __init__(
        self,
        format="auto",
        num_features=None,
        label_column=-1,
        weight_column=None,
        header_rows=0,
        batch_size=DEFAULT_BATCH_SIZE,
        **limits,
    ):
        self.format = format
        self.num_features = num_features
        self.label_column = label_column
        self.weight_column = weight_column
        self.header_rows = header_rows
        self.batch_size = batch_size
        unknown = set(limits) - set(LIMITS)
        if unknown:
            raise TypeError(f"unknown limits {sorted(unknown)}")
        for limit, (default, _) in LIMITS.items():
            setattr(self, limit, limits.get(limit, default))

    @classmethod
    def from_sources(cls, params, metadata, name=""):
        """Options from storlet parameters, else object metadata, else defaults."""
        metadata = {str(k).lower(): v for k, v in (metadata or {}).items()}
        kwargs = {}
        for option, (meta_key, parse) in OPTIONS.items():
            raw = params.get(option)
            if raw is None and meta_key is not None:
                raw = metadata.get(meta_key.lower())
            if raw is None or raw == "":
                continue
            try:
                kwargs[option] = parse(raw)
            except ValueError:
                raise ObjectError(name, f"bad {option} {raw!r}") from None
        options = cls(**kwargs)
        options.check(name)
        return options

    def check(self, name=""):
        if self.format not in FORMATS:
            raise ObjectError(name, f"unknown format {self.format!r}, expected one of {FORMATS}")
        if self.num_features is not None and self.num_features < 1:
            raise ObjectError(name, "num_features must be >= 1")
        if self.header_rows < 0:
            raise ObjectError(name, "header_rows must be >= 0")
        if self.batch_size < 1:
            raise ObjectError(name, "batch_size must be >= 1")
        if self.weight_column is not None and self.weight_column == self.label_column:
            raise ObjectError(name, "weight_column and label_column are the same")
        for limit, (_, hard) in LIMITS.items():
            value = getattr(self, limit)
            if not 1 <= value <= hard:
                raise ObjectError(name, f"{limit} must be in [1, {hard}], got {value}")
        if self.num_features is not None and self.num_features > self.max_features:
            raise ObjectError(
                name, f"num_features {self.num_features} is over max_features={self.max_features}"
            )


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


class _RawReader(io.RawIOBase):
    """A raw stream over anything with ``read(size)`` (a storlet input file)."""

    def __init__(self, source):
        self._source = source

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self._source.read(len(buffer))
        if not data:
            return 0
        n = len(data)
        buffer[:n] = data
        return n


def buffered(source):
    return io.BufferedReader(_RawReader(source), buffer_size=1 << 20)


def _split_columns(arr, n_columns, options, name, where):
    """Split a 2-D float array into X, y, w according to the column options."""
    label = options.label_column
    drop = []
    if label is not None:
        if not -n_columns <= label < n_columns:
            raise ObjectError(name, f"{where}: label_column {label} is outside {n_columns} columns")
        label %= n_columns
        drop.append(label)
    weight = None
    if options.weight_column is not None:
        wcol = options.weight_column
        if not -n_columns <= wcol < n_columns or wcol % n_columns in drop:
            raise ObjectError(
                name, f"{where}: weight_column {wcol} is invalid for {n_columns} columns"
            )
        weight = arr[:, wcol % n_columns].copy()
        drop.append(wcol % n_columns)
    keep = [c for c in range(n_columns) if c not in drop]
    if keep and keep == list(range(keep[0], keep[-1] + 1)):
        # the features are adjacent (the label first or last): one strided copy
        X = np.ascontiguousarray(arr[:, keep[0] : keep[-1] + 1])
    else:
        X = np.take(arr, keep, axis=1)
    return X, None if label is None else arr[:, label].copy(), weight


def _extra_columns(options):
    """Columns that are not features: the label's and the weight's."""
    return (options.label_column is not None) + (options.weight_column is not None)


def _expected_columns(options):
    if options.num_features is None:
        return None
    return options.num_features + _extra_columns(options)


def _check_finite(batch, name):
    for what, values in (
        ("feature", batch.X),
        ("label", batch.y),
        ("sample weight", batch.sample_weight),
    ):
        if values is None or values.dtype.kind not in "fc":
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


def _parse_line(text, delimiter, n_columns, name, lineno):
    fields = text.split(delimiter) if delimiter is not None else text.split()
    if n_columns is not None and len(fields) != n_columns:
        raise ObjectError(name, f"line {lineno}: {len(fields)} columns, expected {n_columns}")
    try:
        values = [float(f) for f in fields]
    except ValueError:
        bad = next(f for f in fields if not _is_float(f))
        raise ObjectError(name, f"line {lineno}: non-numeric value {bad.strip()!r}") from None
    return values


def _is_float(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _sniff_delimiter(line):
    if "," in line:
        return ","
    if "\t" in line:
        return "\t"
    return None


def _refuse(name, what, limit, options, hint=""):
    return ObjectError(name, f"{what} is over {limit}={getattr(options, limit)}{hint}")


def _check_columns(n_columns, options, name, where):
    n_features = n_columns - _extra_columns(options)
    if n_features > options.max_features:
        raise _refuse(name, f"{where}: {n_features} features", "max_features", options)


def _check_rows(n_rows, options, name):
    if n_rows > options.max_rows:
        raise _refuse(name, f"{n_rows} rows", "max_rows", options)


def _check_batch(n_rows, n_columns, options, name, where):
    """Refuse a mini-batch whose float64 values would pass max_batch_bytes."""
    if n_rows * n_columns * 8 > options.max_batch_bytes:
        raise _refuse(
            name,
            f"{where}: a mini-batch of {n_rows} rows x {n_columns} columns "
            f"({n_rows * n_columns * 8} bytes)",
            "max_batch_bytes",
            options,
            "; lower batch_size",
        )


def _lines(stream, options, name):
    """(line number, text) of every line; none longer than max_line_bytes.

    Lines are cut on b"\n" (a "\r" before it is stripped with the other
    blanks) before decoding, so that one huge line is never held whole.
    """
    limit = options.max_line_bytes
    lineno = 0
    while True:
        raw = stream.readline(limit + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > limit and not raw.endswith(b"\n"):
            raise ObjectError(name, f"line {lineno} is longer than max_line_bytes={limit} bytes")
        try:
            yield lineno, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ObjectError(name, f"line {lineno}: not UTF-8 text ({exc.reason})") from None


def _text_batches(stream, options, name):
    delimiter = DELIMITERS.get(options.format) if options.format != "auto" else "?"
    n_columns = _expected_columns(options)
    lines, numbers = [], []
    start = text_bytes = 0
    for lineno, raw in _lines(stream, options, name):
        if lineno <= options.header_rows:
            continue
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if delimiter == "?":
            delimiter = _sniff_delimiter(line)
        if n_columns is None:
            n_columns = len(line.split(delimiter) if delimiter else line.split())
            _check_columns(n_columns, options, name, f"line {lineno}")
        _check_rows(start + len(lines) + 1, options, name)
        text_bytes += len(line)
        if text_bytes > options.max_batch_bytes:
            raise _refuse(
                name,
                f"line {lineno}: the text of a mini-batch of {len(lines) + 1} rows",
                "max_batch_bytes",
                options,
                "; lower batch_size",
            )
        _check_batch(len(lines) + 1, n_columns, options, name, f"line {lineno}")
        lines.append(line)
        numbers.append(lineno)
        if len(lines) == options.batch_size:
            yield _parse_text(lines, numbers, delimiter, n_columns, options, name, start)
            start += len(lines)
            lines, numbers = [], []
            text_bytes = 0
    if lines:
        yield _parse_text(lines, numbers, delimiter, n_columns, options, name, start)


def _parse_text(lines, numbers, delimiter, n_columns, options, name, start):
    try:
        # numpy's C parser; on any failure the slow path below names the line.
        arr = np.loadtxt(lines, delimiter=delimiter, dtype=np.float64, ndmin=2, comments=None)
        if arr.shape[1] != n_columns:
            raise ValueError("column count")
    except ValueError:
        arr = np.array(
            [
                _parse_line(text, delimiter, n_columns, name, lineno)
                for text, lineno in zip(lines, numbers)
            ],
            dtype=np.float64,
        )
    X, y, w = _split_columns(arr, n_columns, options, name, f"line {numbers[0]}")
    return Batch(X, y, w, np.asarray(numbers), start)


def _npy_batches(stream, options, name):
    shape, fortran, dtype = read_npy_header(stream, name, ".npy")
    if dtype.kind not in "biuf":
        raise ObjectError(name, f".npy dtype {dtype} is not numeric")
    if len(shape) != 2:
        raise ObjectError(name, f".npy array must be 2-D, got shape {shape}")
    n_rows, n_columns = shape
    expected = _expected_columns(options)
    if expected is not None and n_columns != expected:
        raise ObjectError(name, f".npy has {n_columns} columns, expected {expected}")
    _check_columns(n_columns, options, name, ".npy")
    _check_rows(n_rows, options, name)
    _check_batch(min(options.batch_size, n_rows), n_columns, options, name, ".npy")
    row_bytes = n_columns * dtype.itemsize
    if fortran:
        # column-major: rows are not contiguous, so the array is read whole
        if n_rows * row_bytes > options.max_array_bytes:
            raise _refuse(
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
            X, y, w = _split_columns(chunk, n_columns, options, name, "row 0")
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
            X, y, w = _split_columns(chunk, n_columns, options, name, f"row {start}")
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
        raise _refuse(
            name,
            f".npz member {info.filename} of {info.file_size} bytes uncompressed",
            "max_array_bytes",
            options,
        )
    return read_member(archive, info, name)


def _npz_arrays(stream, options, name):
    blob = stream.read(options.max_archive_bytes + 1)
    if len(blob) > options.max_archive_bytes:
        raise _refuse(name, "the .npz archive", "max_archive_bytes", options, " bytes")
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            members = archive.infolist()
            if len(members) > options.max_members:
                raise _refuse(name, f".npz with {len(members)} members", "max_members", options)
            by_name = {info.filename: info for info in members}
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


def _npz_batches(stream, options, name):
    X, y, w = _npz_arrays(stream, options, name)
    if X.ndim != 2 or X.dtype.kind not in "biuf":
        raise ObjectError(name, f".npz X must be a 2-D numeric array, got {X.dtype} {X.shape}")
    if options.label_column is None:
        y = None
    elif y.shape != (X.shape[0],) or y.dtype.kind not in "biufU":
        raise ObjectError(name, f".npz y must be 1-D numbers or strings of length {X.shape[0]}")
    if w is not None and (w.shape != (X.shape[0],) or w.dtype.kind not in "biuf"):
        raise ObjectError(name, ".npz sample_weight must be 1-D numbers, one per row")
    if options.num_features is not None and X.shape[1] != options.num_features:
        raise ObjectError(
            name, f".npz X has {X.shape[1]} features, expected {options.num_features}"
        )
    if X.shape[1] > options.max_features:
        raise _refuse(name, f".npz X: {X.shape[1]} features", "max_features", options)
    _check_rows(X.shape[0], options, name)
    _check_batch(min(options.batch_size, X.shape[0]), X.shape[1], options, name, ".npz X")
    for start in range(0, X.shape[0], options.batch_size):
        stop = start + options.batch_size
        yield Batch(
            np.ascontiguousarray(X[start:stop], dtype=np.float64),
            None
            if y is None
            else y[start:stop]
            if y.dtype.kind == "U"
            else y[start:stop].astype(np.float64),
            None if w is None else w[start:stop].astype(np.float64),
            None,
            start,
        )


def iter_batches(source, options, name=""):
    """Yield the object's rows as :class:`Batch` es of ``options.batch_size``.

    Parameters
    ----------
    source : file-like
        Anything with ``read(size)``: a storlet input file, an open file.
    options : DataOptions
    name : str
        The object's name, for error messages.

    Raises
    ------
    mlstorlets.sandbox.errors.ObjectError
        Empty object, wrong column count, non-numeric value, NaN or infinity,
        negative weight; text errors name the line.
    """
    stream = buffered(source)
    head = stream.peek(8)[:8]
    fmt = options.format
    if fmt == "auto":
        fmt = (
            "npy" if head.startswith(NPY_MAGIC) else "npz" if head.startswith(ZIP_MAGIC) else "text"
        )
    if fmt == "npy":
        batches = _npy_batches(stream, options, name)
    elif fmt == "npz":
        batches = _npz_batches(stream, options, name)
    else:
        batches = _text_batches(stream, options, name)
    n_features = None
    empty = True
    for batch in batches:
        if n_features is None:
            n_features = batch.X.shape[1]
            if n_features < 1:
                raise ObjectError(name, "no feature columns")
        _check_finite(batch, name)
        empty = False
        yield batch
    if empty:
        raise ObjectError(name, "empty object: no data rows")
