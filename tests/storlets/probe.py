"""A storlet for the engine's functional tests.

Every action copies its input(s) to its output, and reports in the output's
metadata what it observed from inside the sandbox, so a test can tell where
it ran and what it could and could not do.  Parameters:

``action``
    ``copy`` (default); ``connect`` (to ``host``:``port``); ``write`` (to
    ``path``); ``read`` (``path``); ``fail`` (raise before any output);
    ``fail-late`` (raise after writing part of the output); ``spin`` (loop
forever before any output).
"""

import socket


class ProbeStorlet(object):
    def __init__(self, logger):
        self.logger = logger

    def __call__(self, in_files, out_files, params):
        action = params.get("action", "copy")
        body = b"".join(f.read() for f in in_files)
        metadata = dict(in_files[0].get_metadata())
        metadata["Probe-Host"] = socket.gethostname()
        metadata["Probe-Inputs"] = str(len(in_files))
        # Characters, not bytes: what the storlet sees of its input's
        # metadata.
        metadata["Probe-Lengths"] = ",".join(
            "%s:%d" % (k, len(v)) for k, v in sorted(metadata.items()) if not k.startswith("Probe-")
        )
        # Declared so that a copy that fails half-way is detected and
        # nothing is stored (see mlstorlets.server.middleware.storlet_copy).
        metadata["Storlet-Output-Length"] = str(len(body))
        metadata["Probe-Params"] = ",".join(
            "%s=%s" % kv for kv in sorted(params.items()) if kv[0] != "storlet_execution_path"
        )
        if action == "fail":
            raise RuntimeError("probe asked to fail")
        while action == "spin":
            pass
        if action != "copy":
            metadata["Probe-Result"] = self._try(action, params)
        out_files[0].set_metadata(metadata)
        if action == "fail-late":
            out_files[0].write(body[: len(body) // 2])
            raise RuntimeError("probe asked to fail after writing")
        out_files[0].write(body)
        for f in in_files:
            f.close()
        out_files[0].close()

    @staticmethod
    def _try(action, params):
        try:
            if action == "connect":
                socket.create_connection((params["host"], int(params["port"])), timeout=2).close()
            elif action == "write":
                with open(params["path"], "w") as f:
                    f.write("written by a storlet")
            elif action == "read":
                with open(params["path"], "rb") as f:
                    f.read(1)
            else:
                return "unknown action %s" % action
        except Exception as err:
            return "denied: %s" % type(err).__name__
        return "allowed"
