"""One invocation over many objects, each mapped to an output of its own.

Swift's cost per request (authorization, the storlet's metadata, an
invocation, the proxy and object server paths) dwarfs a cheap storlet's
work on a small object.  A batch of small objects therefore asks for many
at once: a ``PUT`` of the destination prefix with ``X-Copy-From`` (the
first source), ``X-Storlet-Extra-Resources`` (the others, then any shared
input such as a model) and the parameter
:data:`~mlstorlets.sandbox.protocol.MANY_PARAMETER`.  :func:`compute_many`
then runs the storlet's own one-object function over each mapped input in
turn and answers a tar, one member per output, that the proxy extracts
under the prefix through Swift's bulk extraction: each output is written
by a PUT of its own, all or nothing, with its source's ETag for resume.

A refusal (:class:`~mlstorlets.sandbox.errors.ObjectError`) is the refused
object's alone: it has no member, and the tar's last member,
:data:`~mlstorlets.sandbox.protocol.MANY_REPORT`, names it with the reason.
A refused parameter value is the same for every object, so it refuses the
whole call, as it would refuse a call over one.
"""

import io
import json
import tarfile

from mlstorlets.sandbox import protocol
from mlstorlets.sandbox.errors import ObjectError, ParameterError
from mlstorlets.sandbox.inputs import read_input

__all__ = ["compute_many", "parse_plan", "plain_name"]

# Bytes of the shared inputs (a model) one call keeps in memory to give
# each object its own reader: the model storlet's own bound.
MAX_SHARED_BYTES = 256 << 20


def parse_plan(params, inputs):
    """The ``(source, member, etag)`` of each mapped input, from
    :data:`~mlstorlets.sandbox.protocol.MANY_PARAMETER`.

    Raises
    ------
    ObjectError
        A plan that is not a list of three strings per input, names more
        inputs than the call has, or a member name that is not a plain
        relative name.
    """
    try:
        plan = json.loads(params[protocol.MANY_PARAMETER])
        ok = (
            isinstance(plan, list)
            and 0 < len(plan) <= inputs
            and all(
                isinstance(entry, list)
                and len(entry) == 3
                and all(isinstance(part, str) and part for part in entry)
                for entry in plan
            )
        )
    except ValueError:
        ok = False
    if not ok:
        raise ObjectError(
            "",
            "parameter %s must be a JSON list of [source, output, etag], one per input "
            "(at most %d)" % (protocol.MANY_PARAMETER, inputs),
        )
    for source, member, _ in plan:
        if not plain_name(member):
            raise ObjectError(source, "output name %r is not a plain relative name" % member)
    return [tuple(entry) for entry in plan]


def plain_name(member):
    """Whether ``member`` may name an output of a call: relative, with no
    empty, ``.`` or ``..`` segment, and none of the project's own names."""
    return not (
        member.startswith("/")
        or any(part in ("", ".", "..") for part in member.split("/"))
        or protocol.is_internal(member)
    )


class _Shared:
    """A shared input read once, given to each object as a fresh reader."""

    def __init__(self, f, name):
        self._metadata = f.get_metadata()
        self._data = read_input(f, name, MAX_SHARED_BYTES)
        f.close()

    def reader(self):
        return _Reader(self._data, self._metadata)


class _Reader(io.BytesIO):
    """An in-memory input with its object's metadata."""

    def __init__(self, data, metadata):
        super().__init__(data)
        self._metadata = metadata

    def get_metadata(self):
        return dict(self._metadata)


def compute_many(in_files, params, compute):
    """``compute`` (a one-object storlet function) over each mapped input.

    Parameters
    ----------
    in_files : list of storlet files
        The mapped inputs in plan order, then the shared ones.
    params : dict of str
        The call's parameters, :data:`~mlstorlets.sandbox.protocol.MANY_PARAMETER`
        among them; each object is computed with the others and its own
        ``source``.
    compute : callable
        ``compute(in_files, params) -> (metadata, body)``.

    Returns
    -------
    metadata : dict
        Empty: the outputs' metadata travels in their members.
    body : bytes
        The tar: a member per output that was made, in input order, each
        with its source's metadata under the storlet's, its source's ETag
        and (given :data:`~mlstorlets.sandbox.protocol.MANY_TYPE_PARAMETER`)
        its type as pax headers; then the report.

    Raises
    ------
    ParameterError
        A parameter value the storlet refused: it refuses every object.
    """
    plan = parse_plan(params, len(in_files))
    own = {k: v for k, v in params.items() if k != protocol.MANY_PARAMETER}
    content_type = own.pop(protocol.MANY_TYPE_PARAMETER, None)
    mapped, rest = in_files[: len(plan)], in_files[len(plan) :]
    shared = [_Shared(f, "shared input %d" % (i + 1)) for i, f in enumerate(rest)]
    buffer = io.BytesIO()
    refused = []
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for (source, member, etag), f in zip(plan, mapped):
            # As a copy of one object keeps its source's metadata, under
            # what the storlet sets.
            metadata = dict(f.get_metadata())
            try:
                found, body = compute(
                    [f] + [s.reader() for s in shared],
                    dict(own, **{protocol.SOURCE_PARAMETER: source}),
                )
            except ParameterError:
                raise
            except ObjectError as err:
                reason = " ".join(str(err.reason or err).split())
                refused.append([source, reason[: protocol.MAX_REASON]])
                continue
            finally:
                f.close()
            metadata.update(found)
            info = tarfile.TarInfo(member)
            info.size = len(body)
            info.pax_headers = {protocol.PAX_META + str(k): str(v) for k, v in metadata.items()}
            info.pax_headers[protocol.PAX_META + protocol.SOURCE_ETAG_KEY] = etag
            if content_type:
                info.pax_headers[protocol.PAX_TYPE] = content_type
            tar.addfile(info, io.BytesIO(body))
        report = json.dumps({"refused": refused}).encode("utf-8")
        info = tarfile.TarInfo(protocol.MANY_REPORT)
        info.size = len(report)
        tar.addfile(info, io.BytesIO(report))
    return {}, buffer.getvalue()
