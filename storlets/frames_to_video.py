import os
import sys

# `mlstorlets deploy` sets this to the library dependency it uploads with
# this storlet (mlstorlets-<hash>.zip), which the engine puts beside it.
LIBRARY = None
if LIBRARY:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), LIBRARY))

# Storlet making one Motion JPEG AVI of its inputs in order: the request's
# object then the X-Storlet-Extra-Resources (so it runs on the proxy).
# Inputs are frames or AVIs it made before, so that long videos are
# assembled as a tree of requests; or source frames filtered on the way in,
# each carried along the motion from the previous one (the model, if any,
# the last input).  See mlstorlets.sandbox.video.tasks.assemble.

from mlstorlets.sandbox import invocation  # noqa: E402
from mlstorlets.sandbox.video import tasks  # noqa: E402


class FramesToVideoStorlet(invocation.Storlet):
    """Output one Motion JPEG AVI of the input frames and videos."""

    parameters = (
        "fps:float:0:1000",
        "quality:int:10:100",
        "filter:one-of:cartoon|pencil|stylize|smooth|colormap",
        "passes:int:1:10",
        "block:int:3:51",
        "sigma_s:float:1:200",
        "sigma_r:float:0.01:1",
        "shade:float:0:0.1",
        "color:int:0:1",
        "map",
        "model",
        "output_name",
        "width:int:0:8192",
        "threads",
        "temporal:float:0:0.95",
        "context:int:0:1",
    )
    output_type = (".avi", "video/x-msvideo")
    compute = staticmethod(tasks.assemble)
