"""The ``mlstorlets`` command line.

A client process: it imports server code (the embedded cluster, node
configuration) only to run the commands that need it, ``aio``, ``demo``
and ``node-config``, because the storlets engine monkey-patches eventlet
when imported, which turns the client's threads green and breaks boto3's
SSL.  :mod:`~mlstorlets.client.cli.parser` holds the arguments,
:mod:`~mlstorlets.client.cli.commands` what each command does.
"""

import os
import sys

from mlstorlets.client.cli.commands import ERROR, FAILED, INTERRUPTED, READER_GONE
from mlstorlets.client.cli.parser import parser

__all__ = ["ERROR", "FAILED", "INTERRUPTED", "READER_GONE", "main", "parser"]


# The commands that run server code; only they import it.
SERVER_COMMANDS = ("aio", "demo", "node-config")


def main(argv=None):
    args = parser().parse_args(argv)
    from swiftclient.exceptions import ClientException

    from mlstorlets.client.errors import Error
    from mlstorlets.client.swift import reason_of
    from mlstorlets.sandbox.errors import ObjectError

    # A bad object found by code the storlets also run is an ObjectError;
    # anything else is a bug, and keeps its traceback.
    expected = (Error, ObjectError)
    if args.command in SERVER_COMMANDS:
        import warnings

        # eventlet, imported by the storlets engine, warns of its own future.
        warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
        from mlstorlets.server.node import ConfigError

        expected += (ConfigError,)
        if args.command != "node-config":
            # Swift and the gateway: seconds of imports an operator's
            # node-config on every node has no use for.
            from mlstorlets.server.aio import ClusterError

            expected += (ClusterError,)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("mlstorlets: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        # The reader of the output (head, less) has gone, with what it
        # wanted: the shell's status of a writer SIGPIPE ended, and no
        # second error when the interpreter flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return READER_GONE
    except expected as err:
        print("mlstorlets: %s" % err, file=sys.stderr)
        for note in getattr(err, "__notes__", ()):
            print("mlstorlets: %s" % note, file=sys.stderr)
        return ERROR
    except ClientException as err:
        print(
            "mlstorlets: %s failed: %s" % (err.http_path or "a request", reason_of(err)[1]),
            file=sys.stderr,
        )
        return ERROR
