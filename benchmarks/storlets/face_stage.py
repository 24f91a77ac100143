import os
import sys

# `mlstorlets deploy` sets this to the library dependency it uploads with
# this storlet (mlstorlets-<hash>.zip), which the engine puts beside it.
LIBRARY = None
if LIBRARY:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), LIBRARY))

# A storlet for benchmarks/face_cost.py only: runs one stage of the face
# pipeline over a photo (parameter stage: haar, detect, every: every face, or
# embed: every face embedded) and answers
# the number of faces in its metadata, with no body, so that the benchmark
# can tell the cost of each stage in the cluster.

from mlstorlets.sandbox import invocation  # noqa: E402
from mlstorlets.sandbox.faces import embed  # noqa: E402
from mlstorlets.sandbox.faces.detect import detect_faces  # noqa: E402
from mlstorlets.sandbox.faces.image import decode_image  # noqa: E402
from mlstorlets.sandbox.faces.tasks import MAX_IMAGE_BYTES, read_input  # noqa: E402


def stage(in_files, params):
    name = params.get("source") or "the input"
    data = read_input(in_files[0], name, MAX_IMAGE_BYTES)
    which = params.get("stage") or "detect"
    if which == "haar":
        found = len(detect_faces(decode_image(data, name)))
    else:
        rgb = decode_image(data, name, color=True)
        every = which in ("every", "embed")
        faces = embed.find_faces(rgb, embed.EVERY_FACE) if every else embed.find_faces(rgb)
        if which == "embed":
            for face in faces:
                embed.describe(rgb, face)
        found = len(faces)
    return {"Faces": str(found)}, b""


class FaceStageStorlet(invocation.Storlet):
    """One stage of the face pipeline, for the cost benchmark."""

    parameters = ("stage",)
    compute = staticmethod(stage)
