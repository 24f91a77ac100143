"""A worker process of a storlet daemon: the storlet imported once.

Started by :mod:`mlstorlets.server.agent.daemon` with one end of a socket
pair.  It imports the storlet's class, says it is ready, then serves one
request at a time for as long as it lives:

* a request message carries the parameters and the inputs' metadata, with
  the inputs' descriptors and the storlet logger's attached;
* the storlet runs over upstream's input files and a :class:`SpoolOutputFile`
  per output, which keeps the metadata in memory and the body in an
  unlinked file of the private ``/tmp`` (on disk, whatever its size);
* the answer is ``done`` with each output's metadata and its spool
  attached, or ``failed`` with a reason.

The worker never holds the host's output descriptors: a storlet that dies
half-way sends nothing (see :mod:`mlstorlets.server.agent`).
"""

import argparse
import importlib
import logging
import os
import socket
import sys
import tempfile
import traceback

from storlets.agent.common.utils import get_logger
from storlets.agent.daemon.files import (
    StorletFile,
    StorletInputFile,
    StorletLogger,
    StorletRangeInputFile,
)

from mlstorlets.sandbox import protocol
from mlstorlets.server.agent import channel, descendants

ENGINE_PACKAGE = "mlstorlets"


class SpoolOutputFile(StorletFile):
    """A storlet's output file that spools to an unlinked temporary file.

    Same interface as upstream's ``StorletOutputFile``: metadata first, at
    most once, then the body.  Nothing reaches the host from here.
    """

    mode = "wb"

    def __init__(self, directory=None):
        fd, path = tempfile.mkstemp(prefix="storlet-output-", dir=directory)
        os.unlink(path)
        # The storlet may close its file; the spool stays open for the
        # answer.
        self.spool_fd = fd
        super().__init__(os.dup(fd))
        self._metadata = None

    def get_metadata(self):
        if self._metadata is None:
            raise IOError("Metadata is not set yet")
        return dict(self._metadata)

    def set_metadata(self, md):
        if self._metadata is not None:
            raise IOError("Sending metadata twice is not allowed")
        self._metadata = {str(k): str(v) for k, v in dict(md).items()}

    @property
    def metadata_set(self):
        return self._metadata is not None

    def write(self, buf):
        if self._metadata is None:
            raise IOError("Body should be sent after metadata is sent")
        self.obj_file.write(buf)

    def writelines(self, seq):
        if self._metadata is None:
            raise IOError("Body should be sent after metadata is sent")
        self.obj_file.writelines(seq)

    def flush(self):
        self.obj_file.flush()

    def discard(self):
        """Close everything of this file, spool included."""
        self.close()
        channel.close_all([self.spool_fd])


class LineLogger(StorletLogger):
    """Upstream's storlet logger, each message a line of its own.

    Upstream writes messages one after the other with no separator: the
    log of an invocation (:data:`mlstorlets.sandbox.protocol.MAX_LOG`) would
    be one run-on line.
    """

    def _emit_log(self, level, msg):
        msg = str(msg)
        super()._emit_log(level, msg if msg.endswith("\n") else msg + "\n")


def write_traceback(fd, err):
    """Append what ``err`` raised through the storlet to the invocation's
    log ``fd``, from the storlet's first frame (the worker's own are not
    the user's business).  A log nobody reads any more is let go."""
    tb = err.__traceback__.tb_next if err.__traceback__ else None
    text = "".join(traceback.format_exception(type(err), err, tb))
    try:
        with open(fd, "wb", closefd=False) as f:
            f.write(text.encode("utf-8", "backslashreplace"))
    except OSError:
        pass


def input_file(storlet_md, md, fd):
    """Upstream's input file for one input, ranged when asked."""
    start, end = storlet_md.get("start"), storlet_md.get("end")
    if start is not None and end is not None:
        return StorletRangeInputFile(md, fd, int(start), int(end))
    return StorletInputFile(md, fd)


def load_storlet(storlet_name):
    """The storlet class named ``module.Class``."""
    try:
        module_name, cls_name = storlet_name.split(".")
    except ValueError:
        raise ValueError("Invalid storlet name %s" % storlet_name)
    return getattr(importlib.import_module(module_name), cls_name)


def forget_engine():
    """Drop the engine's package from this process's imports.

    The storlet imports ``mlstorlets`` from the library zip it was deployed
    with (see :mod:`mlstorlets.client.deploy`), not the engine's copy; the
    worker's own code keeps working from the modules it already holds.
    """
    here = os.path.dirname(os.path.abspath(sys.modules[ENGINE_PACKAGE].__file__))
    root = os.path.dirname(here)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != root]
    for name in list(sys.modules):
        if name == ENGINE_PACKAGE or name.startswith(ENGINE_PACKAGE + "."):
            del sys.modules[name]


class Worker(object):
    """Serve requests for one storlet class over ``sock``."""

    def __init__(self, storlet_name, storlet_cls, sock, logger, spool_dir=None):
        self.storlet_name = storlet_name
        self.storlet_cls = storlet_cls
        self.sock = sock
        self.logger = logger
        self.spool_dir = spool_dir

    def serve(self):
        channel.send(self.sock, {"ready": os.getpid()})
        while True:
            message, fds = channel.receive(self.sock)
            if message is None:
                return
            self.handle(message, fds)

    def handle(self, message, fds):
        n_in = len(message["in_md"])
        in_fds, logger_fd = fds[:n_in], fds[n_in]
        in_files = [
            input_file(smd, md, fd)
            for smd, md, fd in zip(message["storlet_md"], message["in_md"], in_fds)
        ]
        outs = [SpoolOutputFile(self.spool_dir) for _ in range(message["outputs"])]
        # The storlet may close its logger; the traceback goes to the same
        # log after it.
        log_fd = os.dup(logger_fd)
        try:
            with LineLogger(self.storlet_name, logger_fd) as slogger:
                self.storlet_cls(slogger)(in_files, outs, message["params"])
            for out in outs:
                if not out.closed:
                    out.flush()
        except BaseException as err:
            # SystemExit too: the storlet asked to stop, it did not finish.
            self.logger.info(
                "Storlet %s failed: %s" % (self.storlet_name, traceback.format_exc(limit=5))
            )
            self._end_descendants()
            write_traceback(log_fd, err)
            # Closed before the answer: the host's copy of the log then ends
            # when the answer reaches it.
            channel.close_all([log_fd])
            self._answer_failed(protocol.one_line("%s: %s" % (type(err).__name__, err)), outs)
        else:
            channel.close_all([log_fd])
            self._end_descendants()
            missing = [o for o in outs if not o.metadata_set]
            if missing:
                self._answer_failed("the storlet set no output metadata", outs)
            else:
                channel.send(
                    self.sock,
                    {"status": "done", "metadata": [o.get_metadata() for o in outs]},
                    [o.spool_fd for o in outs],
                )
                for out in outs:
                    out.discard()
        finally:
            for f in in_files:
                if not f.closed:
                    f.close()

    def _end_descendants(self):
        killed = descendants.kill_descendants()
        if killed:
            self.logger.info(
                "Storlet %s left %d processes behind: killed" % (self.storlet_name, killed)
            )

    def _answer_failed(self, reason, outs):
        for out in outs:
            out.discard()
        channel.send(self.sock, {"status": "failed", "reason": reason[:1024]})


def main(argv=None):
    parser = argparse.ArgumentParser(description="A worker process of a storlet daemon")
    parser.add_argument("storlet_name")
    parser.add_argument("storlet_dir")
    parser.add_argument("sock_fd", type=int)
    parser.add_argument("log_level")
    parser.add_argument("container_id")
    opts = parser.parse_args(argv)
    logging.raiseExceptions = False
    logger = get_logger("storlets-worker", opts.log_level, opts.container_id)
    sock = socket.socket(fileno=opts.sock_fd)
    descendants.become_subreaper()
    forget_engine()
    # Where upstream's daemon finds the storlet and its dependencies.
    sys.path.insert(0, opts.storlet_dir)
    try:
        storlet_cls = load_storlet(opts.storlet_name)
    except Exception:
        logger.exception("Failed to load storlet %s" % opts.storlet_name)
        channel.send(sock, {"load_error": traceback.format_exc(limit=3)[-1024:]})
        os._exit(1)
    Worker(opts.storlet_name, storlet_cls, sock, logger).serve()
    # Without the interpreter's teardown: nothing here needs it, and with
    # the numerical libraries loaded it is the slow part.
    logger.handlers[0].flush()
    os._exit(0)


if __name__ == "__main__":
    main()
