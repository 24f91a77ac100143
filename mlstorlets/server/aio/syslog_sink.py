"""A syslog datagram socket that appends what it receives to a file.

Swift logs to syslog, and a machine without a syslog daemon has nothing at
``/dev/log``: the embedded cluster runs this sink instead, and its servers
log to it (``log_address``).  The sandboxes' agents and libsbus log to a
channel of their own, which the servers read and log through this sink
(:mod:`mlstorlets.server.gateway.log_channel`).

    python -m mlstorlets.server.aio.syslog_sink SOCKET LOGFILE
"""

import os
import socket
import sys


def serve(socket_path, log_path):
    try:
        os.unlink(socket_path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(socket_path)
    # The sandboxes run without capabilities: they may write, not own, it.
    os.chmod(socket_path, 0o666)
    with open(log_path, "ab", buffering=0) as log:
        while True:
            data = sock.recv(65536)
            log.write(data.rstrip(b"\0\n") + b"\n")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.exit("usage: python -m mlstorlets.server.aio.syslog_sink SOCKET LOGFILE")
    serve(*argv)


if __name__ == "__main__":
    main()
