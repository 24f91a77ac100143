"""Latency under load: many storlet calls at once, against plain GETs.

On an embedded cluster this script starts (one object server), with the
photos of the sample set ``$DATA`` uploaded (``--phone`` uses phone-size
photos instead, see ``phone_photos.py``), three series of ``--calls`` GETs,
``--concurrency`` in flight, cycling over the photos:

* **plain GET**: the baseline, measured in the same run;
* **identity storlet**: the same GETs through ``tests/storlets/probe.py``
  (copies its input), i.e. the engine's cost without a computation;
* **extract_face**: the same GETs through ``extract_face.py`` (answers
  the crop).

Each series starts after a warm-up (``--concurrency`` calls) and is run by a
client process that imports only client code.  Prints, for each, p50, p90,
p99, max, calls per second and failures (with the first reasons), the issue's
target (p99 at most 3x p50 at concurrency 16), and saves
benchmarks/results/load.json.

    DATA=../shared/data/faces .venv/bin/python benchmarks/load.py \
        [--calls 500] [--concurrency 16] [--phone]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
# tests/support (free ports, the sample data) imports the server side: only
# the parent process, which runs the cluster, may use it.
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import targets  # noqa: E402

CONTAINER = "load"
SERIES = (
    ("plain GET", None),
    ("identity storlet", "probe.py"),
    ("extract_face", "extract_face.py"),
)
MAX_REASONS = 3


# -- the client part ---------------------------------------------------------


def part(args):
    """Run one series; return its latencies (s) and failures."""
    from mlstorlets.client.connection import connection_from_environment
    from mlstorlets.client.swift import Swift, SwiftError

    swift = Swift(connection_from_environment())
    names = [e["name"] for e in swift.listing(CONTAINER)]
    headers = {"X-Run-Storlet": args.storlet} if args.storlet else {}
    lock = threading.Lock()
    failures = []

    def call(i):
        name = names[i % len(names)]
        started = time.perf_counter()
        try:
            swift.call(name, "get_object", CONTAINER, name, headers=headers)
        except SwiftError as err:
            with lock:
                failures.append(err.reason)
            return None
        return time.perf_counter() - started

    swift.parallel(call, range(args.concurrency), args.concurrency)
    failures.clear()
    started = time.perf_counter()
    latencies = swift.parallel(call, range(args.calls), args.concurrency)
    wall = time.perf_counter() - started
    return {
        "latencies_s": [x for x in latencies if x is not None],
        "failures": len(failures),
        "failure_reasons": sorted(set(failures))[:MAX_REASONS],
        "wall_s": wall,
    }


def run_part(args, storlet, env):
    argv = [
        sys.executable,
        os.path.abspath(__file__),
        "--part",
        "--calls",
        str(args.calls),
        "--concurrency",
        str(args.concurrency),
        "--storlet",
        storlet or "",
    ]
    done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, check=True)
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


# -- the run -----------------------------------------------------------------


def quantile(ordered, q):
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(figures, calls):
    ordered = sorted(figures.pop("latencies_s"))
    if not ordered:
        return dict(figures, calls=calls, ok=0)
    return dict(
        figures,
        calls=calls,
        ok=len(ordered),
        p50_ms=1000 * quantile(ordered, 0.50),
        p90_ms=1000 * quantile(ordered, 0.90),
        p99_ms=1000 * quantile(ordered, 0.99),
        max_ms=1000 * ordered[-1],
        calls_per_s=calls / figures["wall_s"],
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--phone",
        action="store_true",
        help="phone-size photos (12 MP) instead of the sample photos",
    )
    parser.add_argument(
        "--images", type=int, default=48, help="phone-size photos to make (with --phone)"
    )
    parser.add_argument("--part", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--storlet", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.part:
        print(json.dumps(part(args)))
        return None
    from support import data_dir, free_base_port

    from mlstorlets.client import datasets
    from mlstorlets.client.deploy import deploy
    from mlstorlets.server.aio import Cluster

    photos = [(os.path.basename(i.path), i.path) for i in datasets.items(data_dir(), ("train",))]
    if args.phone:
        from phone_photos import make

        folder = make(photos, args.images)
        photos = [(n, os.path.join(folder, n)) for n in sorted(os.listdir(folder))]
    quiet = lambda msg: None  # noqa: E731
    state = tempfile.mkdtemp(prefix="mlsb-", dir="/tmp")
    cluster = Cluster(state)
    result = {
        "calls": args.calls,
        "concurrency": args.concurrency,
        "photos": len(photos),
        "phone_size": args.phone,
        "load_average_at_start": os.getloadavg(),
        "series": {},
    }
    try:
        cluster.up(base_port=free_base_port(), log=quiet)
        conn = cluster.connection()
        deploy(conn, log=quiet)
        deploy(conn, os.path.join(HERE, "..", "tests", "storlets"), library=False, log=quiet)
        conn.put_container(CONTAINER)
        total = 0
        for name, path in photos:
            with open(path, "rb") as f:
                data = f.read()
            total += len(data)
            conn.put_object(
                CONTAINER,
                name,
                data,
                headers={"X-Object-Meta-Name": datasets.label_of(name, "train")},
            )
        result["photo_bytes_mean"] = total / len(photos)
        env = dict(os.environ, **cluster.env())
        print(
            "%d GETs at concurrency %d over %d %s photos (%.0f KB mean)"
            % (
                args.calls,
                args.concurrency,
                len(photos),
                "phone-size" if args.phone else "sample",
                total / len(photos) / 1e3,
            ),
            flush=True,
        )
        for label, storlet in SERIES:
            result["series"][label] = summarize(run_part(args, storlet, env), args.calls)
    finally:
        cluster.down(purge=True, log=quiet)
        shutil.rmtree(state, ignore_errors=True)
    result["load_average_at_end"] = os.getloadavg()
    report(result)
    targets.save("load", result)
    return result


def report(result):
    print(
        "%-18s %8s %8s %8s %8s %8s %9s"
        % ("", "p50 ms", "p90 ms", "p99 ms", "max ms", "calls/s", "failures")
    )
    for label, s in result["series"].items():
        if not s["ok"]:
            print("%-18s every call failed" % label)
        else:
            print(
                "%-18s %8.1f %8.1f %8.1f %8.1f %8.1f %9d"
                % (
                    label,
                    s["p50_ms"],
                    s["p90_ms"],
                    s["p99_ms"],
                    s["max_ms"],
                    s["calls_per_s"],
                    s["failures"],
                )
            )
        for reason in s["failure_reasons"]:
            print("  failed: %s" % reason)
    series = result["series"]
    plain = series["plain GET"]
    ratios = result["ratios"] = {}
    checks = result["targets"] = []
    for label in ("identity storlet", "extract_face"):
        s = series[label]
        if not s["ok"] or not plain["ok"]:
            continue
        ratios[label + " p50 / plain GET p50"] = s["p50_ms"] / plain["p50_ms"]
        print("%s p50 / plain GET p50 under load: %.2fx" % (label, s["p50_ms"] / plain["p50_ms"]))
        checks.append(
            targets.check(
                "%s p99 / p50 at concurrency %d" % (label, result["concurrency"]),
                s["p99_ms"] / s["p50_ms"],
                3.0,
            )
        )
        if s["failures"]:
            print("(%d of %d %s calls failed)" % (s["failures"], s["calls"], label))


if __name__ == "__main__":
    main()
