import os
import sys

# `mlstorlets deploy` sets this to the library dependency it uploads with
# this storlet (mlstorlets-<hash>.zip), which the engine puts beside it.
LIBRARY = None
if LIBRARY:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), LIBRARY))

# Storlet naming the person in a photo, or in every frame of a video.
# Inputs, in the engine's order: in_files[0] is the object the request names
# (photo or video), in_files[1] the model, named by
# X-Storlet-Extra-Resources: /container/model-object -- which makes the
# storlet run on the proxy.  Parameters (threshold, kind, max_frames, source,
# model, min_face, cnn) and output metadata (Face-Name, Face-Confidence, Face-Box,
# Face-Frames) are documented in mlstorlets.sandbox.faces.tasks.recognize.

from mlstorlets.sandbox import invocation  # noqa: E402
from mlstorlets.sandbox.faces import tasks  # noqa: E402


class RecognizeFaceStorlet(invocation.Storlet):
    """Tag a photo with the recognised person, or annotate a video."""

    # What the client may pass (besides source): checked before any call.
    parameters = (
        "model",
        "threshold:float:0.01:2",
        "kind:one-of:auto|image|video",
        "max_frames:int:1:1000000",
        "output:one-of:copy|tags",
        "min_face:int:1:4096",
        "cnn",
    )
    many = True
    compute = staticmethod(tasks.recognize)
