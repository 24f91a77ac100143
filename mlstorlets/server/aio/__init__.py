"""The embedded all-in-one cluster: real Swift + storlets on 127.0.0.1."""

from mlstorlets.server.aio.cluster import Cluster, ClusterError

__all__ = ["Cluster", "ClusterError"]
