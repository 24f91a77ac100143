"""Phone-size photos (12 MP JPEG, 3 MB or more) made from the sample set.

The sample photos are small (about 270 x 180 px).  Each is scaled up with
OpenCV to the height of a 4032 x 3024 frame, centred, and padded with a
blurred enlargement of itself; then sensor-like noise is added, as in a real
phone photo, which is also what keeps a JPEG of a smooth enlargement from
compressing to far less than a phone's 3-5 MB.  The photos are written to a
directory under the system's temporary directory (never into the
repository), named after what made them, and reused by later runs.
"""

import hashlib
import os
import shutil
import tempfile

import cv2
import numpy as np

WIDTH, HEIGHT = 4032, 3024
QUALITY = 95
NOISE_SIGMA = 5.0
MIN_BYTES = 3 * 10**6


def _phone_size(img, noise, rng):
    h, w = img.shape[:2]
    scale = HEIGHT / h
    big = cv2.resize(img, (min(WIDTH, round(w * scale)), HEIGHT), interpolation=cv2.INTER_CUBIC)
    canvas = cv2.resize(
        cv2.GaussianBlur(img, (0, 0), 6), (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR
    )
    left = (WIDTH - big.shape[1]) // 2
    canvas[:, left : left + big.shape[1]] = big
    # One noise field for every photo, shifted at random: drawing 36 M
    # normal samples per photo would take longer than everything else.
    shifted = np.roll(noise, (rng.integers(HEIGHT), rng.integers(WIDTH)), axis=(0, 1))
    out = cv2.add(canvas.astype(np.int16), shifted, dtype=cv2.CV_8U)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return buf.tobytes()


def make(sources, count, seed=0, log=print):
    """``count`` phone-size photos made from ``sources`` (in turn).

    Parameters
    ----------
    sources : list of (name, path)
        Sample photos and the names to give their enlargements.
    count : int
    seed : int

    Returns
    -------
    directory : str
        Holding ``count`` JPEG files, named as the sources they came from
        (with a ``-<n>`` suffix when a source is used more than once).
    """
    sources = sorted(sources)
    key = hashlib.sha256(
        repr(
            (
                WIDTH,
                HEIGHT,
                QUALITY,
                NOISE_SIGMA,
                count,
                seed,
                [(n, os.path.getsize(p)) for n, p in sources],
            )
        ).encode()
    )
    directory = os.path.join(
        tempfile.gettempdir(), "mlstorlets-phone-photos-" + key.hexdigest()[:12]
    )
    if os.path.isdir(directory):
        return directory
    log("making %d phone-size photos in %s ..." % (count, directory))
    partial = tempfile.mkdtemp(prefix=".partial-", dir=tempfile.gettempdir())
    try:
        rng = np.random.default_rng(seed)
        noise = rng.normal(0, NOISE_SIGMA, (HEIGHT, WIDTH, 3)).astype(np.int16)
        for i in range(count):
            name, path = sources[i % len(sources)]
            if i >= len(sources):
                stem, ext = os.path.splitext(name)
                name = "%s-%d%s" % (stem, i // len(sources), ext)
            img = cv2.imread(path, cv2.IMREAD_COLOR)
            if img is None:
                raise RuntimeError("cannot read the sample photo %s" % path)
            data = _phone_size(img, noise, rng)
            if len(data) < MIN_BYTES:
                raise RuntimeError(
                    "%s made a %d-byte photo, under %d" % (path, len(data), MIN_BYTES)
                )
            with open(os.path.join(partial, name), "wb") as f:
                f.write(data)
        os.rename(partial, directory)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return directory
