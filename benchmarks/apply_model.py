"""A user's ONNX image-to-image model over frames: in the cluster, on the
client writing back to the same store, and in one local process.

A small convolutional network (three 3x3 convolutions, 16 channels; the
shape of a style network's cost, built here, never downloaded) over
frames of the sample video at 320 px and at 1280x720, each way over the
same frames:

* ``in_cluster``: ``apply_model.py`` with copy semantics, next to the
  frames (``mlstorlets.client.models.apply_model``);
* ``client_side``: the same storlet code on the client, frames
  downloaded and outputs uploaded to the same store (``placement='client'``);
* ``local_process``: the same function over the frames in memory, in this
  process: decode, ``onnxruntime``, encode, no store.

Printed and saved beside the rates: CPU milliseconds per frame of every
process by role (``benchmarks/cpu.py``), the first request's time with a
model the workers have never seen against the next requests' median (the
model load), and the memory one model holds in a worker (resident size
after building its session and one run, against before; the runtime's
import counted apart).

And flicker: over the sample video's frames at 320 px, the mean change
from one output frame to the next against the source's (the flicker
ratio), and the share of pixels whose darkness (an edge drawn) changes
from frame to frame, for each frame filtered alone and for outputs
carried along the motion (``rotoscope --temporal 0.7``,
:mod:`mlstorlets.sandbox.video.temporal`), with what carrying costs per
frame.

Run (about 3 minutes on 2 cores)::

    DATA=../shared/data/faces .venv/bin/python benchmarks/apply_model.py

Figures go to benchmarks/results/apply_model.json.
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
UNIT_TESTS = os.path.join(HERE, "..", "tests", "unit")
sys.path.insert(0, UNIT_TESTS)
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import cpu  # noqa: E402

CONTAINER = "models-bench"
SIZES = {"320px": (320, 180), "1280x720": (1280, 720)}


def frames_of(source, count, size):
    """``count`` JPEG frames of ``source``, spread over it, at ``size``."""
    import cv2

    capture = cv2.VideoCapture(source)
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or count
    out = []
    for i in range(count):
        capture.set(cv2.CAP_PROP_POS_FRAMES, (i * total) // count)
        ok, frame = capture.read()
        if not ok:
            break
        frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        out.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    capture.release()
    return out


def _own_cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _with_client(found, seconds, objects):
    """``found`` with this process's CPU as the client's: the client path
    runs here, not in a child."""
    ms = round(1000.0 * seconds / max(objects, 1), 2)
    return dict(found, client=found["client"] + ms, total=round(found["total"] + ms, 2))


def local_process(model, frames):
    """Seconds per frame of the storlet's function in this process."""
    from sgd_fakes import FakeInput

    from mlstorlets.sandbox.models.tasks import apply_model

    params = {"source": "f.jpg", "model": "m.onnx"}
    apply_model([FakeInput(frames[0]), FakeInput(model)], params)  # the session, once
    started = time.perf_counter()
    for data in frames:
        apply_model([FakeInput(data), FakeInput(model)], params)
    return (time.perf_counter() - started) / len(frames)


_MEMORY = """
import json, sys
sys.path[:0] = sys.argv[1:3]
import numpy, cv2  # what every storlet worker has loaded already
from sgd_fakes import FakeInput

def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

base = rss()
from mlstorlets.sandbox.models import tasks
imported = rss()
model, frame = open(sys.argv[3], "rb").read(), open(sys.argv[4], "rb").read()
tasks.apply_model([FakeInput(frame), FakeInput(model)], {"source": "f.jpg"})
print(json.dumps({"runtime_import_kib": imported - base, "per_model_kib": rss() - imported}))
"""


def memory_per_model(model, frame):
    """KiB a fresh worker holds: the runtime's import (with the storlet's
    modules), then one model's session and one run, in a process of its
    own."""
    with tempfile.TemporaryDirectory() as scratch:
        paths = []
        for name, data in (("m.onnx", model), ("f.jpg", frame)):
            paths.append(os.path.join(scratch, name))
            with open(paths[-1], "wb") as f:
                f.write(data)
        out = subprocess.run(
            [sys.executable, "-c", _MEMORY, os.path.join(HERE, ".."), UNIT_TESTS] + paths,
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(out.stdout)


def video_frames(source, width=320, limit=250):
    import cv2

    capture = cv2.VideoCapture(source)
    frames = []
    while len(frames) < limit:
        ok, frame = capture.read()
        if not ok:
            break
        height = round(frame.shape[0] * width / frame.shape[1] / 2) * 2
        frames.append(cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA))
    capture.release()
    return frames


def flicker_table(frames, model, strength=0.7):
    """Flicker of each filter and of the model, alone and carried."""
    import numpy as np

    from mlstorlets.sandbox.models.tasks import image_model
    from mlstorlets.sandbox.video.filters import apply_filter
    from mlstorlets.sandbox.video.temporal import Stabilizer, flicker

    def dark_changes(images):
        masks = [image.max(axis=2) < 40 for image in images]
        return float(np.mean([np.mean(a != b) for a, b in zip(masks, masks[1:])]))

    source = flicker(frames)
    styles = {
        name: (lambda image, frame, name=name: apply_filter(image, name, {}, frame))
        for name in ("cartoon", "pencil", "stylize", "colormap")
    }
    styles["convnet model"] = image_model(model, {}, "frame", "convnet.onnx")
    table = {"source_flicker": source, "frames": len(frames), "strength": strength}
    for name, style in styles.items():
        alone = [style(f, "frame") for f in frames]
        stabilizer = Stabilizer(strength)
        started = time.perf_counter()
        carried = [stabilizer.step(f, a) for f, a in zip(frames, alone)]
        cost = (time.perf_counter() - started) / len(frames)
        table[name] = {
            "alone_ratio": flicker(alone) / source,
            "carried_ratio": flicker(carried) / source,
            "alone_dark_changes": dark_changes(alone),
            "carried_dark_changes": dark_changes(carried),
            "carry_ms_per_frame": 1000 * cost,
        }
    return table


def load_locally(data):
    """Seconds to check a model and build its session, in this process."""
    from mlstorlets.sandbox.models import graph

    graph.SESSIONS.clear()
    started = time.perf_counter()
    graph.session(data, "fresh.onnx")
    return time.perf_counter() - started


def first_and_next(conn, count=8):
    """Seconds of the first storlet GET with a model never seen by the
    sandbox's workers, and the median of the next ones."""
    import onnx_models

    from mlstorlets.client.swift import storlet_headers

    # A model of its own content, no worker has its session yet; wider
    # than the benchmark's (megabytes of weights, as a style network's).
    fresh = onnx_models.convnet(width=160, depth=4, seed=int(time.time()))
    conn.put_object(CONTAINER, "models/fresh.onnx", fresh)
    headers = storlet_headers(
        "apply_model.py",
        {"model": CONTAINER + "/models/fresh.onnx", "source": CONTAINER + "/f320px/000000.jpg"},
        ["/%s/models/fresh.onnx" % CONTAINER],
    )
    times = []
    for _ in range(count):
        started = time.perf_counter()
        conn.get_object(CONTAINER, "f320px/000000.jpg", headers=headers)
        times.append(time.perf_counter() - started)
    return times[0], statistics.median(times[2:]), len(fresh)


def run(args):
    import onnx_models
    from support import data_dir, free_base_port

    from mlstorlets.client.deploy import deploy
    from mlstorlets.client.models import apply_model
    from mlstorlets.server.aio import Cluster

    quiet = lambda msg: None  # noqa: E731
    state = tempfile.mkdtemp(prefix="mlsm-", dir="/tmp")
    cluster = Cluster(state)
    model = onnx_models.convnet()
    video_dir = os.path.join(data_dir(), "video")
    source = os.path.join(video_dir, sorted(os.listdir(video_dir))[0])
    result = {
        "model": "convnet: 3 convolutions 3x3, 16 channels, ReLU (%d bytes)" % len(model),
        "load_average_at_start": os.getloadavg(),
        "concurrency": args.concurrency,
        "sizes": {},
    }
    frames = {
        label: frames_of(source, args.frames if label == "320px" else args.frames // 3, size)
        for label, size in SIZES.items()
    }
    result["memory"] = memory_per_model(model, frames["1280x720"][0])
    result["flicker"] = flicker_table(video_frames(source), model)
    try:
        cluster.up(base_port=free_base_port(), log=quiet)
        conn = cluster.connection()
        deploy(conn, log=quiet)
        conn.put_container(CONTAINER)
        conn.put_object(CONTAINER, "models/convnet.onnx", model)
        for label, items in frames.items():
            for i, data in enumerate(items):
                conn.put_object(CONTAINER, "f%s/%06d.jpg" % (label, i), data)
        model_uri = "swift://%s/models/convnet.onnx" % CONTAINER
        for label, items in frames.items():
            row = {"frames": len(items), "local_process_s_per_frame": local_process(model, items)}
            for key, placement in (("in_cluster", "cluster"), ("client_side", "client")):
                before, own = cpu.snapshot(), _own_cpu()
                started = time.perf_counter()
                summary = apply_model(
                    model_uri,
                    "swift://%s/f%s/" % (CONTAINER, label),
                    "swift://%s/%s-%s/" % (CONTAINER, key, label),
                    connection=conn,
                    concurrency=args.concurrency,
                    placement=placement,
                    progress=False,
                )
                seconds = time.perf_counter() - started
                assert summary.ok and len(summary.done) == len(items), summary.format()
                row[key] = {
                    "s_per_frame": seconds / len(items),
                    "frames_per_s": len(items) / seconds,
                    "client_bytes": summary.client_bytes,
                    "cpu_ms_per_frame": _with_client(
                        cpu.per_object(before, cpu.snapshot(), len(items)),
                        _own_cpu() - own,
                        len(items),
                    ),
                }
            row["cluster_over_client_side"] = (
                row["in_cluster"]["frames_per_s"] / row["client_side"]["frames_per_s"]
            )
            row["cluster_over_local_process"] = (
                row["in_cluster"]["frames_per_s"] * row["local_process_s_per_frame"]
            )
            result["sizes"][label] = row
        first, warm, fresh_bytes = first_and_next(conn)
        result["fresh_model_bytes"] = fresh_bytes
        result["model_load_local_s"] = load_locally(onnx_models.convnet(width=160, depth=4, seed=1))
        result["first_request_s"] = first
        result["next_requests_median_s"] = warm
        result["model_load_s"] = first - warm
    finally:
        cluster.down(purge=True, log=quiet)
        shutil.rmtree(state, ignore_errors=True)
    result["load_average_at_end"] = os.getloadavg()
    return result


def report(result):
    print("model: %s" % result["model"])
    table = result["flicker"]
    print(
        "flicker over %d frames at 320 px (source: %.2f grey levels a frame), alone -> "
        "carried along the motion (strength %.1f):"
        % (table["frames"], table["source_flicker"], table["strength"])
    )
    for name, row in table.items():
        if isinstance(row, dict):
            print(
                "  %-13s ratio to the source %.2f -> %.2f, dark pixels changing %.2f%% -> %.2f%% "
                "(%.1f ms a frame to carry)"
                % (
                    name,
                    row["alone_ratio"],
                    row["carried_ratio"],
                    100 * row["alone_dark_changes"],
                    100 * row["carried_dark_changes"],
                    row["carry_ms_per_frame"],
                )
            )
    for label, row in result["sizes"].items():
        print(
            "%s, %d frames: in the cluster %.1f frames/s, client-side (same store) %.1f "
            "frames/s (cluster %.2fx), one local process %.1f frames/s (cluster %.2fx)"
            % (
                label,
                row["frames"],
                row["in_cluster"]["frames_per_s"],
                row["client_side"]["frames_per_s"],
                row["cluster_over_client_side"],
                1 / row["local_process_s_per_frame"],
                row["cluster_over_local_process"],
            )
        )
        for key in ("in_cluster", "client_side"):
            print("  CPU ms per frame, %s: %s" % (key, row[key]["cpu_ms_per_frame"]))
    print(
        "first request with a new model of %d bytes %.3f s, next ones %.3f s (model load "
        "%.3f s; checked and built in one local process: %.3f s)"
        % (
            result["fresh_model_bytes"],
            result["first_request_s"],
            result["next_requests_median_s"],
            result["model_load_s"],
            result["model_load_local_s"],
        )
    )
    print(
        "memory in a worker: onnxruntime import %(runtime_import_kib)d KiB, "
        "one model with its session and a 1280x720 run %(per_model_kib)d KiB" % result["memory"]
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=120, help="320 px frames (a third at 720p)")
    parser.add_argument("-j", "--concurrency", type=int, default=4)
    parser.add_argument(
        "--out", default=os.path.join(HERE, "results", "apply_model.json"), help="results file"
    )
    args = parser.parse_args(argv)
    result = run(args)
    report(result)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print("saved %s" % args.out)


if __name__ == "__main__":
    main()
