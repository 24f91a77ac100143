"""mlstorlets report over objects in the real cluster, looked at in a real
browser: Debian's Chromium, headless, takes a screenshot of the page and
the test reads its pixels (the boxes drawn, the frames side by side) and
its DOM (names, counts)."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from support import REPO, data_dir

CHROMIUM = "/usr/bin/chromium"


def cli(env, *args):
    done = subprocess.run(
        [sys.executable, "-m", "mlstorlets.client.cli"] + list(args),
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    return done.returncode, done.stdout, done.stderr


def chromium(page, tmp_path, *what):
    """Chromium's headless run over ``page``: (stdout, screenshot BGR)."""
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--user-data-dir=%s" % (tmp_path / "profile"),
            "--window-size=1400,1800",
            *what,
            "file://%s" % page,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    image = cv2.imread(str(shot)) if shot.exists() else None
    return done.stdout, image


def pixels(image, bgr, tolerance=60):
    return int(np.all(np.abs(image.astype(int) - bgr) < tolerance, axis=2).sum())


@pytest.fixture(scope="module")
def env(cluster):
    return cluster.env()


def test_recognized_photos_are_shown_boxed_and_named(env, conn, container, tmp_path):
    people = {}
    for filename in sorted(os.listdir(os.path.join(data_dir(), "test"))):
        with open(os.path.join(data_dir(), "test", filename), "rb") as f:
            data = f.read()
        height, width = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2]
        person = filename.split("_")[0]
        people[person] = people.get(person, 0) + 1
        conn.put_object(
            container,
            "tagged/" + filename,
            data,
            headers={
                "X-Object-Meta-Face-Name": person,
                "X-Object-Meta-Face-Confidence": "0.700",
                "X-Object-Meta-Face-Box": "%d,%d,%d,%d"
                % (width // 4, height // 4, width // 2, height // 2),
            },
        )
    page = tmp_path / "faces.html"
    status, out, err = cli(env, "report", "swift://%s/tagged/" % container, str(page))
    assert status == 0, err
    assert "wrote %s: 8 objects" % page in out
    dom, _ = chromium(page, tmp_path, "--dump-dom")
    for person, count in people.items():
        assert "<td>%s</td><td>%d</td>" % (person, count) in dom
    assert dom.count("<img ") == 8 and "(0.700)" in dom
    _, shot = chromium(page, tmp_path, "--screenshot=%s" % (tmp_path / "shot.png"))
    assert shot is not None
    # The eight boxes, drawn in pure green, are on screen.
    assert pixels(shot, (0, 255, 0)) > 8 * 300


def test_frames_are_shown_before_and_after_their_filter(env, conn, container, tmp_path):
    for index in range(12):
        for prefix, colour in (("frames/", (255, 0, 0)), ("filtered/", (0, 0, 255))):
            frame = np.zeros((90, 160, 3), np.uint8)
            frame[:] = colour
            ok, jpeg = cv2.imencode(".jpg", frame)
            conn.put_object(
                container,
                "%sf%05d.jpg" % (prefix, index),
                jpeg.tobytes(),
                headers={"X-Object-Meta-Frame-Index": str(index)},
            )
    page = tmp_path / "frames.html"
    status, out, err = cli(
        env,
        "report",
        "swift://%s/frames/" % container,
        str(page),
        "--compare",
        "swift://%s/filtered/" % container,
        "--max",
        "5",
    )
    assert status == 0, err
    assert "5 frame pairs" in out
    _, shot = chromium(page, tmp_path, "--screenshot=%s" % (tmp_path / "shot.png"))
    blue, red = pixels(shot, (255, 0, 0)), pixels(shot, (0, 0, 255))
    assert blue > 5 * 10000 and red > 5 * 10000
    # Side by side: the source frames on the left, the filtered on the right.
    columns = np.nonzero(np.all(np.abs(shot.astype(int) - (255, 0, 0)) < 60, axis=2).any(axis=0))[0]
    red_columns = np.nonzero(
        np.all(np.abs(shot.astype(int) - (0, 0, 255)) < 60, axis=2).any(axis=0)
    )[0]
    assert columns.max() < red_columns.min()


def test_the_report_is_written_locally_only(env, container):
    status, _, err = cli(
        env, "report", "swift://%s/x/" % container, "swift://%s/report.html" % container
    )
    assert status == 2 and "local file" in err
