"""Labelled face photos on disk: the layout the demo and the tests read.

A data set is a folder with

* ``train/``: photos named ``<label><n>.<ext>`` (``obama14.jpeg``),
* ``test/``: photos named ``<label>_<anything>.<ext>`` (``obama_test1.jpeg``),
* ``video/`` (optional): videos named ``<label>_<anything>.<ext>``.

:func:`export_lfw` writes scikit-learn's Labeled Faces in the Wild in that
layout, on a machine that can download it.
"""

import dataclasses
import os
import re

from mlstorlets.client.errors import UsageError

PHOTO_EXTENSIONS = (".jpeg", ".jpg", ".png", ".gif")
VIDEO_EXTENSIONS = (".avi", ".mp4")


@dataclasses.dataclass(frozen=True)
class Item:
    """One file of a data set."""

    path: str
    split: str
    label: str

    @property
    def name(self):
        return "%s/%s" % (self.split, os.path.basename(self.path))


def label_of(filename, split):
    """The label a file's name gives, in the layout above."""
    stem = os.path.splitext(os.path.basename(filename))[0]
    label = stem.split("_")[0] if split != "train" else re.sub(r"\d+$", "", stem)
    if not label:
        raise UsageError("cannot read a label from the file name %r" % filename)
    return label.lower()


def items(root, splits=("train", "test", "video")):
    """Every photo and video of the data set at ``root``, sorted."""
    if not os.path.isdir(root):
        raise UsageError("no data set at %s (expected train/, test/ and optionally video/)" % root)
    found = []
    for split in splits:
        folder = os.path.join(root, split)
        if not os.path.isdir(folder):
            if split == "video":
                continue
            raise UsageError("no %s/ folder in %s" % (split, root))
        extensions = VIDEO_EXTENSIONS if split == "video" else PHOTO_EXTENSIONS
        for filename in sorted(os.listdir(folder)):
            if filename.lower().endswith(extensions):
                found.append(Item(os.path.join(folder, filename), split, label_of(filename, split)))
    return found


def group_photo(*images, gap=40):
    """Photos (arrays of the same channels) side by side on white,
    top-aligned: a group photo of their people, each where its photo was
    put.  Returns the image and the left edge of each photo in it."""
    import numpy as np

    height = max(i.shape[0] for i in images)
    width = sum(i.shape[1] for i in images) + gap * (len(images) - 1)
    canvas = np.full((height, width) + images[0].shape[2:], 255, np.uint8)
    x, edges = 0, []
    for image in images:
        canvas[: image.shape[0], x : x + image.shape[1]] = image
        edges.append(x)
        x += image.shape[1] + gap
    return canvas, edges


def export_lfw(dest, min_faces_per_person=50, test_per_person=2, data_home=None):
    """Write LFW in the layout above (needs the network the first time).

    Uses :func:`sklearn.datasets.fetch_lfw_people` (colour, full size)
    and keeps the people with at least ``min_faces_per_person`` photos;
    ``test_per_person`` of each go to ``test/``.  Returns the number of
    photos written.
    """
    from PIL import Image
    from sklearn.datasets import fetch_lfw_people

    lfw = fetch_lfw_people(
        min_faces_per_person=min_faces_per_person,
        color=True,
        resize=1.0,
        data_home=data_home,
        slice_=None,
    )
    seen = {}
    for image, target in zip(lfw.images, lfw.target):
        label = re.sub(r"[^a-z]", "", lfw.target_names[target].lower())
        seen[label] = seen.get(label, 0) + 1
        n = seen[label]
        if n <= test_per_person:
            split, name = "test", "%s_test%d.jpeg" % (label, n)
        else:
            split, name = "train", "%s%d.jpeg" % (label, n)
        os.makedirs(os.path.join(dest, split), exist_ok=True)
        pixels = image if image.max() > 1 else image * 255
        Image.fromarray(pixels.astype("uint8")).save(os.path.join(dest, split, name), quality=92)
    return sum(seen.values())
