import os
import sys

# `mlstorlets deploy` sets this to the library dependency it uploads with
# this storlet (mlstorlets-<hash>.zip), which the engine puts beside it.
LIBRARY = None
if LIBRARY:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), LIBRARY))

# Storlet training the face model in steps (parameter step): pack the
# embeddings of face crops into a shard, merge shards, fit the model over shards.
# Each request reads several objects (X-Storlet-Extra-Resources), so it runs
# on the proxy.  mlstorlets.sandbox.faces.shards documents the steps and their
# parameters; mlstorlets.client.faces.pipeline.train plans the requests.

from mlstorlets.sandbox import invocation  # noqa: E402
from mlstorlets.sandbox.faces import shards  # noqa: E402


class TrainStorlet(invocation.Storlet):
    """Run one step of face model training over the input objects."""

    # What the client may pass (besides source): checked before any call.
    parameters = ("step", "label_key", "C:float:0.000001:1000000", "seed:int:0:2147483647")
    compute = staticmethod(shards.run)
