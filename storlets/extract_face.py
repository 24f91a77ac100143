import os
import sys

# `mlstorlets deploy` sets this to the library dependency it uploads with
# this storlet (mlstorlets-<hash>.zip), which the engine puts beside it.
LIBRARY = None
if LIBRARY:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), LIBRARY))

# Storlet cutting the largest face out of a photo, aligned, with its
# embedding, next to the photo: on the object server holding it (GET, or PUT
# with X-Copy-From).  The logic lives in mlstorlets.sandbox.faces.tasks.extract,
# which documents the parameters (size, margin, label_key, source, cnn) and the
# output metadata (the label, Source, Face-Box, Face-Detector).

from mlstorlets.sandbox import invocation  # noqa: E402
from mlstorlets.sandbox.faces import tasks  # noqa: E402


class ExtractFaceStorlet(invocation.Storlet):
    """Output the largest face of the input photo as an aligned PNG crop."""

    # What the client may pass (besides source): checked before any call.
    parameters = (
        "size:int:32:512",
        "margin:float:0:1",
        "label_key",
        "cnn",
        "faces:one-of:largest|all",
        "min_face:int:1:4096",
        "stem",
        "source_etag",
    )
    output_type = (".png", "image/png")
    many = True
    compute = staticmethod(tasks.extract)
