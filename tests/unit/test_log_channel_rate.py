"""The sandbox log channel's rate and tags (no cluster, no socket)."""

from mlstorlets.server.gateway.log_channel import LogChannel, TokenBucket, tagged


class Clock(object):
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_bucket_passes_a_burst_then_the_rate():
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    assert [bucket.take() for _ in range(7)] == [True] * 5 + [False] * 2
    clock.now += 0.35
    assert [bucket.take() for _ in range(4)] == [True] * 3 + [False]


def test_lines_are_tagged_and_escaped():
    line = tagged("acme-1234", b"<134>proxy-server: DELETE x\r\nforged\x00\n")
    assert line == "sandbox acme-1234: proxy-server: DELETE x\\x0d\\x0aforged"
    assert len(tagged("s", b"x" * 5000, max_line=100)) == len("sandbox s: ") + 100


def test_drops_are_counted_and_reported():
    clock, logged = Clock(), []
    channel = LogChannel(
        "/unused", "acme", logged.append, rate=1, burst=2, report_every=10, clock=clock
    )
    results = [channel.accept(b"line %d" % i) for i in range(5)]
    assert results == [True, True, False, False, False]
    assert logged == ["sandbox acme: line 0", "sandbox acme: line 1"]
    clock.now += 1.5
    assert channel.accept(b"again")
    assert logged[2:] == [
        "sandbox acme: 3 log lines dropped over the rate of 1 a second",
        "sandbox acme: again",
    ]


CLOSE_UNDER_RECV = """
import sys
import eventlet
from mlstorlets.server.gateway.log_channel import LogChannel

logged = []
channel = LogChannel(sys.argv[1], "acme", logged.append).open()
eventlet.sleep(0.05)  # its green thread now waits in recv
# A restart of the sandbox: its channel closed, the next one opened (on
# the same file descriptor number, which eventlet finds still watched).
channel.close()
channel = LogChannel(sys.argv[1], "acme", logged.append).open()
for _ in range(3):
    eventlet.sleep(0.05)
print("serving")
"""


def test_a_channel_closed_under_its_reader_leaves_the_server_serving(tmp_path):
    """A sandbox restart closes its channel while the reader waits: the
    reader ends, and nothing reaches the hub (which would end the server's
    process, dropping every request it had: a proxy worker did)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", CLOSE_UNDER_RECV, str(tmp_path / "log.sock")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (0, "serving\n"), done.stderr
