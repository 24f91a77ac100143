"""Per-face cost of detection and embedding, locally and through the cluster.

Measures, in one run on this machine, over sets of images made from
``$DATA``: the sample photos (about 270x190 px, one face each), frames of
the sample video (1280x720), phone-size photos (the test photos scaled to
4032 px wide), photos without a face (sample photos with the person
painted over, as ``benchmarks/face_fallback.py`` makes them) and group
photos (every pair of test photos of two people side by side), written as
JPEG:

* **locally**, per image, the time of each stage as the storlets run it:
  OpenCV's Haar cascade (the former detector: the baseline), dlib's
  detection with 5-point landmarks (:func:`mlstorlets.sandbox.faces.embed.find_faces`),
  the detection of every face (the upsampled pass first, as recognizing a
  photo does), and the 128-d embedding of the faces found
  (:func:`~mlstorlets.sandbox.faces.embed.describe`);
* **through the cluster**, the GET latency of the same images through a
  benchmark storlet that runs only one stage (``benchmarks/storlets/face_stage.py``:
  ``haar``, ``detect``, ``every`` (every face), or ``embed`` = every face
  detected and embedded), against a GET
  through the identity storlet (the engine's cost alone) and a plain GET,
  interleaved so that load hits all alike.  In the cluster, detection costs
  ``detect - identity``, every face ``every - identity`` and the embedding
  of a face ``(embed - every) / faces``.

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

STAGES = ("haar", "detect", "every", "embed")


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
    import face_fallback

    from mlstorlets.client.datasets import group_photo

    tests = [(n, decode_image(d, n, color=True)) for n, d in photos if n.startswith("test/")]
    train = [decode_image(d, n, color=True) for n, d in photos if n.startswith("train/")]

    def jpeg(rgb):
        return cv2.imencode(".jpeg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()

    phone = [
        (
            "phone/%s" % n.split("/")[1],
            jpeg(cv2.resize(rgb, (4032, round(rgb.shape[0] * 4032 / rgb.shape[1])))),
        )
        for n, rgb in tests
    ]
    faceless = [
        ("faceless/%03d.jpeg" % i, jpeg(rgb))
        for i, rgb in enumerate(face_fallback.faceless([r for _, r in tests] + train[::6]))
    ]
    groups = [
        ("groups/%d-%d.jpeg" % (i, j), jpeg(group_photo(a, b)[0]))
        for i, (na, a) in enumerate(tests)
        for j, (nb, b) in enumerate(tests)
        if i < j and na.split("_")[0] != nb.split("_")[0]
    ]
    return {
        "photos": photos,
        "video frames 1280x720": frames,
        "phone-size photos": phone,
        "photos without a face": faceless,
        "group photos": groups,
    }


def ms(samples):
    return 1000 * statistics.median(samples)


def timed(func):
    started = time.perf_counter()
    result = func()
    return time.perf_counter() - started, result


def measure_locally(images, repeat):
    """Median ms per image of each stage, and faces per image."""
    haar, detect, every, describe, faces = [], [], [], [], []
    for _ in range(repeat):
        for name, data in images:
            gray = decode_image(data, name)
            rgb = decode_image(data, name, color=True)
            haar.append(timed(lambda: detect_faces(gray))[0])
            detect.append(timed(lambda: embed.find_faces(rgb))[0])
            seconds, found = timed(lambda: embed.find_faces(rgb, embed.EVERY_FACE))
            every.append(seconds)
            faces.append(len(found))
            if found:
                describe.append(
                    timed(lambda: [embed.describe(rgb, f) for f in found])[0] / len(found)
                )
    return {
        "haar_ms": ms(haar),
        "detect_ms": ms(detect),
        "every_face_ms": ms(every),
        "embed_per_face_ms": ms(describe) if describe else 0.0,
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
    result["every_face_ms"] = result["every_get_ms"] - result["identity_get_ms"]
    result["embed_ms"] = result["embed_get_ms"] - result["every_get_ms"]
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
        "%-24s %-8s %9s %9s %11s %12s %10s"
        % ("images", "where", "haar ms", "dlib det", "every face", "embed/face", "faces/img")
    )
    for label in sets:
        lo, cl = local[label], cluster_figures[label]
        faces = lo["faces_per_image"]
        cl["embed_per_face_ms"] = cl["embed_ms"] / faces if faces else 0.0
        for where, row, count in (("local", lo, "%.2f" % faces), ("cluster", cl, "")):
            print(
                "%-24s %-8s %9.1f %9.1f %11.1f %12.1f %10s"
                % (
                    label,
                    where,
                    row["haar_ms"],
                    row["detect_ms"],
                    row["every_face_ms"],
                    row["embed_per_face_ms"],
                    count,
                )
            )
        print(
            "%-24s %-8s plain GET %.1f ms, identity storlet GET %.1f ms, "
            "embed GET %.1f ms"
            % ("", "", cl["plain_get_ms"], cl["identity_get_ms"], cl["embed_get_ms"])
        )
        ratios = {
            "local dlib detection / local Haar detection": lo["detect_ms"] / lo["haar_ms"],
            "local every face / local dlib detection": lo["every_face_ms"] / lo["detect_ms"],
            "cluster detection / local detection": cl["detect_ms"] / lo["detect_ms"],
            "cluster every face / local every face": cl["every_face_ms"] / lo["every_face_ms"],
            "cluster embed GET / identity storlet GET": cl["embed_get_ms"] / cl["identity_get_ms"],
        }
        if faces:
            ratios["local embedding per face / local dlib detection"] = (
                lo["embed_per_face_ms"] / lo["detect_ms"]
            )
            ratios["cluster embedding / local embedding, per face"] = (
                cl["embed_per_face_ms"] / lo["embed_per_face_ms"]
            )
        result["ratios"][label] = ratios
        for what, value in ratios.items():
            print("  %-52s %6.2fx" % (what, value))
    # The reference run: about 56 ms a face for the embedding.
    result["targets"] = [
        targets.check(
            "cluster embedding per face / 56 ms (reference run), %s" % label,
            cluster_figures[label]["embed_per_face_ms"] / 56.0,
            1.5,
        )
        for label in sets
        if local[label]["faces_per_image"]
    ]
    targets.save("face_cost", result)


if __name__ == "__main__":
    main()
