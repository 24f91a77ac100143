"""Face detection, embedding and recognition for storlets.

Plain functions over bytes, arrays and local files, with no Swift or
storlet dependency, so that they run the same in a storlet sandbox, in the
CLI and in tests. Every bad input raises
:class:`mlstorlets.sandbox.errors.ObjectError` naming the object.

Modules
-------
image
    Decoding untrusted JPEG, PNG and GIF bytes.
embed
    dlib's face detectors, 5-point alignment and 128-d ResNet embeddings.
crops
    Aligned face crops as PNG, carrying their embedding.
detect
    OpenCV's Haar cascade, the detector measured against (benchmarks).
model
    Linear SVM over embeddings, open-set threshold, safe model files.
shards
    The training storlet's steps (pack, merge, fit).
video
    Frame-by-frame recognition with an optional annotated output video.
tasks
    What the face storlets compute.
"""
