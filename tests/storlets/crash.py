"""A storlet that writes part of its output, then dies.

Not built on the project's base class: it streams its output as it goes,
the way any storlet may.  Parameters:

``size``
    bytes written before dying (default 1 MiB).
``declare``
    ``yes`` to declare the full output length (``Storlet-Output-Length``),
    as a careful storlet would.
``how``
    ``raise`` (an exception), ``exit`` (``os._exit``), ``kill`` (SIGKILL
    of its own process), ``none`` (finish normally).
"""

import os
import signal

CHUNK = 64 * 1024


class CrashStorlet(object):
    def __init__(self, logger):
        self.logger = logger

    def __call__(self, in_files, out_files, params):
        size = int(params.get("size", 1 << 20))
        how = params.get("how", "raise")
        for f in in_files:
            f.read()
        metadata = {}
        if params.get("declare") == "yes":
            metadata["Storlet-Output-Length"] = str(2 * size)
        out = out_files[0]
        out.set_metadata(metadata)
        written = 0
        while written < size:
            out.write(b"x" * min(CHUNK, size - written))
            written += CHUNK
        out.flush()
        if how == "raise":
            raise RuntimeError("crash asked to fail after %d bytes" % size)
        if how == "exit":
            os._exit(3)
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        out.write(b"x" * size)
        out.close()
