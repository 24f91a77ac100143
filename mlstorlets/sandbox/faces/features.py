"""Feature vectors of face crops, described by a small, storable spec.

The spec travels inside the model file: recognition rebuilds exactly the
crop and the descriptor the model was trained on, whatever the defaults of
the library version that runs it.
"""

import functools
import json

import cv2
import numpy as np

__all__ = [
    "default_spec",
    "validate_spec",
    "spec_json",
    "feature_length",
    "features",
    "training_features",
]

_KINDS = ("hog",)

# Bounds keep a spec read from an untrusted model file from asking for a
# huge crop or a degenerate descriptor.
_INT_FIELDS = {
    "size": (16, 256),
    "cell": (2, 64),
    "block": (2, 128),
    "stride": (1, 128),
    "bins": (2, 36),
}


def default_spec(size=64, margin=0.2, equalize=True, cell=8, block=16, stride=8, bins=9):
    """Return the default feature spec.

    Parameters
    ----------
    size : int, default=64
        Side of the square face crop, in pixels.
    margin : float, default=0.2
        Forehead margin of the crop; see :func:`mlstorlets.sandbox.faces.detect.crop_face`.
    equalize : bool, default=True
        Histogram equalisation of the crop.
    cell, block, stride : int
        HOG cell side, block side and block stride, in pixels.
    bins : int, default=9
        HOG orientation bins.

    Returns
    -------
    spec : dict
        JSON-serialisable; pass it to :func:`features` and store it with the
        model.
    """
    spec = {
        "kind": "hog",
        "size": size,
        "margin": margin,
        "equalize": equalize,
        "cell": cell,
        "block": block,
        "stride": stride,
        "bins": bins,
    }
    return validate_spec(spec)


def validate_spec(spec):
    """Check a feature spec and return it as a plain dict.

    Parameters
    ----------
    spec : mapping
        As returned by :func:`default_spec`, possibly read back from a model
        file.

    Returns
    -------
    spec : dict

    Raises
    ------
    ValueError
        If a field is missing, has the wrong type or is out of range, or the
        HOG geometry does not tile the crop.
    """
    try:
        spec = dict(spec)
    except (TypeError, ValueError):
        raise ValueError(f"feature spec must be a mapping, not {type(spec).__name__}") from None
    expected = {"kind", "margin", "equalize", *_INT_FIELDS}
    if set(spec) != expected:
        raise ValueError(
            f"feature spec needs exactly the fields {sorted(expected)}, got {sorted(spec)}"
        )
    if spec["kind"] not in _KINDS:
        raise ValueError(f"unknown feature kind {spec['kind']!r}, expected one of {_KINDS}")
    for field, (low, high) in _INT_FIELDS.items():
        value = spec[field]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(
                f"feature spec field {field!r} must be an int in [{low}, {high}], got {value!r}"
            )
    margin = spec["margin"]
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin <= 1:
        raise ValueError(f"feature spec field 'margin' must be a number in [0, 1], got {margin!r}")
    spec["margin"] = float(margin)
    if not isinstance(spec["equalize"], bool):
        raise ValueError(f"feature spec field 'equalize' must be a bool, got {spec['equalize']!r}")
    size, cell, block, stride = spec["size"], spec["cell"], spec["block"], spec["stride"]
    # cv2.HOGDescriptor asserts on these and would abort with a C++ error.
    if block > size or block % cell or stride % cell or (size - block) % stride:
        raise ValueError(
            f"HOG geometry does not tile the crop: size={size}, block={block}, "
            f"cell={cell}, stride={stride}"
        )
    return spec


def spec_json(spec):
    """Serialise a spec as compact, key-sorted JSON (for object metadata)."""
    return json.dumps(validate_spec(spec), sort_keys=True, separators=(",", ":"))


@functools.lru_cache(maxsize=16)
def _hog(size, cell, block, stride, bins):
    return cv2.HOGDescriptor((size, size), (block, block), (stride, stride), (cell, cell), bins)


def feature_length(spec):
    """Length of the vectors :func:`features` returns for ``spec``."""
    spec = validate_spec(spec)
    return int(
        _hog(*(spec[k] for k in ("size", "cell", "block", "stride", "bins"))).getDescriptorSize()
    )


def features(crop, spec):
    """Compute the feature vector of a face crop.

    Parameters
    ----------
    crop : ndarray of shape (size, size), dtype uint8
        A face from :func:`mlstorlets.sandbox.faces.detect.crop_face`, made with the
        spec's ``size``, ``margin`` and ``equalize``.
    spec : mapping
        The feature spec.

    Returns
    -------
    vector : ndarray of shape (feature_length(spec),), dtype float32
    """
    spec = validate_spec(spec)
    size = spec["size"]
    crop = np.asarray(crop)
    if crop.shape != (size, size) or crop.dtype != np.uint8:
        raise ValueError(
            f"crop must be a {size}x{size} uint8 array for this spec, got {crop.shape} {crop.dtype}"
        )
    hog = _hog(size, spec["cell"], spec["block"], spec["stride"], spec["bins"])
    return hog.compute(np.ascontiguousarray(crop)).reshape(-1).astype(np.float32, copy=False)


def training_features(crop, spec, mirror=True):
    """Feature rows for training from one face crop.

    Parameters
    ----------
    crop : ndarray of shape (size, size), dtype uint8
        The face.
    spec : mapping
        The feature spec.
    mirror : bool, default=True
        Add the horizontally mirrored face: a free second pose of the same
        person, which raised the recognition confidence on the sample set
        without costing accuracy.

    Returns
    -------
    rows : ndarray of shape (1 or 2, feature_length(spec)), dtype float32
    """
    rows = [features(crop, spec)]
    if mirror:
        rows.append(features(np.ascontiguousarray(np.asarray(crop)[:, ::-1]), spec))
    return np.stack(rows)
