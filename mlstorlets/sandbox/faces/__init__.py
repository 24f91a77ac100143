"""Face detection and recognition for storlets.

Plain functions over bytes, arrays and local files, with no Swift or
storlet dependency, so that they run the same in a storlet sandbox, in the
CLI and in tests. Every bad input raises
:class:`mlstorlets.sandbox.errors.ObjectError` naming the object.

Modules
-------
image
    Decoding untrusted JPEG, PNG and GIF bytes to grayscale.
detect
    Haar cascade face detection and normalised crops.
features
    HOG feature vectors and the feature spec stored with a model.
model
    Training (in memory or over shards), safe model files, recognition.
video
    Frame-by-frame recognition with an annotated output video.
"""

from mlstorlets.sandbox.faces.detect import (
    crop_face,
    detect_faces,
    encode_png,
    extract_face,
    largest_face,
)
from mlstorlets.sandbox.faces.features import (
    default_spec,
    feature_length,
    features,
    training_features,
    validate_spec,
)
from mlstorlets.sandbox.faces.image import decode_image
from mlstorlets.sandbox.faces.model import (
    UNKNOWN,
    FaceModel,
    dump_model,
    load_model,
    load_shard,
    model_metadata,
    pack_shard,
    recognize,
    recognize_image,
    train,
    train_incremental,
)
from mlstorlets.sandbox.faces.video import recognize_video

__all__ = [
    "UNKNOWN",
    "FaceModel",
    "crop_face",
    "decode_image",
    "default_spec",
    "detect_faces",
    "dump_model",
    "encode_png",
    "extract_face",
    "feature_length",
    "features",
    "largest_face",
    "load_model",
    "load_shard",
    "model_metadata",
    "pack_shard",
    "recognize",
    "recognize_image",
    "recognize_video",
    "train",
    "train_incremental",
    "training_features",
    "validate_spec",
]
