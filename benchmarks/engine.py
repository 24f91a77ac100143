"""Cost of the embedded cluster and of one storlet invocation.

Measures, in one run on this machine:

* ``aio up`` cold (a new state directory: configuration, rings, servers)
  and warm (the same cluster stopped and started again);
* the steady-state latency of a plain GET of a small object against a GET
  through an identity storlet (the project's probe storlet, copy action),
  both on an object server, and of a HEAD of the storlet object (which the
  storlet middleware makes on every invocation), interleaved so that load
  on the machine hits all alike;
* that, for each sandbox agent asked (``persistent``, the default of the
  bubblewrap gateway: workers that import a storlet once; ``upstream``:
  upstream's daemon, forking a child per request), with the proxy's cache
  of storlet metadata on (the default) and, for the first agent, off
  (``storlet_cache``'s ``cache_time = 0``: the HEAD of the storlet object
  on every invocation, as upstream does), the cluster restarted in
  between; and for the first agent with the gateway asking the sandbox
  whether the storlet's daemon runs on every invocation
  (``daemon_check_time = 0``) rather than once per 10 s (the default).
  Then, for the first agent, the same GETs in blocks of 50 of each kind
  (``consecutive``), for information only.  Swift's object server drops
  an object's pages after it reads them for an authenticated GET
  (``keep_cache_private`` is false by default), and so does its storlet
  middleware once a storlet read the object
  (:mod:`mlstorlets.server.middleware.page_cache`): each GET of either
  kind reads the object from disk.  So, for the first agent, the
  interleaved GETs once more with the object servers keeping the pages
  for both, each GET reading them from the cache
  (``keep_cache_private = true``: ``page_cache_alike``).  Target: identity
  storlet GET p50 at most 1.3x a plain GET, interleaved, checked both
  ways.

    .venv/bin/python benchmarks/engine.py [--requests 200] [--size 1024] \
        [--agents persistent,upstream]

Prints a table and saves benchmarks/results/engine.json.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
# GETs of one kind in a row in measure_consecutive.
BLOCK = 50
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import targets  # noqa: E402
from cluster_options import AGENTS, reconfigure  # noqa: E402
from support import free_base_port  # noqa: E402

from mlstorlets.client.deploy import deploy  # noqa: E402
from mlstorlets.server.aio import Cluster  # noqa: E402
from mlstorlets.server.gateway.sandbox import DEFAULT_DAEMON_CHECK_TIME  # noqa: E402
from mlstorlets.server.node import STORLET_CACHE_TIME  # noqa: E402


def timed(func):
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def percentiles(samples):
    ordered = sorted(samples)
    return {
        "mean_ms": 1000 * statistics.fmean(ordered),
        "p50_ms": 1000 * ordered[len(ordered) // 2],
        "p95_ms": 1000 * ordered[int(len(ordered) * 0.95)],
    }


def measure(conn, requests):
    """First call, then interleaved plain and identity-storlet GETs."""
    storlet = {"X-Run-Storlet": "probe.py"}
    first = timed(lambda: conn.get_object("bench", "small", headers=storlet))
    for _ in range(10):  # past the daemon's start
        conn.get_object("bench", "small", headers=storlet)
    plain, head, through = [], [], []
    for _ in range(requests):
        plain.append(timed(lambda: conn.get_object("bench", "small")))
        # The proxy's storlet middleware HEADs the storlet object on every
        # invocation (access and version check): part of the engine's cost
        # that is not the sandbox's.
        head.append(timed(lambda: conn.head_object("storlet", "probe.py")))
        through.append(timed(lambda: conn.get_object("bench", "small", headers=storlet)))
    result = {
        "first_storlet_get_s": first,
        "plain_get": percentiles(plain),
        "storlet_object_head": percentiles(head),
        "identity_storlet_get": percentiles(through),
    }
    for stat in ("mean", "p50"):
        result["storlet_over_plain_" + stat] = (
            result["identity_storlet_get"][stat + "_ms"] / result["plain_get"][stat + "_ms"]
        )
    return result


def measure_consecutive(conn, requests, block=BLOCK):
    """Plain and identity-storlet GETs, ``block`` of each kind in turn
    (see the module on what the page cache makes of it)."""
    storlet = {"X-Run-Storlet": "probe.py"}
    plain, through = [], []
    while len(plain) < requests:
        plain += [timed(lambda: conn.get_object("bench", "small")) for _ in range(block)]
        through += [
            timed(lambda: conn.get_object("bench", "small", headers=storlet)) for _ in range(block)
        ]
    result = {
        "block": block,
        "plain_get": percentiles(plain),
        "identity_storlet_get": percentiles(through),
    }
    result["storlet_over_plain_p50"] = (
        result["identity_storlet_get"]["p50_ms"] / result["plain_get"]["p50_ms"]
    )
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument(
        "--agents",
        default=",".join(AGENTS),
        help="sandbox agents to measure, comma-separated (%s)" % ", ".join(AGENTS),
    )
    args = parser.parse_args()
    agents = args.agents.split(",")
    if not set(agents) <= set(AGENTS):
        parser.error("--agents: choose among %s" % ", ".join(AGENTS))
    quiet = lambda msg: None  # noqa: E731
    by_agent = {}
    with tempfile.TemporaryDirectory() as state:
        cluster = Cluster(state)
        base = free_base_port()
        cold = timed(lambda: cluster.up(base_port=base, log=quiet))
        cluster.down(log=quiet)
        warm = timed(lambda: cluster.up(log=quiet))
        try:
            conn = cluster.connection()
            deploy(conn, os.path.join(HERE, "..", "tests", "storlets"), library=False, log=quiet)
            conn.put_container("bench")
            conn.put_object("bench", "small", os.urandom(args.size))
            for agent in agents:
                reconfigure(
                    cluster,
                    agent=agent,
                    storlet_cache_time=STORLET_CACHE_TIME,
                    daemon_check_time=DEFAULT_DAEMON_CHECK_TIME,
                )
                by_agent[agent] = measure(cluster.connection(), args.requests)
                if agent == agents[0]:
                    consecutive = measure_consecutive(cluster.connection(), args.requests)
                    reconfigure(cluster, agent=agent, keep_cache_private=True)
                    cached = measure(cluster.connection(), args.requests)
                    reconfigure(cluster, agent=agent, keep_cache_private=False)
            reconfigure(cluster, agent=agents[0], storlet_cache_time=0)
            uncached = measure(cluster.connection(), args.requests)
            reconfigure(
                cluster, agent=agents[0], storlet_cache_time=STORLET_CACHE_TIME, daemon_check_time=0
            )
            checked = measure(cluster.connection(), args.requests)
        finally:
            cluster.down(log=quiet)
    main_agent = agents[0]
    result = dict(
        {
            "aio_up_cold_s": cold,
            "aio_up_warm_s": warm,
            "object_bytes": args.size,
            "requests": args.requests,
            "agent": main_agent,
            "agents": by_agent,
            "storlet_cache_time": float(STORLET_CACHE_TIME),
            "without_storlet_cache": uncached,
            "daemon_check_time": float(DEFAULT_DAEMON_CHECK_TIME),
            "daemon_checked_every_time": checked,
            "consecutive": consecutive,
            "page_cache_alike": cached,
        },
        **by_agent[main_agent],
    )
    rows = [(agent, r) for agent, r in by_agent.items()]
    rows.append(("%s, no storlet cache" % main_agent, uncached))
    rows.append(("%s, daemon asked each time" % main_agent, checked))
    print("aio up: cold %.2f s, warm %.2f s" % (cold, warm))
    print(
        "%-32s %8s %8s %8s %9s"
        % (
            "%d x GET of %d B" % (args.requests, args.size),
            "mean ms",
            "p50 ms",
            "p95 ms",
            "first s",
        )
    )
    for agent, r in rows:
        for label, key in (
            ("plain", "plain_get"),
            ("HEAD of the storlet object", "storlet_object_head"),
            ("identity storlet, %s" % agent, "identity_storlet_get"),
        ):
            print(
                "%-32s %8.1f %8.1f %8.1f %9s"
                % (
                    label,
                    r[key]["mean_ms"],
                    r[key]["p50_ms"],
                    r[key]["p95_ms"],
                    "%.2f" % r["first_storlet_get_s"] if key == "identity_storlet_get" else "",
                )
            )
        print("storlet / plain, %s: mean %.2fx" % (agent, r["storlet_over_plain_mean"]))
    print(
        "storlet cache: identity storlet GET p50 %.2fx with, %.2fx "
        "without (%s agent)"
        % (
            by_agent[main_agent]["storlet_over_plain_p50"],
            uncached["storlet_over_plain_p50"],
            main_agent,
        )
    )
    print(
        "daemon check: identity storlet GET p50 %.2fx once per %g s, %.2fx on every "
        "invocation (%s agent)"
        % (
            by_agent[main_agent]["storlet_over_plain_p50"],
            DEFAULT_DAEMON_CHECK_TIME,
            checked["storlet_over_plain_p50"],
            main_agent,
        )
    )
    for label, r, how in (
        (
            "consecutive",
            consecutive,
            "%d of each kind in turn" % consecutive["block"],
        ),
        ("page cache alike", cached, "interleaved, the object's pages kept for both"),
    ):
        print(
            "%s: identity storlet GET p50 %.1f ms, plain %.1f ms, %.2fx (%s; %s agent)"
            % (
                label,
                r["identity_storlet_get"]["p50_ms"],
                r["plain_get"]["p50_ms"],
                r["storlet_over_plain_p50"],
                how,
                main_agent,
            )
        )
    result["targets"] = [
        targets.check(
            "identity storlet GET p50 / plain GET p50 (%s agent)" % agent,
            r["storlet_over_plain_p50"],
            1.3,
        )
        for agent, r in by_agent.items()
    ] + [
        targets.check(
            "identity storlet GET p50 / plain GET p50, the page cache alike for both "
            "(%s agent)" % main_agent,
            cached["storlet_over_plain_p50"],
            1.3,
        )
    ]
    targets.save("engine", result)


if __name__ == "__main__":
    main()
