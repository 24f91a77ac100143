"""How an image goes into a model and comes out of it.

A vision model states the shape of its input tensor, but not the channel
order, value range or normalisation it was trained with.  Those are read
from the model's metadata properties, with the keys Windows ML defined
for image models where there is one:

``Image.BitmapPixelFormat``
    ``Rgb8`` (default), ``Bgr8`` or ``Gray8``.
``Image.NominalPixelRange``
    ``NominalRange_0_255`` (default), ``Normalized_0_1`` or
    ``Normalized_1_1``: the values the model takes for black to white.
``mlstorlets.output_range``
    The same for an image the model outputs; default: the input's.
``mlstorlets.mean``, ``mlstorlets.std``
    Per-channel normalisation applied after the range, comma-separated
    (``0.485,0.456,0.406`` and ``0.229,0.224,0.225`` for ImageNet models);
    default none.
``mlstorlets.labels``
    A JSON list of class names, in the order of the model's scores.

The defaults fit the common fast style-transfer exports (PyTorch's
``fast_neural_style``, the ONNX model zoo's style networks): RGB in
channels-first layout (NCHW) with values 0-255 in and out.  The layout is
the input's shape: channels-last (NHWC) when its last dimension is 1 or 3
and its second is not.  A fixed height and width are resized to; free
ones take the image as it comes, and an output image is resized back to
the input's size.
"""

import dataclasses
import json

import cv2
import numpy as np

from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.models.graph import MAX_TENSOR_ELEMENTS, tensor_type

__all__ = ["ImageSpec", "image_spec", "labels_of", "to_tensor", "to_image"]

PIXEL_FORMAT = "Image.BitmapPixelFormat"
PIXEL_RANGE = "Image.NominalPixelRange"
OUTPUT_RANGE = "mlstorlets.output_range"
MEAN = "mlstorlets.mean"
STD = "mlstorlets.std"
LABELS = "mlstorlets.labels"

RANGES = {
    "NominalRange_0_255": (0.0, 255.0),
    "Normalized_0_1": (0.0, 1.0),
    "Normalized_1_1": (-1.0, 1.0),
}
FORMATS = {"Rgb8": "RGB", "Bgr8": "BGR", "Gray8": "GRAY"}
MAX_LABELS = 100_000


@dataclasses.dataclass
class ImageSpec:
    """What an image input (or output) of a model looks like.

    Attributes
    ----------
    layout : {'NCHW', 'NHWC'}
    order : {'RGB', 'BGR', 'GRAY'}
    low, high : float
        The values of black and white.
    mean, std : ndarray of shape (channels,) or None
    height, width : int or None
        Fixed by the model, or None where free.
    dtype : numpy dtype
    """

    layout: str
    order: str
    low: float
    high: float
    mean: np.ndarray = None
    std: np.ndarray = None
    height: int = None
    width: int = None
    dtype: type = np.float32

    @property
    def channels(self):
        return 1 if self.order == "GRAY" else 3


def _dims(shape):
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


def _layout(dims):
    """'NCHW' or 'NHWC' for a rank-4 shape whose channels are 1 or 3, else None."""
    if len(dims) != 4:
        return None
    if dims[1] in (1, 3):
        return "NCHW"
    if dims[3] in (1, 3):
        return "NHWC"
    return "NCHW" if dims[1] is None else None


def _range(properties, key, default, name):
    value = properties.get(key)
    if value is None:
        return default
    if value not in RANGES:
        raise ObjectError(name, f"the model's {key} is {value!r}, expected one of {sorted(RANGES)}")
    return RANGES[value]


def _per_channel(properties, key, channels, name):
    value = properties.get(key)
    if value is None:
        return None
    try:
        numbers = np.array([float(v) for v in value.split(",")], np.float32)
    except ValueError:
        raise ObjectError(name, f"the model's {key} is not comma-separated numbers") from None
    if len(numbers) != channels or not np.all(np.isfinite(numbers)):
        raise ObjectError(name, f"the model's {key} needs {channels} finite numbers")
    if key == STD and np.any(numbers == 0):
        raise ObjectError(name, f"the model's {key} has a zero")
    return numbers


def image_spec(model, name):
    """The :class:`ImageSpec` of the model's first input, or None when it
    does not take an image (one rank-4 input of 1 or 3 channels)."""
    if len(model.inputs) != 1:
        return None
    arg = model.inputs[0]
    dims = _dims(arg.shape)
    layout = _layout(dims)
    dtype = tensor_type(arg)
    if layout is None or dtype is None:
        return None
    properties = model.properties
    fmt = properties.get(PIXEL_FORMAT, "Rgb8")
    if fmt not in FORMATS:
        raise ObjectError(
            name, f"the model's {PIXEL_FORMAT} is {fmt!r}, expected one of {sorted(FORMATS)}"
        )
    order = FORMATS[fmt]
    channels = dims[1] if layout == "NCHW" else dims[3]
    if channels is not None and channels != (1 if order == "GRAY" else 3):
        raise ObjectError(name, f"the model takes {channels} channels but declares {fmt}")
    low, high = _range(properties, PIXEL_RANGE, RANGES["NominalRange_0_255"], name)
    n = 1 if order == "GRAY" else 3
    height, width = (dims[2], dims[3]) if layout == "NCHW" else (dims[1], dims[2])
    return ImageSpec(
        layout,
        order,
        low,
        high,
        _per_channel(properties, MEAN, n, name),
        _per_channel(properties, STD, n, name),
        height,
        width,
        dtype,
    )


def output_spec(model, index, spec, name):
    """The :class:`ImageSpec` of output ``index`` when it is an image (rank
    4 with 1 or 3 channels), else None; the input's layout and order."""
    dims = _dims(model.outputs[index].shape)
    if len(dims) != 4:
        return None
    axis = 1 if spec.layout == "NCHW" else 3
    if dims[axis] not in (1, 3, None):
        return None
    low, high = _range(model.properties, OUTPUT_RANGE, (spec.low, spec.high), name)
    return dataclasses.replace(spec, low=low, high=high, mean=None, std=None)


def to_tensor(image, spec, name):
    """An RGB ``uint8`` image as the model's input tensor (batch of one)."""
    height, width = image.shape[:2]
    target = (spec.width or width, spec.height or height)
    if target[0] * target[1] * spec.channels > MAX_TENSOR_ELEMENTS:
        raise ObjectError(name, f"an input of {target[0]}x{target[1]} is too large for the model")
    if target != (width, height):
        shrink = target[0] * target[1] < width * height
        image = cv2.resize(
            image, target, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        )
    if spec.order == "GRAY":
        pixels = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
    elif spec.order == "BGR":
        pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    else:
        pixels = image
    values = pixels.astype(np.float32) * ((spec.high - spec.low) / 255.0) + spec.low
    if spec.mean is not None:
        values -= spec.mean
    if spec.std is not None:
        values /= spec.std
    if spec.layout == "NCHW":
        values = values.transpose(2, 0, 1)
    return np.ascontiguousarray(values[None], dtype=spec.dtype)


def to_image(tensor, spec, size, name):
    """The first image of an output tensor as RGB ``uint8`` of ``size``
    (width, height), its values mapped from the spec's range."""
    array = np.asarray(tensor)
    if array.ndim != 4 or array.shape[0] < 1:
        raise ObjectError(name, f"the model's output of shape {array.shape} is not an image")
    array = array[0]
    if spec.layout == "NCHW":
        array = array.transpose(1, 2, 0)
    if array.shape[2] not in (1, 3) or 0 in array.shape:
        raise ObjectError(name, f"the model's output of shape {tensor.shape} is not an image")
    scale = 255.0 / (spec.high - spec.low)
    values = np.nan_to_num(array.astype(np.float32), nan=spec.low)
    pixels = np.clip((values - spec.low) * scale, 0, 255).round().astype(np.uint8)
    if pixels.shape[2] == 1:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    elif spec.order == "BGR":
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    if (pixels.shape[1], pixels.shape[0]) != tuple(size):
        pixels = cv2.resize(pixels, tuple(size), interpolation=cv2.INTER_LINEAR)
    return pixels


def labels_of(model, name):
    """The model's class names (``mlstorlets.labels``), or None."""
    value = model.properties.get(LABELS)
    if value is None:
        return None
    try:
        labels = json.loads(value)
    except ValueError:
        raise ObjectError(name, f"the model's {LABELS} is not JSON") from None
    if (
        not isinstance(labels, list)
        or len(labels) > MAX_LABELS
        or not all(isinstance(v, (str, int)) for v in labels)
    ):
        raise ObjectError(name, f"the model's {LABELS} must be a JSON list of names")
    return [str(v) for v in labels]
