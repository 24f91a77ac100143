import os
import sys

# `mlstorlets deploy` sets this to the library dependency it uploads with
# this storlet (mlstorlets-<hash>.zip), which the engine puts beside it.
LIBRARY = None
if LIBRARY:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), LIBRARY))

# Storlet applying a user's ONNX model to an image or a table.  Inputs, in
# the engine's order: in_files[0] is the object the request names,
# in_files[1] the model, named by X-Storlet-Extra-Resources (which makes
# the storlet run on the proxy).  Parameters and outputs are documented in
# mlstorlets.sandbox.models.tasks.

from mlstorlets.sandbox import invocation  # noqa: E402
from mlstorlets.sandbox.models import tasks  # noqa: E402


class ApplyModelStorlet(invocation.Storlet):
    """Apply an ONNX model: images to images or scores, tables to predictions."""

    parameters = (
        "model",
        "output",
        "output_name",
        "top_k:int:1:100",
        "quality:int:10:100",
        "width:int:0:8192",
        "threads",
        "format",
        "num_features",
        "label_column",
        "header_rows",
        "batch_size",
        "max_rows",
        "max_line_bytes",
        "max_features",
        "max_batch_bytes",
        "max_archive_bytes",
        "max_array_bytes",
        "max_members",
    )
    many = True
    compute = staticmethod(tasks.apply_model)
