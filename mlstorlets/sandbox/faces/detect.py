"""Face detection with OpenCV's Haar cascade.

No longer the pipeline's detector (see :mod:`mlstorlets.sandbox.faces.embed`
for the measurements): kept as the baseline ``benchmarks/face_cost.py``
measures dlib's detectors against.
"""

import os
import threading

import cv2
import numpy as np

__all__ = ["CASCADE", "detect_faces"]

#: Cascade file shipped inside the opencv-python wheel, so that the storlet
#: sandbox needs no model download.
CASCADE = "haarcascade_frontalface_alt2.xml"

#: Images wider than this are downscaled for detection only. The cascade's
#: cost grows with the pixel count while faces in photos and video are far
#: larger than its 24 px window, so detection at 640 px loses nothing.
DETECT_WIDTH = 640


# cv2.CascadeClassifier.detectMultiScale is not thread-safe: a classifier
# shared by threads (a client-side run at concurrency 4) segfaults.  Each
# thread loads its own; parsing the XML takes tens of milliseconds, once a
# thread, and a storlet's daemon child has one thread.
_classifiers = threading.local()


def _cascade(filename=CASCADE):
    loaded = _classifiers.__dict__
    if filename not in loaded:
        path = os.path.join(cv2.data.haarcascades, filename)
        classifier = cv2.CascadeClassifier(path)
        if classifier.empty():
            raise RuntimeError(f"cannot load the Haar cascade {path}")
        loaded[filename] = classifier
    return loaded[filename]


def detect_faces(gray, detect_width=DETECT_WIDTH, scale_factor=1.05, min_neighbors=4, min_size=24):
    """Find frontal faces in a grayscale image.

    Parameters
    ----------
    gray : ndarray of shape (height, width), dtype uint8
        The image.
    detect_width : int or None, default=DETECT_WIDTH
        Wider images are downscaled to this width for detection; boxes are
        returned in the coordinates of ``gray``. None detects at full size.
    scale_factor : float, default=1.05
        Step between the cascade's scales; 1.1 halves the time but misses
        tilted faces.
    min_neighbors : int, default=4
        Overlapping detections a face needs; higher means fewer false faces.
    min_size : int, default=24
        Smallest face side, in pixels of the (downscaled) detection image.

    Returns
    -------
    boxes : ndarray of shape (n_faces, 4), dtype int
        One ``(x, y, w, h)`` row per face.
    """
    scale = 1.0
    small = gray
    if detect_width and gray.shape[1] > detect_width:
        scale = gray.shape[1] / detect_width
        small = cv2.resize(
            gray, (detect_width, round(gray.shape[0] / scale)), interpolation=cv2.INTER_AREA
        )
    boxes = _cascade().detectMultiScale(
        small, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(min_size, min_size)
    )
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * scale
    return np.rint(boxes).astype(int)
