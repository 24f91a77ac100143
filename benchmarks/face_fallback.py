"""When the CNN face detector pays: the rule against running it always and
never, on photos with and without faces.

Detection is two HOG passes (at 640 px on the longer side, then upsampled
once) and, where both find nothing, dlib's CNN detector, about a hundred
times a HOG pass.  The sets, all made here from the sample photos:

* ``sample``: the sample set's 104 photos as they are;
* ``faceless``: each sample photo with its face region painted over by
  the photo blurred beyond recognition (the room, without the person),
  and flat and gradient frames;
* ``small faces``: each test photo scaled so that its face is 22 to 40 px
  wide in the detection image, placed on a 1600x1200 background (a
  phone photo of someone far away);
* ``hard light``: each test photo lit from one side (its brightness
  falling to 15% across the face) and darkened.

For each rule (``always``, ``auto``: only after a HOG near miss, see
:data:`mlstorlets.sandbox.faces.embed.NEAR_MISS`; ``never``), printed and
saved: photos where a face was found (a miss where there is one; a false
face where there is none), which detector found it, and milliseconds per
photo.

Run (about 4 minutes on 2 cores)::

    DATA=../shared/data/faces .venv/bin/python benchmarks/face_fallback.py

Figures go to benchmarks/results/face_fallback.json.
"""

import argparse
import glob
import json
import os
import sys
import time

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from mlstorlets.sandbox.faces import embed  # noqa: E402
from mlstorlets.sandbox.faces.image import decode_image  # noqa: E402

RULES = ("always", "auto", "never")


def _read(path):
    with open(path, "rb") as f:
        return decode_image(f.read(), path, color=True)


def faceless(photos):
    out = []
    for rgb in photos:
        face = embed.largest_face(rgb, cnn="never")
        if face is None:
            continue
        x, y, w, h = face.box
        painted = rgb.copy()
        blurred = cv2.GaussianBlur(rgb, (0, 0), 25)
        x0, y0 = max(0, x - w // 2), max(0, y - h // 2)
        painted[y0 : y + h + h // 2, x0 : x + w + w // 2] = blurred[
            y0 : y + h + h // 2, x0 : x + w + w // 2
        ]
        out.append(painted)
    ramp = np.linspace(0, 255, 640, dtype=np.float32)
    out.append(np.full((480, 640, 3), 128, np.uint8))
    out.append(np.repeat(np.tile(ramp, (480, 1))[..., None], 3, axis=2).astype(np.uint8))
    return out


def small_faces(photos, widths=(22, 28, 34, 40)):
    out = []
    for i, rgb in enumerate(photos):
        face = embed.largest_face(rgb, cnn="never")
        if face is None:
            continue
        background = cv2.resize(cv2.GaussianBlur(rgb, (0, 0), 8), (1600, 1200))
        # In the detection image (1600 px -> 640) the face is ``width`` px.
        width = widths[i % len(widths)]
        scale = width * 1600 / 640 / face.box[2]
        small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        y, x = 500, 300 + 97 * i % 900
        h, w = min(small.shape[0], 1200 - y), min(small.shape[1], 1600 - x)
        background[y : y + h, x : x + w] = small[:h, :w]
        out.append(background)
    return out


def hard_light(photos):
    out = []
    for rgb in photos:
        ramp = np.linspace(1.0, 0.15, rgb.shape[1], dtype=np.float32)[None, :, None]
        out.append(np.clip(rgb.astype(np.float32) * ramp * 0.7, 0, 255).astype(np.uint8))
    return out


def measure(images, rule):
    found, by, seconds = 0, {}, []
    for rgb in images:
        started = time.perf_counter()
        faces = embed.find_faces(rgb, cnn=rule)
        seconds.append(time.perf_counter() - started)
        if faces:
            found += 1
            by[faces[0].detector] = by.get(faces[0].detector, 0) + 1
    return {
        "photos": len(images),
        "found": found,
        "by_detector": by,
        "ms_per_photo": 1000 * float(np.mean(seconds)),
        "ms_max": 1000 * float(np.max(seconds)),
    }


def run(data):
    sample = [_read(p) for p in sorted(glob.glob(os.path.join(data, "train", "*")))]
    tests = [_read(p) for p in sorted(glob.glob(os.path.join(data, "test", "*")))]
    sets = {
        "sample": (sample + tests, True),
        "faceless": (faceless(sample + tests), False),
        "small faces": (small_faces(tests * 3), True),
        "hard light": (hard_light(tests), True),
    }
    # Every detector loaded before anything is timed.
    embed.find_faces(tests[0], detectors=("cnn",))
    result = {"near_miss": embed.NEAR_MISS, "sets": {}}
    for name, (images, has_faces) in sets.items():
        result["sets"][name] = {"has_faces": has_faces}
        for rule in RULES:
            result["sets"][name][rule] = measure(images, rule)
    return result


def report(result):
    print("NEAR_MISS = %g" % result["near_miss"])
    print(
        "%-12s %-7s %8s %22s %12s" % ("set", "rule", "found", "missed / false faces", "ms a photo")
    )
    for name, row in result["sets"].items():
        for rule in RULES:
            r = row[rule]
            wrong = r["photos"] - r["found"] if row["has_faces"] else r["found"]
            print(
                "%-12s %-7s %4d/%-4d %21d %12.1f  %s"
                % (name, rule, r["found"], r["photos"], wrong, r["ms_per_photo"], r["by_detector"])
            )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        default=os.environ.get("DATA", os.path.join(HERE, "..", "..", "shared", "data", "faces")),
    )
    parser.add_argument("--out", default=os.path.join(HERE, "results", "face_fallback.json"))
    args = parser.parse_args(argv)
    result = run(args.data)
    report(result)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print("saved %s" % args.out)


if __name__ == "__main__":
    main()
