"""Helpers for tests that need a cluster or the sample data."""

import glob
import os
import re
import signal
import subprocess

from mlstorlets.server.agent import descendants
from mlstorlets.server.aio.processes import port_in_use

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The storlets the functional tests deploy.
TEST_STORLETS = os.path.join(REPO, "tests", "storlets")


NETNS_DIR = "/run/netns"


def remove_stale_namespaces(pattern):
    """Delete the network namespaces whose name matches ``pattern`` (a
    regular expression whose first group is the pid that made them) and
    whose maker is gone: what a SIGKILLed run left."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return
    for name in names:
        match = re.fullmatch(pattern, name)
        if match and not os.path.exists("/proc/" + match.group(1)):
            subprocess.run(["ip", "netns", "delete", name], stderr=subprocess.DEVNULL)


def free_base_port(span=20, start=21000, stop=40000):
    """A base port whose block of ``span`` ports is free on 127.0.0.1."""
    for base in range(start + os.getpid() % 50 * 100, stop, span):
        if not any(port_in_use(p) for p in range(base, base + span)):
            return base
    raise RuntimeError("no free block of %d ports" % span)


def children(pid):
    """The live children of process ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        fields = descendants.stat_fields(entry) if entry.isdigit() else None
        if fields is not None and int(fields[1]) == pid and fields[0] != b"Z":
            found.append(int(entry))
    return found


def cpu_seconds(pids):
    """User and system CPU seconds the processes ``pids`` have used."""
    used = [descendants.cpu_seconds(pid) for pid in pids]
    if None in used:
        raise ProcessLookupError("a process of %s is gone" % (pids,))
    return sum(used)


def data_files(cluster, account, container, name):
    """The .data files of an object, on every node's disk."""
    # Not at the top: every test and benchmark imports this module, few
    # need Swift's disk code.
    from swift.obj.diskfile import read_metadata

    found = []
    for path in glob.glob(
        os.path.join(cluster.state_dir, "srv", "node*", "*", "objects*", "*", "*", "*", "*.data")
    ):
        if read_metadata(path).get("name") == "/%s/%s/%s" % (account, container, name):
            found.append(path)
    return found


def default_sigint():
    """``preexec_fn`` for a child that is sent SIGINT: a shell starts a
    background job with SIGINT ignored, and a child inherits that, so
    Python would install no KeyboardInterrupt handler in it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def deploy_source(conn, data):
    """Deploy the test storlets to ``conn``'s account, with ``data`` as
    ``t/src.txt``: what a test on a cluster of its own runs them over."""
    # Not at the top: the client's modules are imported after whatever
    # monkey-patches threads (ThreadPoolExecutor's locks must be green).
    from mlstorlets.client.deploy import deploy

    deploy(conn, TEST_STORLETS, library=False, log=lambda msg: None)
    conn.put_container("t")
    conn.put_object("t", "src.txt", data)


def hostile(conn, container, action, obj="x", **params):
    """Run tests/storlets/hostile.py's ``action`` over ``container/obj``
    in the proxy's sandbox of ``conn``'s account; its report
    (``allowed ...`` or ``denied: ...``)."""
    headers = {
        "X-Run-Storlet": "hostile.py",
        "X-Storlet-Run-On-Proxy": "",
        "X-Storlet-Parameter-1": "action:" + action,
    }
    for i, (key, value) in enumerate(sorted(params.items()), 2):
        headers["X-Storlet-Parameter-%d" % i] = "%s:%s" % (key, value)
    headers_out, _ = conn.get_object(container, obj, headers=headers)
    return headers_out["x-object-meta-hostile-result"]


def engine_parameter(value):
    """(key, value) of a parameter header, as the storlets engine reads it:
    unquoted once, split at the first colon."""
    from urllib.parse import unquote

    key, _, value = unquote(value).partition(":")
    return key, value


def data_dir():
    """The sample faces: $DATA, or ../shared/data/faces beside the repo."""
    path = os.environ.get("DATA") or os.path.join(os.path.dirname(REPO), "shared", "data", "faces")
    if not os.path.isdir(path):
        raise RuntimeError("no sample data at %s: set DATA=/path/to/faces" % path)
    return path


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 in front of ``target`` that, for a request
    whose first line contains ``cut``, forwards the answer's headers and
    half its body, then closes the connection: a transfer dropped
    mid-body."""

    def __init__(self, target, cut):
        import socket
        import threading

        self.target, self.cut = target, cut.encode()
        self.times = 1
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._threading = threading
        self._closing = False
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def close(self):
        """Stop accepting.  The accepting thread is woken by a connection
        and closes the listener itself: under eventlet (the test process
        is monkey-patched), closing a socket another green thread waits on
        leaves that thread registered on the descriptor number, and the
        next file to get that number (a subprocess's pipe) fails with
        "Second simultaneous read"."""
        import socket

        self._closing = True
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
        except OSError:
            pass
        self._accepting.join(10)

    def _accept(self):
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self._closing:
                client.close()
                self.listener.close()
                return
            upstream = socket.create_connection(self.target)
            armed, ended = [], []
            for args in (
                (client, upstream, armed, ended, False),
                (upstream, client, armed, ended, True),
            ):
                self._threading.Thread(target=self._pump, args=args, daemon=True).start()

    def _pump(self, src, dst, armed, ended, answers):
        buf = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not answers:
                    if self.cut in data.split(b"\r\n", 1)[0] and self.times:
                        self.times -= 1
                        armed.append(True)
                    dst.sendall(data)
                    continue
                if not armed:
                    dst.sendall(data)
                    continue
                buf += data
                head, sep, body = buf.partition(b"\r\n\r\n")
                if not sep:
                    continue
                length = int(
                    [
                        line.split(b":")[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ][0]
                )
                if len(body) >= length // 2:
                    dst.sendall(head + sep + body[: length // 2])
                    break
        except Exception:
            # The other direction shut both sockets down (under eventlet's
            # green sockets this is not an OSError).
            pass
        # A shutdown wakes the other direction's recv; only the last of the
        # two closes: a socket closed under a green thread waiting on it
        # leaves that thread on the descriptor number, for the next file
        # that gets it (see close).
        for sock in (src, dst):
            try:
                sock.shutdown(2)
            except OSError:
                pass
        ended.append(True)
        if len(ended) == 2:
            src.close()
            dst.close()


def group_photo(*images, gap=40):
    """A group photo of ``images`` (see
    :func:`mlstorlets.client.datasets.group_photo`)."""
    from mlstorlets.client.datasets import group_photo as made

    return made(*images, gap=gap)[0]
