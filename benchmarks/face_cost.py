"""Per-face cost of detection and embedding, locally and through the cluster.

Measures, in one run on this machine, over two sets of images made from
``$DATA``: the sample photos (about 270x190 px, one face each) and frames
of the sample video (1280x720), written as JPEG:

* **locally**, per image, the time of each stage as the storlets run it:
  OpenCV's Haar cascade (the former detector: the baseline), dlib's
  detection with 5-point landmarks (:func:`mlstorlets.sandbox.faces.embed.find_faces`),
  and the 128-d embedding of the faces found
  (:func:`~mlstorlets.sandbox.faces.embed.describe`);
* **through the cluster**, the GET latency of the same images through a
  benchmark storlet that runs only one stage (``benchmarks/storlets/face_stage.py``:
  ``haar``, ``detect``, or ``embed`` = detect + embedding), against a GET
  through the identity storlet (the engine's cost alone) and a plain GET,
  interleaved so that load hits all alike.  In the cluster, detection costs
  ``detect - identity`` and the embedding ``embed - detect``.

    DATA=../shared/data/faces .venv/bin/python benchmarks/face_cost.py [--frames 20] [--repeat 1]

Prints a table and saves benchmarks/results/face_cost.json.  Figures from
a busy machine (four engineers share two cores here) are indicative only.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import cv2  # noqa: E402
import targets  # noqa: E402
from support import free_base_port  # noqa: E402

from mlstorlets.client.deploy import deploy  # noqa: E402
from mlstorlets.sandbox.faces import embed  # noqa: E402
from mlstorlets.sandbox.faces.detect import detect_faces  # noqa: E402
from mlstorlets.sandbox.faces.image import decode_image  # noqa: E402
from mlstorlets.server.aio import Cluster  # noqa: E402

STAGES = ("haar", "detect", "embed")


def image_sets(data, n_frames):
    """{set name: [(name, JPEG bytes)]}."""
    photos = []
    for split in ("train", "test"):
        root = os.path.join(data, split)
        for name in sorted(os.listdir(root)):
            with open(os.path.join(root, name), "rb") as f:
                photos.append(("%s/%s" % (split, name), f.read()))
    frames = []
    capture = cv2.VideoCapture(os.path.join(data, "video", "obama_mov.avi"))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or 122
    step = max(1, total // n_frames)
    index = 0
    while len(frames) < n_frames:
        ok, frame = capture.read()
        if not ok:
            break
        if index % step == 0:
            frames.append(("frames/%04d.jpeg" % index, cv2.imencode(".jpeg", frame)[1].tobytes()))
        index += 1
    capture.release()
    return {"photos": photos, "video frames 1280x720": frames}


def ms(samples):
    return 1000 * statistics.median(samples)


def timed(func):
    started = time.perf_counter()
    result = func()
    return time.perf_counter() - started, result


def measure_locally(images, repeat):
    """Median ms per image of each stage, and faces per image."""
    haar, detect, describe, faces = [], [], [], []
    for _ in range(repeat):
        for name, data in images:
            gray = decode_image(data, name)
            rgb = decode_image(data, name, color=True)
            haar.append(timed(lambda: detect_faces(gray))[0])
            seconds, found = timed(lambda: embed.find_faces(rgb))
            detect.append(seconds)
            faces.append(len(found))
            if found:
                describe.append(
                    timed(lambda: [embed.describe(rgb, f) for f in found])[0] / len(found)
                )
    return {
        "haar_ms": ms(haar),
        "detect_ms": ms(detect),
        "embed_per_face_ms": ms(describe),
        "faces_per_image": statistics.fmean(faces),
    }


def measure_in_cluster(conn, container, images, repeat):
    """Median GET ms per image: plain, identity storlet, each stage."""
    samples = {key: [] for key in ("plain", "identity") + STAGES}
    headers = {"identity": {"X-Run-Storlet": "probe.py"}}
    for stage in STAGES:
        headers[stage] = {
            "X-Run-Storlet": "face_stage.py",
            "X-Storlet-Parameter-1": "stage:%s" % stage,
        }
    for key in headers:  # past each storlet's start
        conn.get_object(container, images[0][0], headers=headers[key])
    for _ in range(repeat):
        for name, _ in images:
            samples["plain"].append(timed(lambda: conn.get_object(container, name))[0])
            for key, request in headers.items():
                samples[key].append(
                    timed(lambda: conn.get_object(container, name, headers=request))[0]
                )
    result = {key + "_get_ms": ms(values) for key, values in samples.items()}
    result["haar_ms"] = result["haar_get_ms"] - result["identity_get_ms"]
    result["detect_ms"] = result["detect_get_ms"] - result["identity_get_ms"]
    result["embed_ms"] = result["embed_get_ms"] - result["detect_get_ms"]
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        default=os.environ.get("DATA") or os.path.join(HERE, "..", "..", "shared", "data", "faces"),
    )
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    sets = image_sets(args.data, args.frames)
    local = {label: measure_locally(images, args.repeat) for label, images in sets.items()}
    quiet = lambda msg: None  # noqa: E731
    cluster_figures = {}
    with tempfile.TemporaryDirectory() as state:
        cluster = Cluster(state)
        cluster.up(base_port=free_base_port(), log=quiet)
        try:
            conn = cluster.connection()
            deploy(conn, log=quiet)
            deploy(conn, os.path.join(HERE, "..", "tests", "storlets"), library=False, log=quiet)
            deploy(conn, os.path.join(HERE, "storlets"), log=quiet)
            conn.put_container("bench")
            for label, images in sets.items():
                for name, data in images:
                    conn.put_object("bench", name, data, content_type="image/jpeg")
                cluster_figures[label] = measure_in_cluster(conn, "bench", images, args.repeat)
        finally:
            cluster.down(log=quiet)
    result = {
        "data": os.path.abspath(args.data),
        "repeat": args.repeat,
        "local": local,
        "cluster": cluster_figures,
        "ratios": {},
    }
    print(
        "%-24s %-8s %9s %9s %12s %10s"
        % ("images", "where", "haar ms", "dlib det", "embed/face", "faces/img")
    )
    for label in sets:
        lo, cl = local[label], cluster_figures[label]
        print(
            "%-24s %-8s %9.1f %9.1f %12.1f %10.2f"
            % (
                label,
                "local",
                lo["haar_ms"],
                lo["detect_ms"],
                lo["embed_per_face_ms"],
                lo["faces_per_image"],
            )
        )
        print(
            "%-24s %-8s %9.1f %9.1f %12.1f %10s"
            % (label, "cluster", cl["haar_ms"], cl["detect_ms"], cl["embed_ms"], "")
        )
        print(
            "%-24s %-8s plain GET %.1f ms, identity storlet GET %.1f ms, "
            "embed GET %.1f ms"
            % ("", "", cl["plain_get_ms"], cl["identity_get_ms"], cl["embed_get_ms"])
        )
        ratios = {
            "local dlib detection / local Haar detection": lo["detect_ms"] / lo["haar_ms"],
            "local embedding per face / local dlib detection": lo["embed_per_face_ms"]
            / lo["detect_ms"],
            "cluster detection / local detection": cl["detect_ms"] / lo["detect_ms"],
            "cluster embedding / local embedding": cl["embed_ms"] / lo["embed_per_face_ms"],
            "cluster embed GET / identity storlet GET": cl["embed_get_ms"] / cl["identity_get_ms"],
        }
        result["ratios"][label] = ratios
        for what, value in ratios.items():
            print("  %-52s %6.2fx" % (what, value))
    # The reference run: about 56 ms a face for the embedding.
    result["targets"] = [
        targets.check(
            "cluster embedding per face / 56 ms (reference run), %s" % label,
            cluster_figures[label]["embed_ms"] / 56.0,
            1.5,
        )
        for label in sets
    ]
    targets.save("face_cost", result)


if __name__ == "__main__":
    main()
