"""Reading a storlet's inputs within bounds, and naming them in errors.

Shared by every storlet family (faces, video frames, estimators); imports
nothing heavier than the standard library, so that a frame filter's worker
does not load dlib or scikit-learn to read its input.
"""

from mlstorlets.sandbox.errors import ObjectError

__all__ = [
    "MAX_VIDEO_BYTES",
    "input_name",
    "metadata_value",
    "model_input",
    "read_input",
    "spill_input",
]

#: Largest video spilled to the sandbox's /tmp; an annotated copy needs room
#: too, and the sandbox caps any one file at 2 GiB.
MAX_VIDEO_BYTES = 1024 * 2**20

_CHUNK = 1 << 20


def input_name(params, index):
    """The name errors give input ``index`` (0 is the request's object)."""
    if index == 0:
        return params.get("source") or "the input object"
    return f"input {index}"


def model_input(in_files, params, what):
    """``(name, model name)`` of a call over one object with a model as its
    one extra resource (``X-Storlet-Extra-Resources``); any other count of
    inputs is refused, naming ``what`` needs it."""
    name = input_name(params, 0)
    if len(in_files) != 2:
        raise ObjectError(
            name,
            f"{what} needs the model as the one extra resource "
            f"(X-Storlet-Extra-Resources), got {len(in_files) - 1} extra inputs",
        )
    return name, params.get("model") or "the model object (input 1)"


def metadata_value(metadata, key):
    """``metadata[key]`` compared case-insensitively, or None.

    Swift title-cases metadata keys (``X-Object-Meta-name`` is stored as
    ``Name``), so a key given by a user may differ in case.
    """
    wanted = key.lower()
    for candidate, value in metadata.items():
        if candidate.lower() == wanted:
            return value
    return None


def read_input(f, name, limit):
    """Read a whole input into memory, refusing more than ``limit`` bytes."""
    chunks, total = [], 0
    while True:
        chunk = f.read(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise ObjectError(name, f"larger than the {limit} bytes accepted")
        chunks.append(chunk)


def spill_input(f, path, name, limit, head=b""):
    """Copy an input to a local file, refusing more than ``limit`` bytes.

    Returns the number of bytes written. ``head`` is data already read from
    ``f`` (e.g. to sniff its type) and is written first.
    """
    total = len(head)
    with open(path, "wb") as out:
        out.write(head)
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                return total
            total += len(chunk)
            if total > limit:
                raise ObjectError(name, f"larger than the {limit} bytes accepted")
            out.write(chunk)
