"""Filtered frames that do not flicker: each output carried along the motion
from the previous one.

A filter applied to each frame on its own amplifies what changes between
frames without being motion (sensor noise, compression): the edges a
cartoon draws come and go, and the video flickers.  :class:`Stabilizer`
takes the frames of a segment in order and blends each new filtered frame
with the previous output, warped along the optical flow between the two
source frames (Farneback's, on a reduced copy).  Where the warped previous
frame does not match the new one (something appeared, moved unlike the
flow, or the scene cut), the blend gives way to the new output, so
nothing is dragged along.  The outputs stay frame for frame, the work
stays sequential within a segment only.
"""

import cv2
import numpy as np

__all__ = ["Stabilizer", "flicker"]

#: Width the flow is computed at: motion, not detail.
FLOW_WIDTH = 320


class Stabilizer:
    """Carries filtered outputs from frame to frame along the motion.

    Parameters
    ----------
    strength : float in [0, 1)
        The previous output's share where it matches the motion; 0 leaves
        every output as the filter made it.
    tolerance : float
        Grey levels of mismatch between a source frame and the previous
        one warped onto it at which the previous output's share has fallen
        to ``strength / e``.
    """

    def __init__(self, strength=0.7, tolerance=10.0):
        if not 0 <= strength < 1 or tolerance <= 0:
            raise ValueError("strength must be in [0, 1) and tolerance positive")
        self.strength = strength
        self.tolerance = tolerance
        self._gray = None
        self._out = None

    def _flow(self, gray):
        """Per pixel of ``gray``, where it was in the previous frame."""
        height, width = gray.shape
        scale = min(1.0, FLOW_WIDTH / width)
        size = (max(8, round(width * scale)), max(8, round(height * scale)))
        small_now = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        small_before = cv2.resize(self._gray, size, interpolation=cv2.INTER_AREA)
        flow = cv2.calcOpticalFlowFarneback(small_now, small_before, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        flow = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR) / scale
        grid_x, grid_y = np.meshgrid(
            np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
        )
        return grid_x + flow[..., 0], grid_y + flow[..., 1]

    def step(self, source, filtered):
        """The output for ``source`` (BGR ``uint8``) filtered as ``filtered``."""
        gray = cv2.cvtColor(source, cv2.COLOR_BGR2GRAY)
        if self.strength == 0 or self._gray is None or self._gray.shape != gray.shape:
            out = filtered
        else:
            map_x, map_y = self._flow(gray)
            warped_gray = cv2.remap(
                self._gray, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
            warped_out = cv2.remap(
                self._out, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
            mismatch = np.abs(gray.astype(np.float32) - warped_gray) / self.tolerance
            weight = (self.strength * np.exp(-mismatch * mismatch))[..., None]
            out = (weight * warped_out + (1 - weight) * filtered).round().astype(np.uint8)
        self._gray, self._out = gray, out
        return out


def flicker(frames):
    """Mean absolute difference between consecutive frames (grey levels)."""
    diffs = [
        np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() for a, b in zip(frames, frames[1:])
    ]
    return float(np.mean(diffs)) if diffs else 0.0
