"""Per-frame stylisation with OpenCV: plain functions of a BGR image.

Each filter takes a BGR ``uint8`` image and its parameters (strings, as a
storlet receives them) and returns a BGR image of the same size.
:data:`FILTERS` names them for the ``frame_filter`` storlet and
``mlstorlets rotoscope --filter``.
"""

import cv2
import numpy as np

from mlstorlets.sandbox.errors import ParameterError
from mlstorlets.sandbox.invocation import float_param, int_param

__all__ = ["FILTERS", "PARAMETERS", "COLORMAPS", "apply_filter"]

#: Colour maps by name, for the ``colormap`` filter.
COLORMAPS = {
    name[len("COLORMAP_") :].lower(): getattr(cv2, name)
    for name in dir(cv2)
    if name.startswith("COLORMAP_")
}


def cartoon(image, params, name):
    """Flat colours (repeated bilateral filtering) under dark edges."""
    passes = int_param(params, "passes", 3, 1, 10, name)
    block = int_param(params, "block", 9, 3, 51, name) | 1
    smooth = image
    for _ in range(passes):
        smooth = cv2.bilateralFilter(smooth, 9, 75, 75)
    gray = cv2.medianBlur(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), 7)
    edges = cv2.adaptiveThreshold(
        gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, block, 2
    )
    return cv2.bitwise_and(smooth, smooth, mask=edges)


def pencil(image, params, name):
    """Pencil sketch (``color=1``: coloured pencil)."""
    sigma_s = float_param(params, "sigma_s", 60, 1, 200, name)
    sigma_r = float_param(params, "sigma_r", 0.07, 0.01, 1, name)
    shade = float_param(params, "shade", 0.05, 0, 0.1, name)
    gray, colour = cv2.pencilSketch(image, sigma_s=sigma_s, sigma_r=sigma_r, shade_factor=shade)
    if int_param(params, "color", 0, 0, 1, name):
        return colour
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)


def stylize(image, params, name):
    """OpenCV's watercolour-like stylization."""
    return cv2.stylization(
        image,
        sigma_s=float_param(params, "sigma_s", 60, 1, 200, name),
        sigma_r=float_param(params, "sigma_r", 0.45, 0.01, 1, name),
    )


def smooth(image, params, name):
    """Edge-preserving smoothing (recursive filter)."""
    return cv2.edgePreservingFilter(
        image,
        flags=cv2.RECURS_FILTER,
        sigma_s=float_param(params, "sigma_s", 60, 1, 200, name),
        sigma_r=float_param(params, "sigma_r", 0.4, 0.01, 1, name),
    )


def colormap(image, params, name):
    """The image's luminance through a colour map (``map``, e.g. jet)."""
    wanted = params.get("map") or "inferno"
    if wanted not in COLORMAPS:
        known = ", ".join(sorted(COLORMAPS))
        raise ParameterError(name, "map", f"unknown colour map {wanted!r} (one of {known})")
    return cv2.applyColorMap(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), COLORMAPS[wanted])


FILTERS = {f.__name__: f for f in (cartoon, pencil, stylize, smooth, colormap)}
#: Every parameter some filter reads (the storlet declares them all).
PARAMETERS = ("passes", "block", "sigma_s", "sigma_r", "shade", "color", "map")


def apply_filter(image, filter_name, params, name):
    """``FILTERS[filter_name](image, params, name)``, checked.

    Raises
    ------
    ObjectError
        Unknown filter or a bad parameter, naming the object.
    """
    if filter_name not in FILTERS:
        known = ", ".join(FILTERS)
        raise ParameterError(name, "filter", f"unknown filter {filter_name!r} (one of {known})")
    out = FILTERS[filter_name](np.ascontiguousarray(image), params, name)
    assert out.shape == image.shape and out.dtype == np.uint8
    return out
