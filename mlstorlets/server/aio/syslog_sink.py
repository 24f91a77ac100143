"""A syslog datagram socket that appends what it receives to a file.

The storlet agent, libsbus and Swift all log to syslog.  A machine without a
syslog daemon has nothing at ``/dev/log``; the embedded cluster runs this
sink instead and binds it at ``/dev/log`` inside every sandbox.

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
