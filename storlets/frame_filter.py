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
        "filter:one-of:cartoon|pencil|stylize|smooth|colormap",
        "quality:int:10:100",
        "passes:int:1:10",
        "block:int:3:51",
        "sigma_s:float:1:200",
        "sigma_r:float:0.01:1",
        "shade:float:0:0.1",
        "color:int:0:1",
        "map",
    )
    many = True
    compute = staticmethod(tasks.filter_frame)
