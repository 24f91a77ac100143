import os
import sys

# `mlstorlets deploy` sets this to the library dependency it uploads with
# this storlet (mlstorlets-<hash>.zip), which the engine puts beside it.
LIBRARY = None
if LIBRARY:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), LIBRARY))

# Storlet stylising one frame (filter=cartoon|pencil|stylize|smooth|colormap
# and that filter's parameters), next to it.  The filters are plain
# functions in mlstorlets.sandbox.video.filters.

from mlstorlets.sandbox import invocation  # noqa: E402
from mlstorlets.sandbox.video import tasks  # noqa: E402


class FrameFilterStorlet(invocation.Storlet):
    """Output the input frame through an OpenCV stylisation, as JPEG."""

    parameters = (
        "filter",
        "quality",
        "passes",
        "block",
        "sigma_s",
        "sigma_r",
        "shade",
        "color",
        "map",
    )
    many = True
    compute = staticmethod(tasks.filter_frame)
