"""How an mlstorlets storlet answers an invocation.

Every storlet of the project computes its whole result first, then answers
through :func:`run`, which speaks the small protocol the project's proxy
middleware (:mod:`mlstorlets.server.middleware.storlet_copy`) understands:

* bad input (:class:`~mlstorlets.sandbox.errors.ObjectError`) is reported in the
  output metadata as ``Storlet-Error``, with no body; the middleware turns it
  into ``422`` naming the object and the reason, and writes no output object;
* a result declares its length as ``Storlet-Output-Length``, so that an
  output cut short is never stored.

Anything else a storlet raises is a bug, and the engine reports it as a
failed storlet (``502`` from the proxy).

The sandbox's own agent (:mod:`mlstorlets.server.agent`) runs a storlet in
persistent workers and declares every output's length itself, whatever
the storlet does.  Upstream's storlet daemon (the docker and podman
gateways, or ``storlet_agent = upstream``) forks a child per invocation and
lets it end through ``sys.exit()``: a full interpreter teardown, which with
numpy, OpenCV and scikit-learn loaded costs more CPU than most invocations
themselves.  There, once its answer is sent and every file closed, the
child of an mlstorlets storlet leaves with ``os._exit(0)``, as a forked
child should.
"""

import math
import os
import sys

from mlstorlets.sandbox import many, protocol
from mlstorlets.sandbox.errors import ObjectError, ParameterError
from mlstorlets.sandbox.protocol import (
    ERROR_KEY,
    ERROR_OBJECT_KEY,
    ERROR_PARAMETER_KEY,
    LENGTH_KEY,
    MAX_REASON,
)


def run(logger, in_files, out_files, params, compute, maps_many=False):
    """Call ``compute(in_files, params)`` and send its result or refusal.

    Parameters
    ----------
    logger : storlet logger
    in_files, out_files : lists of storlet files
    params : dict of str
    compute : callable
        Returns ``(metadata, body)``: a dict of str to str and bytes.
    maps_many : bool
        ``compute`` serves one object at a time, so that a call with
        :data:`~mlstorlets.sandbox.protocol.MANY_PARAMETER` maps each of
        its inputs to an output (:func:`mlstorlets.sandbox.many.compute_many`).
    """
    if protocol.MANY_PARAMETER in params:
        one = compute

        def compute(in_files, params):
            if not maps_many:
                raise ObjectError("", "this storlet computes one output over all its inputs")
            return many.compute_many(in_files, params, one)

    try:
        metadata, body = compute(in_files, dict(params))
        metadata = {k: str(v) for k, v in metadata.items()}
        metadata[LENGTH_KEY] = str(len(body))
    except ObjectError as err:
        logger.info("refused: %s" % err)
        # A refusal is metadata only: the proxy answers 422 and writes
        # nothing.  One line: a header value holds no line break.
        metadata, body = refusal(err), b""
    finally:
        for f in in_files:
            f.close()
    out = out_files[0]
    out.set_metadata(metadata)
    if body:
        out.write(body)
    out.close()
    _leave(logger)


def refusal(err):
    """The output metadata of a refusal: the reason, and the input it names
    (each on one line: a header value holds no line break)."""
    metadata = {ERROR_KEY: _line(err.reason if err.name else str(err))}
    if err.name:
        metadata[ERROR_OBJECT_KEY] = _line(err.name)
    if isinstance(err, ParameterError):
        metadata[ERROR_PARAMETER_KEY] = _line(err.parameter)
    return metadata


def _line(text):
    return " ".join(str(text).split())[:MAX_REASON]


class Storlet(object):
    """Base of the project's storlets: a thin shell over one function.

    A storlet module defines a subclass whose ``compute`` is the plain
    function (``compute(in_files, params) -> (metadata, body)``) that does
    the work; the same function serves the client-side fallback and the
    unit tests.
    """

    compute = None
    #: The parameters the storlet takes, besides ``source``: names, each
    #: with its type and bounds where it has some (``"size:int:32:512"``,
    #: see :func:`mlstorlets.sandbox.protocol.parse_parameter`); ``mlstorlets
    #: deploy`` records them on the storlet object, and the client refuses
    #: any other name, or a value outside them, before running it.  None:
    #: not declared, anything goes.
    parameters = None
    #: ``(suffix, content type)`` of every output, when it does not depend on
    #: the input (a literal: ``mlstorlets deploy`` records it); a batch names
    #: and types its outputs so, in the cluster and on the client.  None:
    #: each output as its source.
    output_type = None
    #: True: the storlet computes each object from that object alone (and
    #: shared inputs), so that one call may map many objects to as many
    #: outputs (:mod:`mlstorlets.sandbox.many`); ``mlstorlets deploy``
    #: records it, and a batch of small objects then asks for many at once.
    many = False

    def __init__(self, logger):
        self.logger = logger

    def __call__(self, in_files, out_files, params):
        run(self.logger, in_files, out_files, params, type(self).compute, type(self).many)


def int_param(params, key, default, low, high, name):
    """Parameter ``key`` as an int in [low, high]; ``default`` if absent.

    A bad value is the caller's error: a ParameterError naming ``name``.
    """
    raw = params.get(key)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ParameterError(
            name, key, f"parameter {key} must be an integer, got {raw!r}"
        ) from None
    if not low <= value <= high:
        raise ParameterError(name, key, f"parameter {key} must be in [{low}, {high}], got {value}")
    return value


def float_param(params, key, default, low=-math.inf, high=math.inf, name=""):
    """Parameter ``key`` as a finite float in [low, high]; ``default`` if
    absent."""
    raw = params.get(key)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ParameterError(name, key, f"parameter {key} must be a number, got {raw!r}") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise ParameterError(name, key, f"parameter {key} must be in [{low}, {high}], got {raw}")
    return value


def _in_daemon_child():
    """True inside upstream's storlet daemon's per-invocation child."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return bool(spec) and spec.name.startswith("storlets.agent.daemon")


def _leave(logger):
    """End a daemon's child at once: its work is done and sent."""
    if _in_daemon_child():
        try:
            logger.close()
        finally:
            os._exit(0)
