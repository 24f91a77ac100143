"""Face detection, 5-point alignment and 128-d embeddings with dlib.

The networks are dlib's: the HOG frontal face detector (built into dlib),
the MMOD CNN detector, the 5-point landmark model and the ResNet face
descriptor, whose weights the PyPI package ``face-recognition-models``
installs beside its code. They are read from that package's directory,
found without importing it (its ``__init__`` imports ``pkg_resources``):
in the bubblewrap sandbox the client's site-packages are mounted read-only,
and the container image installs the same package, so no storlet
dependency carries the 32 MB of weights and nothing is downloaded at run
time.

Detection: dlib's HOG detector on the image scaled so that its longer side
is :data:`DETECT_SIDE` is the first choice (on the sample set it found
every face with no false one, faster than OpenCV's Haar cascade, which
found false faces, and than the HOG detector at the photo's own size,
which missed small faces; ``benchmarks/face_cost.py`` measures the costs).
A second HOG pass upsampled once, then the CNN detector, are fallbacks for
the images where it finds nothing (tiny faces, strong side light). The
same scale serves a close-up and a 12 MP photo alike.

The CNN detector costs about a hundred times a HOG pass, and a photo of
no one would pay it every time.  By default (``cnn='auto'``) it runs only
where the upsampled HOG pass saw a near miss: a window scoring within
:data:`NEAR_MISS` of its threshold, something face-like it did not
accept.  ``benchmarks/face_fallback.py`` measures the rule against
running the CNN always and never, on photos without faces, with small
faces, in hard light and on the sample set.
"""

import importlib.util
import os
import threading

import cv2
import dlib
import numpy as np

__all__ = [
    "DESCRIPTOR",
    "DETECT_SIDE",
    "EMBEDDING_SIZE",
    "Face",
    "model_path",
    "find_faces",
    "EVERY_FACE",
    "largest_face",
    "describe",
    "face_chip",
]

#: Identifier of the embedding network, recorded in crops and models so that
#: embeddings of different networks are never compared.
DESCRIPTOR = "dlib_face_recognition_resnet_model_v1"

#: Length of an embedding.
EMBEDDING_SIZE = 128

#: Longer side, in pixels, images are scaled to for detection.
DETECT_SIDE = 640
#: How far below the HOG detector's threshold a window may score and still
#: make the CNN detector worth running (``cnn='auto'``).
NEAR_MISS = 0.5
#: When the CNN detector runs after both HOG passes found nothing.
CNN_RULES = ("auto", "always", "never")

_FILES = {
    "descriptor": DESCRIPTOR + ".dat",
    "landmarks": "shape_predictor_5_face_landmarks.dat",
    "cnn": "mmod_human_face_detector.dat",
}

# dlib's models are loaded once a thread: their objects are not documented
# as thread-safe, and a client-side run calls them from several threads.
_loaded = threading.local()


def model_path(kind):
    """Path of one of dlib's weight files in ``face_recognition_models``.

    Parameters
    ----------
    kind : {'descriptor', 'landmarks', 'cnn'}

    Returns
    -------
    path : str
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the package face-recognition-models is not installed (it holds dlib's face weights)"
        )
    path = os.path.join(spec.submodule_search_locations[0], "models", _FILES[kind])
    if not os.path.isfile(path):
        raise RuntimeError(f"dlib face weights missing: {path}")
    return path


def _model(kind):
    models = _loaded.__dict__
    if kind not in models:
        if kind == "hog":
            models[kind] = dlib.get_frontal_face_detector()
        elif kind == "cnn":
            models[kind] = dlib.cnn_face_detection_model_v1(model_path("cnn"))
        elif kind == "landmarks":
            models[kind] = dlib.shape_predictor(model_path("landmarks"))
        else:
            models[kind] = dlib.face_recognition_model_v1(model_path("descriptor"))
    return models[kind]


class Face:
    """A face found in an image: its box and its 5 landmarks.

    Attributes
    ----------
    box : tuple of 4 int
        ``(x, y, w, h)`` in the image's pixels.
    shape : dlib.full_object_detection
        The 5 landmarks, for alignment.
    detector : str
        Which detector found it: ``hog``, ``hog-upsampled`` or ``cnn``.
    """

    __slots__ = ("box", "shape", "detector")

    def __init__(self, box, shape, detector):
        self.box, self.shape, self.detector = box, shape, detector

    @property
    def area(self):
        return self.box[2] * self.box[3]


def _detect(rgb, detectors, cnn):
    scale = DETECT_SIDE / max(rgb.shape[:2])
    small = cv2.resize(
        rgb,
        None,
        fx=scale,
        fy=scale,
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
    )
    near = None
    for detector in detectors:
        if detector == "cnn":
            if cnn == "never" or (cnn == "auto" and near is not None and not near):
                continue
            rects = [d.rect for d in _model("cnn")(small, 0)]
        elif detector == "hog-upsampled" and cnn == "auto":
            # One pass gives the detections and the near misses.
            found, scores, _ = _model("hog").run(small, 1, -NEAR_MISS)
            rects = [r for r, score in zip(found, scores) if score >= 0]
            near = [r for r, score in zip(found, scores) if score < 0]
        else:
            rects = list(_model("hog")(small, 1 if detector == "hog-upsampled" else 0))
        if rects:
            return detector, scale, rects
    return None, scale, []


#: The detectors of :func:`find_faces` when every face is wanted: the
#: plain HOG pass would answer with the large faces and never look for the
#: small ones the upsampled pass finds (it finds the large ones too).
EVERY_FACE = ("hog-upsampled", "cnn")


def find_faces(rgb, detectors=("hog", "hog-upsampled", "cnn"), cnn="auto"):
    """Find the faces in an image and their landmarks.

    Parameters
    ----------
    rgb : ndarray of shape (height, width, 3), dtype uint8
        The image, RGB.
    detectors : sequence of {'hog', 'hog-upsampled', 'cnn'}
        Tried in order on the image scaled to :data:`DETECT_SIDE`; the first
        that finds a face answers.
    cnn : {'auto', 'always', 'never'}, default='auto'
        Whether the CNN detector runs when it comes to it: ``'auto'`` only
        after an upsampled HOG pass with a near miss (see the module).

    Returns
    -------
    faces : list of Face
    """
    rgb = np.ascontiguousarray(rgb)
    if cnn not in CNN_RULES:
        raise ValueError("cnn must be one of %s, got %r" % (CNN_RULES, cnn))
    detector, scale, rects = _detect(rgb, detectors, cnn)
    height, width = rgb.shape[:2]
    landmarks = _model("landmarks")
    faces = []
    for rect in rects:
        left = max(0, int(round(rect.left() / scale)))
        top = max(0, int(round(rect.top() / scale)))
        right = min(width, int(round((rect.right() + 1) / scale)))
        bottom = min(height, int(round((rect.bottom() + 1) / scale)))
        if right <= left or bottom <= top:
            continue
        # Landmarks on the full-size image: alignment and the descriptor's
        # chip then use every pixel the photo has.
        shape = landmarks(rgb, dlib.rectangle(left, top, right - 1, bottom - 1))
        faces.append(Face((left, top, right - left, bottom - top), shape, detector))
    return faces


def largest_face(rgb, **find_params):
    """The largest face (the subject of a portrait), or None."""
    faces = find_faces(rgb, **find_params)
    return max(faces, key=lambda face: face.area) if faces else None


def describe(rgb, face):
    """The 128-d embedding of a face; same-person faces lie within about 0.6.

    Parameters
    ----------
    rgb : ndarray of shape (height, width, 3), dtype uint8
        The image the face was found in.
    face : Face

    Returns
    -------
    embedding : ndarray of shape (EMBEDDING_SIZE,), dtype float32
    """
    vector = _model("descriptor").compute_face_descriptor(np.ascontiguousarray(rgb), face.shape)
    return np.asarray(vector, dtype=np.float32)


def face_chip(rgb, face, size=150, padding=0.25):
    """The face aligned by its landmarks (eyes level, same place), RGB.

    Parameters
    ----------
    rgb : ndarray of shape (height, width, 3), dtype uint8
    face : Face
    size : int, default=150
        Side of the square chip (150 is what the descriptor sees).
    padding : float, default=0.25
        Room around the face, as a fraction of its size.

    Returns
    -------
    chip : ndarray of shape (size, size, 3), dtype uint8
    """
    return dlib.get_face_chip(np.ascontiguousarray(rgb), face.shape, size=size, padding=padding)
