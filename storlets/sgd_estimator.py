import os
import sys

# `mlstorlets deploy` sets this to the library dependency it uploads with
# this storlet (mlstorlets-<hash>.zip), which the engine puts beside it.
LIBRARY = None
if LIBRARY:
    sys.path.insert(0, os.path.join(
        os.path.dirname(os.path.abspath(__file__)), LIBRARY))

# Storlet training and scoring mlstorlets' SGD estimators next to the data.
# The logic lives in mlstorlets.sandbox.sgd.training so that it is tested
# without an engine; this class only moves bytes.

from mlstorlets.sandbox import invocation  # noqa: E402
from mlstorlets.sandbox.sgd import training  # noqa: E402


class SGDEstimatorStorlet(invocation.Storlet):
    """Run one SGD operation (partial_fit, score, labels) on the input object."""

    compute = staticmethod(training.run)
