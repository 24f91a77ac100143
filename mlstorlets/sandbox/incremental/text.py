"""Delimited text objects (CSV, TSV, whitespace), read a line at a time
and parsed a mini-batch at a time by numpy's C parser, the slow path only
to name a bad line."""

import numpy as np

from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.incremental.options import DELIMITERS, expected_columns, refusal
from mlstorlets.sandbox.incremental.rows import (
    Batch,
    check_batch,
    check_columns,
    check_rows,
    split_columns,
)


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


def text_batches(stream, options, name):
    delimiter = DELIMITERS.get(options.format) if options.format != "auto" else "?"
    n_columns = expected_columns(options)
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
            check_columns(n_columns, options, name, f"line {lineno}")
        check_rows(start + len(lines) + 1, options, name)
        text_bytes += len(line)
        if text_bytes > options.max_batch_bytes:
            raise refusal(
                name,
                f"line {lineno}: the text of a mini-batch of {len(lines) + 1} rows",
                "max_batch_bytes",
                options,
                "; lower batch_size",
            )
        check_batch(len(lines) + 1, n_columns, options, name, f"line {lineno}")
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
    X, y, w = split_columns(arr, n_columns, options, name, f"line {numbers[0]}")
    return Batch(X, y, w, np.asarray(numbers), start)
