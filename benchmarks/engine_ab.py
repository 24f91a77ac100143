"""The identity storlet GET against a plain GET: this tree against a revision.

``engine.py`` gives the ratio of one tree; on a machine whose speed drifts
between runs, a change to the engine shows only when the two trees run in
turns.  This script runs, ``--rounds`` times each, in alternation, a fresh
embedded cluster of the revision ``--against`` (a git worktree put first on
``PYTHONPATH``, which the servers and the sandboxes import the engine from)
and of this tree, and in each: ``--requests`` interleaved plain and identity
storlet GETs of 1 KiB, in four blocks, with the CPU of every process by
role around each block.

    .venv/bin/python benchmarks/engine_ab.py --against 3df982a \\
        [--rounds 3] [--requests 400]

Prints both trees' p50 ratios and CPU per request by role, and saves
benchmarks/results/engine_ab.json.  The ratios compare trees, not the
engine with a plain GET: the issue's target is checked by ``engine.py``,
interleaved.  In a tree from before
:mod:`mlstorlets.server.middleware.page_cache`, each storlet GET of a
block reads the object from the page cache and each plain GET from disk
(Swift's object server drops an object's pages after an authenticated
GET, and that tree's storlets left them).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BLOCKS = 4


def measure(requests):
    """One tree: {p50 of each kind, CPU ms per request by role and kind}."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    sys.path.insert(0, HERE)
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    import cpu
    from support import free_base_port

    import mlstorlets
    from mlstorlets.client.deploy import deploy
    from mlstorlets.server.aio import Cluster

    def timed(call):
        started = time.perf_counter()
        call()
        return 1000 * (time.perf_counter() - started)

    def own_cpu():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    quiet = lambda msg: None  # noqa: E731
    storlet = {"X-Run-Storlet": "probe.py"}
    kinds = {"plain": {}, "identity": storlet}
    times = {kind: [] for kind in kinds}
    spent = {kind: {} for kind in kinds}
    with tempfile.TemporaryDirectory() as state:
        cluster = Cluster(state)
        cluster.up(base_port=free_base_port(), log=quiet)
        try:
            conn = cluster.connection()
            deploy(conn, os.path.join(ROOT, "tests", "storlets"), library=False, log=quiet)
            conn.put_container("bench")
            conn.put_object("bench", "small", os.urandom(1024))
            for _ in range(30):  # past the daemon's start
                conn.get_object("bench", "small", headers=storlet)
            for _ in range(BLOCKS):
                for kind, headers in kinds.items():
                    before, mine = cpu.snapshot(), own_cpu()
                    for _ in range(requests // BLOCKS):
                        times[kind].append(
                            timed(lambda: conn.get_object("bench", "small", headers=headers))
                        )
                    after = cpu.snapshot()
                    after["client"] = before["client"] + own_cpu() - mine
                    for role, ms in cpu.per_object(before, after, requests).items():
                        spent[kind][role] = spent[kind].get(role, 0.0) + ms
        finally:
            cluster.down(purge=True, log=quiet)
    p50 = {kind: statistics.median(found) for kind, found in times.items()}
    return {
        "engine": os.path.dirname(mlstorlets.__file__),
        "plain_p50_ms": p50["plain"],
        "identity_p50_ms": p50["identity"],
        "ratio": p50["identity"] / p50["plain"],
        "cpu_ms": spent,
    }


def run_tree(requests, pythonpath=None):
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, __file__, "--measure", "--requests", str(requests)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(runs):
    roles = sorted({r for run in runs for r in run["cpu_ms"]["identity"]} - {"total"})
    return {
        "ratios": [round(run["ratio"], 3) for run in runs],
        "mean_ratio": statistics.fmean(run["ratio"] for run in runs),
        "cpu_ms": {
            kind: {
                role: round(statistics.fmean(run["cpu_ms"][kind][role] for run in runs), 2)
                for role in roles + ["total"]
            }
            for kind in ("plain", "identity")
        },
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", help="git revision to compare this tree with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.requests)))
        return
    if not args.against:
        parser.error("--against REVISION is required")
    sys.path.insert(0, HERE)
    import targets

    revision = subprocess.run(
        ["git", "-C", ROOT, "rev-parse", "--short", args.against],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    runs = {"against": [], "this": []}
    with tempfile.TemporaryDirectory() as scratch:
        worktree = os.path.join(scratch, "tree")
        subprocess.run(
            ["git", "-C", ROOT, "worktree", "add", "--detach", "-q", worktree, revision],
            check=True,
        )
        try:
            for round_ in range(1, args.rounds + 1):
                for name, path in (("against", worktree), ("this", None)):
                    run = run_tree(args.requests, path)
                    runs[name].append(run)
                    print(
                        "round %d, %s (%s): identity p50 %.2f ms / plain p50 %.2f ms = %.3fx"
                        % (
                            round_,
                            revision if path else "this tree",
                            run["engine"],
                            run["identity_p50_ms"],
                            run["plain_p50_ms"],
                            run["ratio"],
                        ),
                        flush=True,
                    )
        finally:
            subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", worktree])
    result = {
        "against": revision,
        "rounds": args.rounds,
        "requests": args.requests,
        revision: summary(runs["against"]),
        "this tree": summary(runs["this"]),
    }
    for name in (revision, "this tree"):
        found = result[name]
        print("%s: mean ratio %.3fx %s" % (name, found["mean_ratio"], found["ratios"]))
        for kind in ("plain", "identity"):
            print(
                "  %-8s CPU ms/request: %s"
                % (kind, ", ".join("%s %.2f" % kv for kv in found["cpu_ms"][kind].items()))
            )
    # No target here: the is interleaved (see engine.py).
    targets.save("engine_ab", result)


if __name__ == "__main__":
    main()
