"""A log channel of each sandbox's own, in place of the host's syslog.

The storlet agent and libsbus log to syslog, so a sandbox needs something
at ``/dev/log``.  Binding the host's syslog socket there let a storlet
write without bound to the host's log (gigabytes in seconds, slowing every
tenant) and write lines in any service's name (``proxy-server: ...
DELETE``).  Each sandbox gets a datagram socket of its own instead, read by
the gateway in the server's process:

* at most ``rate`` lines a second after a burst of ``burst`` (a token
  bucket), each cut to ``max_line`` bytes; what is over is dropped and
  counted, and the count logged when lines flow again or every
  ``report_every`` seconds;
* each line is written through the server's own logger as
  ``sandbox <scope>: <line>``, control characters escaped: whatever the
  storlet wrote, the line says whose it is.
"""

import os
import time

# A sandbox's logging, by default: 20 lines a second after 200.
DEFAULT_RATE = 20.0
DEFAULT_BURST = 200
DEFAULT_MAX_LINE = 1024


class TokenBucket(object):
    """``rate`` events a second, ``burst`` at once."""

    def __init__(self, rate, burst, clock=time.monotonic):
        self.rate, self.burst, self.clock = float(rate), float(burst), clock
        self.tokens = self.burst
        self.last = clock()

    def take(self):
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def tagged(scope, data, max_line=DEFAULT_MAX_LINE):
    """The line to log for the datagram ``data`` of sandbox ``scope``."""
    text = data[:max_line].decode("utf-8", "replace").rstrip("\0\n ")
    if text.startswith("<") and ">" in text[:5]:
        text = text[text.index(">") + 1 :]  # syslog's priority
    text = "".join(c if " " <= c != "\x7f" else "\\x%02x" % ord(c) for c in text)
    return "sandbox %s: %s" % (scope, text)


def bind_anywhere(sock, path):
    """Bind the Unix socket ``sock`` at ``path``, however deep.

    A socket's address holds at most 107 bytes, and the sandboxes' state
    directory may lie under a home directory of any length: the bind goes
    through a descriptor of the socket's directory, whose
    ``/proc/self/fd/N`` names that very directory in a few bytes.
    """
    directory = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sock.bind("/proc/self/fd/%d/%s" % (directory, os.path.basename(path)))
    finally:
        os.close(directory)


class LogChannel(object):
    """The socket at ``path`` that a sandbox sees as ``/dev/log``.

    Parameters
    ----------
    path : str
        Host path of the socket (bound read-write at ``/dev/log`` inside).
    scope : str
        Whose lines they are.
    forward : callable
        Takes one line to log (the server's ``logger.info``).
    """

    def __init__(
        self,
        path,
        scope,
        forward,
        rate=DEFAULT_RATE,
        burst=DEFAULT_BURST,
        max_line=DEFAULT_MAX_LINE,
        report_every=10.0,
        clock=time.monotonic,
    ):
        self.path, self.scope, self.forward = path, scope, forward
        self.bucket = TokenBucket(rate, burst, clock)
        self.max_line = max_line
        self.report_every = report_every
        self.clock = clock
        self.dropped = 0
        self.reported = clock()
        self.sock = None

    def accept(self, data):
        """Log ``data`` if the rate allows; True if it was logged."""
        now = self.clock()
        if not self.bucket.take():
            self.dropped += 1
            if now - self.reported >= self.report_every:
                self._report(now)
            return False
        if self.dropped:
            self._report(now)
        self.forward(tagged(self.scope, data, self.max_line))
        return True

    def _report(self, now):
        self.forward(
            "sandbox %s: %d log lines dropped over the rate of "
            "%g a second" % (self.scope, self.dropped, self.bucket.rate)
        )
        self.dropped = 0
        self.reported = now

    def open(self):
        """Bind the socket and read it in a green thread of its own."""
        import eventlet
        from eventlet.green import socket

        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_anywhere(self.sock, self.path)
        # The sandbox's uid writes to it; nobody else can reach the path.
        os.chmod(self.path, 0o666)
        eventlet.spawn_n(self._serve, self.sock)
        return self

    def _serve(self, sock):
        while True:
            try:
                data = sock.recv(65536)
            except (OSError, EOFError):
                # Closed: the sandbox was restarted or stopped.  eventlet
                # raises EOFError for a socket closed under a pending recv,
                # and this green thread's parent is the hub: what escaped
                # would end the hub, and the server process with it.
                return
            if not data:
                continue
            self.accept(data)

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
