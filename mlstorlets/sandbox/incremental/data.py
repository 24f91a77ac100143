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
* a sparse ``.npz`` (``scipy.sparse.save_npz``, CSR or CSC): the features
  stay sparse; the label is the matrix's ``label_column``, or ``y`` when
  the archive also holds one.

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

This module chooses the reader; each concern has its own:
:mod:`~mlstorlets.sandbox.incremental.options` (options and limits),
:mod:`~mlstorlets.sandbox.incremental.rows` (mini-batches and their checks),
:mod:`~mlstorlets.sandbox.incremental.text` and
:mod:`~mlstorlets.sandbox.incremental.arrays` (the readers).
"""

import io

from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.incremental.arrays import npy_batches, npz_batches, npz_member
from mlstorlets.sandbox.incremental.options import LIMITS, OPTIONS, DataOptions
from mlstorlets.sandbox.incremental.rows import Batch, check_finite
from mlstorlets.sandbox.incremental.text import text_batches

__all__ = ["LIMITS", "OPTIONS", "Batch", "DataOptions", "buffered", "iter_batches", "npz_member"]

NPY_MAGIC = b"\x93NUMPY"


ZIP_MAGIC = b"PK\x03\x04"


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
        batches = npy_batches(stream, options, name)
    elif fmt == "npz":
        batches = npz_batches(stream, options, name)
    else:
        batches = text_batches(stream, options, name)
    n_features = None
    empty = True
    for batch in batches:
        if n_features is None:
            n_features = batch.X.shape[1]
            if n_features < 1:
                raise ObjectError(name, "no feature columns")
        check_finite(batch, name)
        empty = False
        yield batch
    if empty:
        raise ObjectError(name, "empty object: no data rows")
