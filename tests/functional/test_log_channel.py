"""A sandbox's log cannot fill the host's disk or speak for others.

The hostile storlet floods ``/dev/log`` from 4 processes with lines
written as the proxy's (``proxy-server: ... DELETE /v1/AUTH_victim``).
Upstream bound the host's syslog socket there: every line reached the
host's log as the proxy's.  Each sandbox's log channel passes a bounded
rate, tags every line with the account's scope, and counts what it drops.
"""

import os
import time
import uuid

from mlstorlets.server.gateway import log_channel
from mlstorlets.server.gateway.scope import account_scope

RESULT = "x-object-meta-hostile-result"


def test_a_log_flood_is_bounded_and_tagged(cluster, conn, container):
    conn.put_object(container, "x", b"x")
    mark = uuid.uuid4().hex
    started = time.monotonic()
    headers, _ = conn.get_object(
        container,
        "x",
        headers={
            "X-Run-Storlet": "hostile.py",
            "X-Storlet-Run-On-Proxy": "",
            "X-Storlet-Parameter-1": "action:flood",
            "X-Storlet-Parameter-2": "lines:5000",
            "X-Storlet-Parameter-3": "mark:" + mark,
            "X-Storlet-Parameter-4": "n:4",
        },
    )
    seconds = time.monotonic() - started
    assert headers[RESULT] == "allowed sent 20000"
    time.sleep(1)  # what the channel read is logged by then
    with open(os.path.join(cluster.layout.log_dir, "syslog.log"), errors="replace") as f:
        lines = [line for line in f if mark in line]
    scope = account_scope(conn.url.rsplit("/", 1)[1])
    print("20000 lines sent in %.1f s; %d reached the log" % (seconds, len(lines)))
    limit = log_channel.DEFAULT_BURST + log_channel.DEFAULT_RATE * (seconds + 2)
    assert 0 < len(lines) <= limit
    # None speaks as the proxy: each is the sandbox's, tagged with its scope.
    assert all(not line.split(">", 1)[-1].startswith("proxy-server: 127") for line in lines)
    assert all("sandbox %s: proxy-server: 127.0.0.1" % scope in line for line in lines)
