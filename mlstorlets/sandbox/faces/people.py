"""Every face of an image, named: what the recognition of photos and video
frames shares.

A group photo or a frame with two people has as many answers as faces.
:func:`name_faces` finds them all (above a minimum size), embeds each and
names it with the model; the most confident known name stands for the
image where one name is wanted (the ``Face-Name`` of a photo).
"""

import json

from mlstorlets.sandbox.faces.embed import EVERY_FACE, describe, find_faces
from mlstorlets.sandbox.faces.model import UNKNOWN, recognize

__all__ = ["MIN_FACE", "Named", "name_faces", "most_confident", "faces_json"]

#: Narrowest face named, in the image's pixels: below it the embedding is
#: of too few pixels to tell people apart.
MIN_FACE = 24


class Named:
    """One face and the person the model names: ``name``, ``confidence``,
    ``box`` (``x, y, w, h`` in the image)."""

    __slots__ = ("name", "confidence", "box")

    def __init__(self, name, confidence, box):
        self.name, self.confidence, self.box = name, confidence, box


def name_faces(model, rgb, threshold=None, min_face=MIN_FACE, cnn="auto", small=True):
    """Every face of ``rgb`` at least ``min_face`` wide, named, most
    confident first (known names before ``unknown``).

    ``small=False`` looks for small faces only where no large one was
    found (the frames of a video, where a person fills the frame and a
    pass for small faces would cost four times the detection of each)."""
    named = []
    detectors = EVERY_FACE if small else ("hog", "hog-upsampled", "cnn")
    for face in find_faces(rgb, detectors, cnn=cnn):
        if face.box[2] < min_face:
            continue
        person, confidence, _ = recognize(model, describe(rgb, face), threshold)
        named.append(Named(person, confidence, face.box))
    named.sort(key=lambda n: (n.name == UNKNOWN, -n.confidence, n.box))
    return named


def most_confident(named):
    """The face that names the image, or None."""
    return named[0] if named else None


def faces_json(named, limit):
    """``[[name, confidence, "x,y,w,h"], ...]`` as compact JSON of at most
    ``limit`` bytes: the least confident faces left out first (the face
    count says how many there were)."""
    rows = [[n.name, round(n.confidence, 3), ",".join(str(int(v)) for v in n.box)] for n in named]
    while True:
        text = json.dumps(rows, separators=(",", ":"), ensure_ascii=False)
        if len(text.encode()) <= limit or not rows:
            return text
        rows.pop()
