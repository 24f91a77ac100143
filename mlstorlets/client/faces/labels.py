"""Where a face crop's person comes from: its metadata, its folder or its
name.

Photos uploaded with ``swift upload`` or ``aws s3 cp`` carry no metadata,
but are often arranged or named by person (``people/obama/1.jpg``,
``obama14.jpeg``).  A rule, given as ``faces train --labels RULE`` or
``train(..., labels=RULE)``:

``metadata`` or ``metadata:KEY``
    The crop's user metadata ``KEY`` (default ``Name``, which ``faces
    extract`` copies from the photo's).
``folder``
    The name of the folder the crop is in (the photo's: ``faces extract``
    keeps folders): ``crops/obama/1.png`` is ``obama``.
``name:REGEX``
    REGEX searched in the crop's file name; its first group, or the whole
    match: ``name:^([a-z]+)`` makes ``obama14.png`` ``obama``.
"""

import posixpath
import random
import re

from mlstorlets.client.errors import UsageError
from mlstorlets.client.uri import parse
from mlstorlets.sandbox.faces.shards import MAX_LABEL_CHARS
from mlstorlets.sandbox.inputs import metadata_value

__all__ = ["label_rule", "mix_by_label"]


def label_rule(spec=None, label_key="Name"):
    """A function ``(uri, metadata) -> label or None`` for the rule ``spec``.

    Parameters
    ----------
    spec : str, optional
        ``'metadata'``, ``'metadata:KEY'``, ``'folder'`` or
        ``'name:REGEX'``; None: ``metadata:<label_key>``.
    label_key : str, default='Name'

    Raises
    ------
    mlstorlets.client.errors.UsageError
        An unknown rule or a REGEX that does not compile.
    """
    kind, _, arg = (spec or "metadata").partition(":")
    if kind == "metadata":
        key = arg or label_key
        return lambda uri, metadata: _bounded(metadata_value(metadata, key))
    if kind == "folder" and not arg:
        return lambda uri, metadata: _bounded(posixpath.basename(posixpath.dirname(_key(uri))))
    if kind == "name" and arg:
        try:
            pattern = re.compile(arg)
        except re.error as err:
            raise UsageError("--labels name:%s: not a regular expression (%s)" % (arg, err))

        def from_name(uri, metadata):
            found = pattern.search(posixpath.basename(_key(uri)))
            if found is None:
                return None
            return _bounded(found.group(1) if pattern.groups else found.group(0))

        return from_name
    raise UsageError("labels %r: expected metadata, metadata:KEY, folder or name:REGEX" % (spec,))


def _key(uri):
    return parse(uri).key


def _bounded(label):
    return label if label and len(label) <= MAX_LABEL_CHARS else None


def mix_by_label(labels, seed=0):
    """An order of the items that spreads every label over the whole sequence.

    Consecutive groups of the result then each hold a mix of people, which
    incremental SGD needs (see :func:`mlstorlets.sandbox.faces.model.train_incremental`):
    items are shuffled within each label, then interleaved so that each
    label's items sit at evenly spaced positions, with random phases.

    Parameters
    ----------
    labels : sequence of str
        The label of each item.
    seed : int, default=0

    Returns
    -------
    order : list of int
        A permutation of ``range(len(labels))``.
    """
    rng = random.Random(seed)
    by_label = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    keyed = []
    for label in sorted(by_label):
        items = by_label[label]
        rng.shuffle(items)
        phase = rng.random()
        step = 1.0 / len(items)
        keyed.extend(((i + phase) * step, rng.random(), item) for i, item in enumerate(items))
    keyed.sort()
    return [item for _, _, item in keyed]
