"""Bounded reading of ``.npy`` headers and ``.npz`` members: plain arrays,
never a pickle, never more memory than the archive accounts for.

``np.load`` allocates what a ``.npy`` header declares before it reads the
data, so a member of a few bytes could claim a terabyte; it also unpickles
object arrays when asked.  Every reader of an array that came from an
object (estimator tables, face shards and models) goes through here.
"""

import zipfile

import numpy as np

from mlstorlets.sandbox.errors import ObjectError

__all__ = ["open_archive", "read_member", "read_npy_header"]


def read_npy_header(stream, name, what):
    """(shape, fortran_order, dtype) of the ``.npy`` at ``stream``'s
    position, which is left at the start of the data; object arrays (they
    need pickle) refused.

    Parameters
    ----------
    stream : readable binary file object
    name : str
        The object's name, for errors.
    what : str
        What the stream is (``'.npy'``, ``'.npz member X.npy'``), for errors.
    """
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except ValueError as exc:
        raise ObjectError(name, f"bad {what} header ({exc})") from None
    if dtype.hasobject:
        raise ObjectError(name, f"{what} object arrays are refused (they need pickle)")
    return shape, fortran, dtype


def open_archive(stream, name, what, max_members, max_unpacked):
    """``stream`` opened as a zip archive whose directory is bounded: at most
    ``max_members`` members, ``max_unpacked`` bytes unpacked in all.

    :mod:`zipfile` never inflates a member past the size the directory
    declares, so these bounds hold while reading.
    """
    try:
        archive = zipfile.ZipFile(stream)
        members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise ObjectError(name, f"not a {what} (not a zip archive)") from None
    if len(members) > max_members:
        raise ObjectError(name, f"{what} with {len(members)} members, over {max_members}")
    unpacked = sum(member.file_size for member in members)
    if unpacked > max_unpacked:
        raise ObjectError(
            name, f"{what} unpacks to {unpacked} bytes, over the {max_unpacked} limit"
        )
    return archive


def read_member(archive, info, name):
    """The array of member ``info`` of ``archive``.

    Its ``.npy`` header must account for exactly the bytes the directory
    declares, so a member that lies about its size is refused before its
    array is allocated.
    """
    what = f".npz member {info.filename}"
    with archive.open(info) as member:
        shape, fortran, dtype = read_npy_header(member, name, what)
        n_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if member.tell() + n_bytes != info.file_size:
            raise ObjectError(
                name,
                f"{what}: its header declares {n_bytes} bytes of data, "
                f"the archive holds {info.file_size - member.tell()}",
            )
        data = member.read(n_bytes)
    if len(data) != n_bytes:
        raise ObjectError(name, f"{what} is truncated")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
