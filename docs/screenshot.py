"""Make the README's picture of ``mlstorlets report``: docs/report.jpg.

The frames are drawn here (a scene with a moving ball), never taken from the
sample photos, which stay out of the repository.  The commands are the ones
the README shows, run as a user runs them:

1. the frames are written to ``WORK/frames/``;
2. ``mlstorlets run frame_filter.py`` filters them into ``WORK/cartoon/``
   (on the client: both are local paths);
3. ``mlstorlets report WORK/frames/ WORK/report.html --compare WORK/cartoon/``
   writes the page;
4. Debian's Chromium, headless, takes the screenshot.

    .venv/bin/python docs/screenshot.py [--out docs/report.jpg] [--work DIR]
"""

import argparse
import os
import subprocess
import sys
import tempfile

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
MLSTORLETS = [sys.executable, "-m", "mlstorlets.client.cli"]
CHROMIUM = "/usr/bin/chromium"


def frame(i, width=480, height=270):
    """A sky, hills, a house and a ball, with the sensor noise of a camera."""
    y = np.linspace(0, 1, height)[:, None, None]
    image = ((1 - y) * [235, 190, 120] + y * [250, 235, 215]).repeat(width, axis=1)
    image = image.astype(np.uint8)
    xs = np.arange(width)
    for base, amplitude, color in ((200, 25, (70, 140, 60)), (230, 15, (50, 110, 40))):
        ridge = (base + amplitude * np.sin(xs / 60.0 + base)).astype(int)
        for x, top in zip(xs, ridge):
            image[top:, x] = color
    cv2.rectangle(image, (320, 150), (400, 215), (60, 80, 170), -1)
    cv2.fillPoly(image, [np.array([(310, 150), (360, 110), (410, 150)])], (40, 40, 120))
    cv2.circle(image, (70, 60), 28, (80, 220, 250), -1)
    cx, cy = 40 + 55 * i, 205 - int(90 * abs(np.sin(i * 0.7)))
    cv2.circle(image, (cx, cy), 22, (40, 60, 230), -1)
    cv2.circle(image, (cx - 7, cy - 7), 6, (200, 210, 255), -1)
    noise = np.random.RandomState(i).normal(0, 2, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def run(*args):
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=600)
    if done.returncode:
        sys.exit("%s failed:\n%s%s" % (" ".join(args[:4]), done.stdout, done.stderr))
    return done.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(HERE, "report.jpg"))
    parser.add_argument("--work", default=None, help="keep the frames and the page here")
    parser.add_argument("--frames", type=int, default=6)
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="mlstorlets-screenshot-")
    frames, cartoon = os.path.join(work, "frames"), os.path.join(work, "cartoon")
    os.makedirs(frames, exist_ok=True)
    for i in range(args.frames):
        cv2.imwrite(os.path.join(frames, "frame%03d.jpg" % i), frame(i))
    print(
        run(
            *MLSTORLETS,
            "run",
            "frame_filter.py",
            frames + "/",
            cartoon + "/",
            "-p",
            "filter=cartoon",
        ).strip()
    )
    page, shot = os.path.join(work, "report.html"), os.path.join(work, "shot.png")
    print(run(*MLSTORLETS, "report", frames + "/", page, "--compare", cartoon + "/").strip())
    run(
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--user-data-dir=%s" % os.path.join(work, "profile"),
        "--window-size=700,720",
        "--screenshot=%s" % shot,
        "file://%s" % page,
    )
    # A JPEG: a sixth of the PNG's bytes in the repository.
    cv2.imwrite(args.out, cv2.imread(shot), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print("wrote %s" % args.out)


if __name__ == "__main__":
    main()
