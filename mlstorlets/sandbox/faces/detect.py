"""Face detection with OpenCV's Haar cascade, and normalised face crops."""

import os
import threading

import cv2
import numpy as np

from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.faces.image import MAX_PIXELS, decode_image

__all__ = [
    "CASCADE",
    "detect_faces",
    "largest_face",
    "crop_face",
    "extract_face",
    "encode_png",
]

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


def largest_face(gray, **detect_params):
    """Return the largest face's box ``(x, y, w, h)``, or None if there is none.

    Parameters
    ----------
    gray : ndarray of shape (height, width), dtype uint8
        The image.
    **detect_params
        Passed to :func:`detect_faces`.

    Returns
    -------
    box : tuple of 4 int or None
    """
    boxes = detect_faces(gray, **detect_params)
    if len(boxes) == 0:
        return None
    # The subject of a portrait is the biggest face; bystanders are smaller.
    x, y, w, h = boxes[np.argmax(boxes[:, 2] * boxes[:, 3])]
    return int(x), int(y), int(w), int(h)


def crop_face(gray, box, size=64, margin=0.2, equalize=True):
    """Cut a face out of an image and normalise it.

    Parameters
    ----------
    gray : ndarray of shape (height, width), dtype uint8
        The image.
    box : tuple of 4 int
        The face ``(x, y, w, h)``, as from :func:`largest_face`.
    size : int, default=64
        Side of the square output.
    margin : float, default=0.2
        Fraction of the box height added above it: the cascade's box stops
        at the eyebrows, and hairline and forehead help tell people apart.
    equalize : bool, default=True
        Equalise the histogram, which makes the crop independent of exposure
        and contrast.

    Returns
    -------
    crop : ndarray of shape (size, size), dtype uint8
    """
    x, y, w, h = box
    top = max(0, y - int(round(margin * h)))
    bottom = min(gray.shape[0], y + h)
    left, right = max(0, x), min(gray.shape[1], x + w)
    if bottom <= top or right <= left:
        raise ValueError(f"box {box} lies outside the image of shape {gray.shape}")
    face = gray[top:bottom, left:right]
    # Shrinking needs area averaging to avoid aliasing; enlarging a small
    # face needs interpolation.
    shrink = face.shape[0] >= size and face.shape[1] >= size
    crop = cv2.resize(
        face, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )
    if equalize:
        crop = cv2.equalizeHist(crop)
    return crop


def extract_face(
    data, name, size=64, margin=0.2, equalize=True, max_pixels=MAX_PIXELS, **detect_params
):
    """Decode an image object and return its largest face, cropped.

    Parameters
    ----------
    data : bytes-like
        A JPEG, PNG or GIF object.
    name : str
        The object's name, used in error messages.
    size, margin, equalize
        See :func:`crop_face`.
    max_pixels : int, default=MAX_PIXELS
        See :func:`mlstorlets.sandbox.faces.image.decode_image`.
    **detect_params
        Passed to :func:`detect_faces`.

    Returns
    -------
    crop : ndarray of shape (size, size), dtype uint8
        The normalised face.
    box : tuple of 4 int
        The face's ``(x, y, w, h)`` in the image.

    Raises
    ------
    ObjectError
        If the object is not a usable image or holds no face.
    """
    gray = decode_image(data, name, max_pixels=max_pixels)
    box = largest_face(gray, **detect_params)
    if box is None:
        raise ObjectError(name, "no face found")
    return crop_face(gray, box, size=size, margin=margin, equalize=equalize), box


def encode_png(crop, name=""):
    """Encode a face crop (or any grayscale image) as PNG bytes.

    Parameters
    ----------
    crop : ndarray of shape (height, width), dtype uint8
        The image.
    name : str, default=""
        Name of the object the crop comes from, used in error messages.

    Returns
    -------
    png : bytes
    """
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(crop, dtype=np.uint8))
    if not ok:
        raise ObjectError(name, "cannot encode the face crop as PNG")
    return buffer.tobytes()
