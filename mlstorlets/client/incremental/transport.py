"""An estimator's calls of the ``estimator.py`` storlet, through a runner.

Where the calls run is the runner's (:func:`mlstorlets.client.runners.runner_for`):
in the cluster, a pass is split into groups of objects, one call each, that
read the objects in order with the model in memory, so that one state
crosses the network per group instead of one per object
(:meth:`~mlstorlets.client.runners.cluster.ClusterRunner.plan`), the state
riding in the parameters or in a temporary object; on the client, a call
per object.  What is the estimator's own is here: the storlet's name, the
object's name and weight a single-object call passes, and the bounds of a
group.
"""

from mlstorlets.client.runners import runner_for
from mlstorlets.client.runners.cluster import DEFAULT_MAX_GROUP_BYTES, STATE_PREFIX

__all__ = ["STATE_PREFIX", "STORLET_NAME", "EstimatorCalls", "calls_for"]

STORLET_NAME = "estimator.py"


class EstimatorCalls:
    """The estimator storlet's calls over objects, through ``runner``.

    Parameters
    ----------
    runner : ClusterRunner or ClientRunner
    storlet : str, default='estimator.py'
    objects_per_call : int, default=None
        Most objects one call reads; None: as many as the limits allow;
        1: one call per object (in the cluster, on an object server holding
        it when the payload fits the request).
    max_group_bytes : int, default=128 MiB
        Most bytes of data one call of several objects reads.
    """

    def __init__(
        self,
        runner,
        storlet=STORLET_NAME,
        objects_per_call=None,
        max_group_bytes=DEFAULT_MAX_GROUP_BYTES,
    ):
        self.runner = runner
        self.storlet = storlet
        self.objects_per_call = objects_per_call
        self.max_group_bytes = max_group_bytes

    @property
    def placements(self):
        """Where each call ran: ``'object-server'``, ``'proxy'`` or
        ``'client'``."""
        return self.runner.placements

    def list_objects(self, source):
        return self.runner.list_objects(source)

    def plan(self, uris, params):
        return self.runner.plan(uris, params, self.objects_per_call, self.max_group_bytes)

    def size_of(self, uri):
        """The object's size if a plan read it, else None."""
        return self.runner.known_size(uri)

    def call(self, entries, params, payload):
        """Run the storlet once over ``entries`` ((uri, weight) in order);
        (metadata with lower-case keys, body)."""
        uris = [uri for uri, _ in entries]
        params = dict(params)
        if len(entries) == 1:
            params["name"] = uris[0]
            if float(entries[0][1]) != 1.0:
                params["object_weight"] = repr(float(entries[0][1]))
        return self.runner.invoke(self.storlet, uris, params, payload)


def calls_for(
    source,
    connection=None,
    stores=None,
    storlet=STORLET_NAME,
    objects_per_call=None,
    placement="auto",
):
    """The calls over ``source``, in the cluster when it is there (see
    :func:`~mlstorlets.client.runners.runner_for` for ``placement``)."""
    runner = runner_for(source, connection=connection, stores=stores, placement=placement)
    return EstimatorCalls(runner, storlet, objects_per_call)
