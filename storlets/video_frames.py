import os
import sys

# `mlstorlets deploy` sets this to the library dependency it uploads with
# this storlet (mlstorlets-<hash>.zip), which the engine puts beside it.
LIBRARY = None
if LIBRARY:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), LIBRARY))

# Storlet probing a video (op=probe: frame count, rate and size as output
# metadata), cutting one range of it into a tar of JPEG frames
# (op=extract), or filtering one range into a Motion JPEG AVI segment
# (op=segment), on the object server holding the video.  A PUT with
# X-Copy-From and X-Mlstorlets-Extract: tar makes the proxy extract that tar
# into frame objects (mlstorlets.server.middleware.storlet_copy).  The logic
# is mlstorlets.sandbox.video.tasks.video_frames.

from mlstorlets.sandbox import invocation  # noqa: E402
from mlstorlets.sandbox.video import tasks  # noqa: E402


class VideoFramesStorlet(invocation.Storlet):
    """Probe a video, or output a tar of the frames of one range."""

    parameters = (
        "op:one-of:probe|extract|segment",
        "start:int:0:100000000",
        "count",
        "every:int:1:1000",
        "width:int:0:8192",
        "quality:int:10:100",
        "filter:one-of:cartoon|pencil|stylize|smooth|colormap",
        "passes:int:1:10",
        "block:int:3:51",
        "sigma_s:float:1:200",
        "sigma_r:float:0.01:1",
        "shade:float:0:0.1",
        "color:int:0:1",
        "map",
        "temporal:float:0:0.95",
        "frames_to",
        "segment",
    )
    compute = staticmethod(tasks.video_frames)
