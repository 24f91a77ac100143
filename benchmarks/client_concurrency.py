"""``-j`` on the client path: the CLI at concurrency N against concurrency 1.

One run, on an embedded cluster this script starts: the training photos in
a bucket of the cluster's S3 API, then ``mlstorlets run extract_face.py
s3://photos/train/ file:///tmp/...`` (the storlet runs on the client: the
destination is not in the cluster), in a process of its own as a user runs
it, at ``-j 1`` (the baseline) and at each ``-j`` asked for, ``--rounds``
times each, alternating.  When the CLI imported the servers (and with them
eventlet's monkey-patching) its threads were green and ``-j 4`` took as long
as ``-j 1``.  Prints a table and saves benchmarks/results/client_concurrency.json.

    DATA=../shared/data/faces .venv/bin/python benchmarks/client_concurrency.py
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

from support import data_dir, free_base_port  # noqa: E402

from mlstorlets.client import datasets  # noqa: E402
from mlstorlets.server.aio import Cluster  # noqa: E402


def run_cli(env, concurrency, dest):
    """Seconds of one client-side run, as the CLI's summary reports it."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlstorlets.client.cli",
            "run",
            "extract_face.py",
            "s3://photos/train/",
            "file://%s/" % dest,
            "-j",
            str(concurrency),
            "--no-resume",
            "--json",
        ],
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(done.stdout)
    assert summary["placement"] == "client" and not summary["failed"], summary
    return summary["seconds"], len(summary["done"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    photos = list(datasets.items(data_dir(), ("train",)))
    quiet = lambda msg: None  # noqa: E731
    levels = [1] + [j for j in args.concurrency if j != 1]
    seconds = {j: [] for j in levels}
    with tempfile.TemporaryDirectory(prefix="mlsb-") as state:
        cluster = Cluster(state)
        cluster.up(base_port=free_base_port(), log=quiet)
        try:
            env = cluster.env()
            cluster.connection().put_container("photos")
            # The photos reach the cluster's S3 API through the CLI, in a
            # process of its own: this one imported the servers, whose
            # eventlet patching breaks boto3's TLS setup.
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "mlstorlets.client.cli",
                    "cp",
                    "file://%s/train/" % data_dir(),
                    "s3://photos/train/",
                ],
                env=dict(os.environ, **env),
                capture_output=True,
                check=True,
            )
            with tempfile.TemporaryDirectory(prefix="mlsb-out-") as out:
                run_cli(env, 1, os.path.join(out, "warm"))
                for r in range(args.rounds):
                    for j in levels:
                        s, n = run_cli(env, j, os.path.join(out, "%d-%d" % (j, r)))
                        seconds[j].append(s)
        finally:
            cluster.down(log=quiet)
    best = {j: min(s) for j, s in seconds.items()}
    result = {
        "images": len(photos),
        "rounds": args.rounds,
        "seconds": seconds,
        "best_seconds": best,
        "speedup_vs_j1": {j: best[1] / best[j] for j in levels},
        "cpus": os.cpu_count(),
    }
    print(
        "extract_face.py on the client over %d photos (s3 -> file), best "
        "of %d rounds, %d CPUs" % (len(photos), args.rounds, os.cpu_count())
    )
    print("%6s %10s %10s" % ("-j", "seconds", "vs -j 1"))
    for j in levels:
        print("%6d %10.2f %9.2fx" % (j, best[j], result["speedup_vs_j1"][j]))
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "client_concurrency.json"), "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
