import os
import sys

# `mlstorlets deploy` sets this to the library dependency it uploads with
# this storlet (mlstorlets-<hash>.zip), which the engine puts beside it.
LIBRARY = None
if LIBRARY:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), LIBRARY))

# Storlet training, scoring and applying scikit-learn's incremental
# estimators next to the data.  The logic lives in
# mlstorlets.sandbox.incremental.training so that it is tested without an
# engine and runs on the client too; this class only moves bytes.

from mlstorlets.sandbox import invocation  # noqa: E402
from mlstorlets.sandbox.incremental import training  # noqa: E402


class EstimatorStorlet(invocation.Storlet):
    """Run one operation (partial_fit, score, labels, predict...) of an
    incremental scikit-learn estimator over the input objects."""

    many = True
    compute = staticmethod(training.run)
