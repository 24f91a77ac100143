"""A shaped network link between a benchmark's client and its cluster.

Two network namespaces of our own, one for the cluster ("server") and one for
the client, joined by a veth pair whose two ends are shaped with ``tc ... tbf``
to one rate (``netem`` is not available on these machines; see pitfall 15 of
the design notes).  The veth pair is created directly inside the two
namespaces and the addresses live only there: no interface of the host is
touched.  Everything is removed when the link is closed, on an exception, on
Ctrl-C, on SIGTERM and at interpreter exit; namespaces left by a run that was
SIGKILLed are removed by the next run (their names carry the dead pid).

A thread enters a namespace with ``setns(2)``: the network namespace is per
thread in Linux, and sockets, threads and processes a thread creates stay in
the namespace it was in at the time.  So in one Python process::

    with Link('100mbit') as link:
        with link.inside('server'):
            cluster.up(proxy_bind_ip='0.0.0.0')   # servers start in there
        link.enter('client')                        # this thread's requests
        ...                                         # cross the link

:class:`LinkedCluster` packs that for a benchmark written against
:class:`mlstorlets.server.aio.Cluster`: its ``up`` opens the link, starts the
servers in the server namespace and moves the calling thread into the client
namespace; its credentials name the proxy's address on the link; its ``down``
stops the servers and removes the link.

    .venv/bin/python benchmarks/link.py [--rate 100mbit] [--seconds 3]

measures the link (TCP, one stream) and saves benchmarks/results/link.json.
Needs root and iproute2 (``ip``, ``tc``).
"""

import argparse
import atexit
import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
from mlstorlets.server.aio import Cluster  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from support import NETNS_DIR, remove_stale_namespaces  # noqa: E402

CLONE_NEWNET = 0x40000000
PREFIX = "mlsbench"
SERVER_IP, CLIENT_IP = "10.213.0.1", "10.213.0.2"
_libc = ctypes.CDLL(None, use_errno=True)


class LinkError(RuntimeError):
    """The link cannot be made."""


def _run(*argv):
    if not shutil.which(argv[0]):
        raise LinkError(
            "%s not found: a shaped link needs iproute2 (apt-get install iproute2)" % argv[0]
        )
    done = subprocess.run(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    if done.returncode:
        raise LinkError(
            "%s failed: %s (a shaped link needs root)"
            % (" ".join(argv), done.stderr.decode().strip())
        )


def _bytes_per_second(rate):
    """tc's rate syntax (``100mbit``, ``1gbit``, ``500kbit``) in bytes/s."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)bit", rate.lower())
    if not match:
        raise ValueError("a rate such as 100mbit or 1gbit, not %r" % rate)
    scale = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[match.group(2)]
    return float(match.group(1)) * scale / 8


def _setns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "setns %s: %s" % (path, os.strerror(err)))
    finally:
        os.close(fd)


class Link:
    """Two network namespaces joined by a veth pair shaped to ``rate``.

    Parameters
    ----------
    rate : str
        tc's rate, e.g. ``'100mbit'`` or ``'1gbit'``; both directions.
    """

    def __init__(self, rate):
        self.rate = rate
        self.bytes_per_second = _bytes_per_second(rate)
        tag = "%s-%d" % (PREFIX, os.getpid())
        self.namespaces = {"server": tag + "-s", "client": tag + "-c"}
        self.server_ip, self.client_ip = SERVER_IP, CLIENT_IP
        self._opened = False
        self._previous_sigterm = None

    # -- life cycle ------------------------------------------------------
    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()

    def open(self):
        if self._opened:
            return
        remove_stale_namespaces(PREFIX + r"-(\d+)-[sc]")
        self._opened = True
        atexit.register(self.close)
        try:
            # SIGTERM unwinds like Ctrl-C, through every finally: block.
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
        except ValueError:
            pass  # not the main thread, which alone receives signals
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self):
        server, client = self.namespaces["server"], self.namespaces["client"]
        for ns in (server, client):
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run(
            "ip",
            "link",
            "add",
            "veth-s",
            "netns",
            server,
            "type",
            "veth",
            "peer",
            "name",
            "veth-c",
            "netns",
            client,
        )
        # A bucket of 5 ms of traffic, and at least a few full-size (GSO)
        # packets: a smaller one throttles below the rate.
        burst = "%db" % max(64 * 1024, int(self.bytes_per_second / 200))
        for ns, dev, ip in ((server, "veth-s", self.server_ip), (client, "veth-c", self.client_ip)):
            _run("ip", "-n", ns, "addr", "add", ip + "/30", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
            _run(
                "tc",
                "-n",
                ns,
                "qdisc",
                "add",
                "dev",
                dev,
                "root",
                "tbf",
                "rate",
                self.rate,
                "burst",
                burst,
                "latency",
                "50ms",
            )

    def close(self):
        """Remove both namespaces (and so the veth pair); idempotent."""
        if not self._opened:
            return
        self._opened = False
        for ns in self.namespaces.values():
            subprocess.run(["ip", "netns", "delete", ns], stderr=subprocess.DEVNULL)
        atexit.unregister(self.close)
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None

    # -- using it --------------------------------------------------------
    def path(self, side):
        return os.path.join(NETNS_DIR, self.namespaces[side])

    def enter(self, side):
        """Move the calling thread into ``side`` ('server' or 'client')."""
        _setns(self.path(side))

    @contextlib.contextmanager
    def inside(self, side):
        """Run a block in ``side``'s namespace, then come back."""
        back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            self.enter(side)
            yield self
        finally:
            try:
                if _libc.setns(back, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back")
            finally:
                os.close(back)

    def command(self, side, argv):
        """``argv`` as a command that runs in ``side``'s namespace."""
        return ["ip", "netns", "exec", self.namespaces[side]] + list(argv)

    def measure(self, seconds=2.0, port=5201):
        """Bytes per second of one TCP stream from server to client."""
        with self.inside("server"):
            listener = socket.create_server((self.server_ip, port))
        chunk = b"\0" * (1 << 20)

        def send():
            conn, _ = listener.accept()
            deadline = time.monotonic() + seconds
            with conn:
                while time.monotonic() < deadline:
                    conn.sendall(chunk)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        received = 0
        with self.inside("client"):
            with socket.create_connection((self.server_ip, port)) as conn:
                started = time.perf_counter()
                while True:
                    data = conn.recv(1 << 20)
                    if not data:
                        break
                    received += len(data)
                elapsed = time.perf_counter() - started
        sender.join()
        listener.close()
        return received / elapsed


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


class LinkedCluster(Cluster):
    """An embedded cluster behind a shaped link, used from the other end.

    ``up`` opens the link, starts every server in its server namespace (the
    proxy listening on the link too) and leaves the calling thread in the
    client namespace: what that thread (and the threads and connections it
    makes later) sends crosses the link.  ``credentials`` and ``connection``
    reach the proxy at its address on the link; ``down`` stops the servers,
    returns the thread and removes the link.

    Parameters
    ----------
    state_dir : str
    rate : str
        tc's rate, e.g. ``'100mbit'``.
    """

    def __init__(self, state_dir, rate):
        super().__init__(state_dir)
        self.link = Link(rate)
        self._home = None

    def up(self, base_port=None, nodes=None, native_lib_dir=None, log=print, proxy_bind_ip=None):
        self.link.open()
        if self._home is None:
            self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        with self.link.inside("server"):
            started = super().up(
                base_port=base_port,
                nodes=nodes,
                native_lib_dir=native_lib_dir,
                log=log,
                proxy_bind_ip="0.0.0.0",
            )
        self.link.enter("client")
        return started

    def down(self, purge=False, log=print):
        try:
            return super().down(purge=purge, log=log)
        finally:
            if self._home is not None:
                _libc.setns(self._home, CLONE_NEWNET)
                os.close(self._home)
                self._home = None
            self.link.close()

    def credentials(self, account="main", layout=None):
        auth, user, key = super().credentials(account, layout)
        return (auth.replace("//127.0.0.1:", "//%s:" % self.link.server_ip), user, key)


def main():
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rate", action="append", help="tc rate; repeat for several (default: 100mbit and 1gbit)"
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    results = {}
    for rate in args.rate or ["100mbit", "1gbit"]:
        with Link(rate) as link:
            measured = link.measure(args.seconds)
        results[rate] = {
            "shaped_mbit_s": link.bytes_per_second * 8 / 1e6,
            "measured_mbit_s": measured * 8 / 1e6,
        }
        print(
            "%-8s shaped %7.1f Mbit/s, measured %7.1f Mbit/s (one TCP "
            "stream)" % (rate, results[rate]["shaped_mbit_s"], results[rate]["measured_mbit_s"])
        )
    here = os.path.dirname(os.path.abspath(__file__))
    os.makedirs(os.path.join(here, "results"), exist_ok=True)
    with open(os.path.join(here, "results", "link.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
