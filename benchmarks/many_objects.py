"""Many small objects: a cheap filter over thousands of 320 px frames.

The frames (JPEG, 320 pixels wide, from the sample video looped) are
uploaded once to the embedded cluster; then ``frame_filter.py``
(``colormap``) runs over all of them, each way into a fresh destination,
every way a client process of its own:

* in the cluster, many objects per call (the default for small objects:
  :mod:`mlstorlets.client.many_calls`);
* in the cluster, one object per call (the engine before it);
* on the client, written back into the same store (``--on-client``:
  download, filter, upload; like for like);
* one local process on local files (the frames downloaded beforehand).

Each is reported in objects per second with the CPU milliseconds per object
of every process by role (``benchmarks/cpu.py``), beside the filter's own
cost in a local loop and a plain PUT's (the issue's CPU target: at most 3x
their sum).  ``--sweep`` adds the size threshold's measurement: the same
filter over fewer, larger frames, many per call against one per call.

Run::

    DATA=../shared/data/faces .venv/bin/python benchmarks/many_objects.py [--frames 2000] \
        [--link 100mbit] [--sweep]

Figures go to benchmarks/results/many_objects[_<link>].json.  ``--link``
puts the client behind a shaped link (``benchmarks/link.py``; root).
"""

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import cpu  # noqa: E402
import targets  # noqa: E402

CONTAINER = "many"
PARAMS = {"filter": "colormap", "quality": "90"}
MLSTORLETS = os.path.join(os.path.dirname(sys.executable), "mlstorlets")

# One batch in a process of its own, with the objects per call forced: the
# CLI has no such option (the default is what users get).
BATCH = """
import json, sys
from mlstorlets.client import batch
from mlstorlets.client.stores.registry import Stores
src, dest, params, concurrency, per_call = sys.argv[1:6]
conn = Stores().swift_connection()
summary = batch.run_batch(
    conn, "frame_filter.py", src, dest, json.loads(params), int(concurrency),
    objects_per_call=int(per_call) or None,
)
print(summary.to_json())
"""


def frames(count, width):
    """``count`` JPEG frames ``width`` pixels wide from the sample video."""
    import cv2
    from support import data_dir

    video_dir = os.path.join(data_dir(), "video")
    source = os.path.join(video_dir, sorted(os.listdir(video_dir))[0])
    capture = cv2.VideoCapture(source)
    loop = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        height = round(frame.shape[0] * width / frame.shape[1])
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
        loop.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    capture.release()
    return [loop[i % len(loop)] for i in range(count)]


def upload(conn_factory, prefix, bodies, threads=8):
    from concurrent.futures import ThreadPoolExecutor

    def put(i):
        conn = conn_factory()
        conn.put_object(
            CONTAINER, "%sf%06d.jpg" % (prefix, i), bodies[i], content_type="image/jpeg"
        )

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, range(len(bodies))))


def timed_client(argv, env):
    before = cpu.snapshot()
    started = time.monotonic()
    out = subprocess.run(argv, env=env, stdout=subprocess.PIPE, check=True).stdout
    seconds = time.monotonic() - started
    summary = json.loads(out)
    done = len(summary["done"])
    return {
        "seconds": seconds,
        "done": done,
        "failed": len(summary["failed"]),
        "objects_per_s": done / seconds,
        "placement": summary["placement"],
        "cpu_ms_per_object": cpu.per_object(before, cpu.snapshot(), done),
    }


def filter_cost(bodies):
    """CPU milliseconds per frame of the filter itself, in a local loop."""
    from mlstorlets.sandbox.video import tasks

    class Frame:
        def __init__(self, data):
            self.data = data

        def read(self, n=-1):
            data, self.data = self.data, b""
            return data

        def get_metadata(self):
            return {}

        def close(self):
            pass

    sample = bodies[:200]
    started = time.process_time()
    for body in sample:
        tasks.filter_frame([Frame(body)], dict(PARAMS, source="f.jpg"))
    return (time.process_time() - started) * 1000 / len(sample)


def put_cost(conn, body, count=200):
    """CPU milliseconds per plain PUT of ``body``, by role, and the rate."""
    before = cpu.snapshot()
    started = time.monotonic()
    for i in range(count):
        conn.put_object(CONTAINER, "put/%06d.jpg" % i, body, content_type="image/jpeg")
    seconds = time.monotonic() - started
    found = cpu.per_object(before, cpu.snapshot(), count)
    return {"objects_per_s": count / seconds, "cpu_ms_per_object": found}


def run(args):
    from support import free_base_port

    from mlstorlets.client.deploy import deploy
    from mlstorlets.server.aio import Cluster

    quiet = lambda msg: None  # noqa: E731
    state = tempfile.mkdtemp(prefix="mlsm-", dir="/tmp")
    scratch = tempfile.mkdtemp(prefix="mlsm-data-")
    if args.link:
        from link import LinkedCluster

        cluster = LinkedCluster(state, args.link)
    else:
        cluster = Cluster(state)
    result = {
        "load_average_at_start": os.getloadavg(),
        "link": args.link or "loopback",
        "frames": args.frames,
        "concurrency": args.concurrency,
        "filter": PARAMS,
    }
    try:
        bodies = frames(args.frames, 320)
        result["frame_bytes_mean"] = sum(map(len, bodies)) / len(bodies)
        cluster.up(base_port=free_base_port(), log=quiet)
        env = dict(os.environ, **cluster.env())
        local = os.path.join(scratch, "frames")
        # Setting up does not cross the link.
        with cluster.link.inside("server") if args.link else contextlib.nullcontext():
            conn = cluster.connection()
            deploy(conn, log=quiet)
            conn.put_container(CONTAINER)
            upload(cluster.connection, "frames/", bodies)
            subprocess.run(
                [MLSTORLETS, "cp", "swift://%s/frames/" % CONTAINER, "file://%s/" % local],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        src = "swift://%s/frames/" % CONTAINER
        jobs = {"concurrency": str(args.concurrency)}
        runs = {}
        for key, argv in (
            (
                "cluster_many_per_call",
                [sys.executable, "-c", BATCH, src, "swift://%s/many/" % CONTAINER]
                + [json.dumps(PARAMS), jobs["concurrency"], "0"],
            ),
            (
                "cluster_one_per_call",
                [sys.executable, "-c", BATCH, src, "swift://%s/one/" % CONTAINER]
                + [json.dumps(PARAMS), jobs["concurrency"], "1"],
            ),
            (
                "client_side_into_swift",
                [MLSTORLETS, "run", "frame_filter.py", src, "swift://%s/client/" % CONTAINER]
                + ["-p", "filter=colormap", "-p", "quality=90", "-j", jobs["concurrency"]]
                + ["--json", "--on-client"],
            ),
            (
                "local_process_local_files",
                [MLSTORLETS, "run", "frame_filter.py", "file://%s/" % local]
                + ["file://%s/" % os.path.join(scratch, "out")]
                + ["-p", "filter=colormap", "-p", "quality=90", "-j", jobs["concurrency"]]
                + ["--json"],
            ),
        ):
            runs[key] = timed_client(argv, env)
            print(
                "%-28s %7.1f objects/s  %s"
                % (key, runs[key]["objects_per_s"], cpu.format_cpu(runs[key]["cpu_ms_per_object"])),
                flush=True,
            )
        result["runs"] = runs
        result["filter_cpu_ms_per_frame"] = filter_cost(bodies)
        with cluster.link.inside("server") if args.link else contextlib.nullcontext():
            result["plain_put"] = put_cost(cluster.connection(), bodies[0])
        if args.sweep:
            result["sweep"] = sweep(cluster, env, args)
    finally:
        cluster.down(purge=True, log=quiet)
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    result["load_average_at_end"] = os.getloadavg()
    return result


def sweep(cluster, env, args):
    """Many per call against one per call as the objects grow."""
    found = []
    for width in (320, 1280, 2560, 4096):
        bodies = frames(args.sweep_frames, width)
        prefix = "w%d/" % width
        # Each way into a destination of its own: many-w320/, one-w320/.
        upload(cluster.connection, prefix, bodies)
        src = "swift://%s/%s" % (CONTAINER, prefix)
        row = {"width": width, "bytes_mean": sum(map(len, bodies)) / len(bodies)}
        for key, per_call in (("many", "0"), ("one", "1")):
            argv = [
                sys.executable,
                "-c",
                BATCH,
                src,
                "swift://%s/%s-%s" % (CONTAINER, key, prefix),
            ]
            argv += [json.dumps(PARAMS), str(args.concurrency), per_call]
            row[key] = timed_client(argv, env)
        row["many_over_one"] = row["many"]["objects_per_s"] / row["one"]["objects_per_s"]
        print(
            "sweep %4d px (%7.0f bytes): many %6.1f/s, one %6.1f/s: %.2fx"
            % (
                width,
                row["bytes_mean"],
                row["many"]["objects_per_s"],
                row["one"]["objects_per_s"],
                row["many_over_one"],
            ),
            flush=True,
        )
        found.append(row)
    return found


def report(result):
    runs = result["runs"]
    many, one = runs["cluster_many_per_call"], runs["cluster_one_per_call"]
    client, local = runs["client_side_into_swift"], runs["local_process_local_files"]
    print(
        "%d frames of %.0f bytes; the filter costs %.2f ms CPU per frame in a local loop"
        % (result["frames"], result["frame_bytes_mean"], result["filter_cpu_ms_per_frame"])
    )
    put = result["plain_put"]
    put_ms = put["cpu_ms_per_object"]["total"]
    print("a plain PUT: %s" % cpu.format_cpu(put["cpu_ms_per_object"]))
    # Every server process's, not the client's.
    cluster_ms = many["cpu_ms_per_object"]["total"] - many["cpu_ms_per_object"]["client"]
    result["ratios"] = {
        "many_over_one_per_call": many["objects_per_s"] / one["objects_per_s"],
        "many_over_client_side_into_swift": many["objects_per_s"] / client["objects_per_s"],
        "many_over_local_process": many["objects_per_s"] / local["objects_per_s"],
        "cluster_cpu_over_filter_plus_put": cluster_ms
        / (result["filter_cpu_ms_per_frame"] + put_ms),
    }
    for key, value in result["ratios"].items():
        print("%-40s %.2fx" % (key, value))
    result["targets"] = [
        targets.check(
            "cheap filter, cluster / client-side into Swift, %s" % result["link"],
            result["ratios"]["many_over_client_side_into_swift"],
            3.0 if result["link"] != "loopback" else 1.5,
            at_least=True,
        ),
        targets.check(
            "cluster CPU per object / (filter + plain PUT)",
            result["ratios"]["cluster_cpu_over_filter_plus_put"],
            3.0,
        ),
    ]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--link", help="a shaped link between client and cluster, e.g. 100mbit")
    p.add_argument("--sweep", action="store_true", help="measure the size threshold too")
    p.add_argument("--sweep-frames", type=int, default=120)
    args = p.parse_args(argv)
    result = run(args)
    report(result)
    targets.save("many_objects" + ("_" + args.link if args.link else ""), result)


if __name__ == "__main__":
    main()
