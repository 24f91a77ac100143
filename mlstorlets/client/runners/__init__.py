"""Where a job runs, decided once: in the cluster, next to the data, or here.

Every workflow (a storlet over a set of objects, a copy, the estimators'
passes, the face pipeline) is written against a *runner*, which
:func:`runner_for` chooses once per command from the URIs the command
names:

* :class:`~mlstorlets.client.runners.cluster.ClusterRunner` when every
  URI is in the cluster (``swift://``, or ``s3://`` through the cluster's
  own S3 API): storlets run next to the data (a ``GET`` through the
  storlet, or a ``PUT`` with ``X-Copy-From`` for copy semantics); it owns
  the Swift gateway, the SBus datagram and header budgets, the choice
  between a payload in the parameters and a temporary object, and the
  structured errors of the proxy.
* :class:`~mlstorlets.client.runners.client.ClientRunner` otherwise: the
  same storlet module runs in this process (``file://``, ``s3://``,
  ``dropbox://``...), each object streamed from its store.

Both answer the same methods: ``list_objects``, ``describe``, ``plan``,
``invoke``, ``staged``, ``produce`` (one output over many inputs),
``extract`` (a tar output made objects), ``put``, ``delete``,
``run_storlet``, ``copy``, ``check_storlet``, ``source_name``, ``limits``;
``placement`` says which it is (``'cluster'`` or ``'client'``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Union

from mlstorlets.client.errors import UsageError
from mlstorlets.client.runners.client import ClientRunner
from mlstorlets.client.runners.cluster import ClusterRunner
from mlstorlets.client.stores.registry import Stores
from mlstorlets.client.swift import Connection, Swift
from mlstorlets.client.uri import parse

__all__ = [
    "ClientRunner",
    "ClusterRunner",
    "ConnectionLike",
    "PLACEMENTS",
    "Runner",
    "runner_for",
    "stores_for",
]

#: Where a command may run (:func:`runner_for`).
PLACEMENTS = ("auto", "client", "cluster")
#: Either runner: both answer the same methods.
Runner = Union[ClusterRunner, ClientRunner]
#: What a command reaches its stores through (:func:`stores_for`): the
#: stores themselves, the cluster's connection or gateway, or None (the
#: environment).
ConnectionLike = Union[Stores, Connection, Swift, None]


def stores_for(connection=None, stores: Stores | None = None) -> Stores:
    """The stores a command reaches its URIs through: ``stores`` as given,
    else from ``connection`` (a swiftclient ``Connection`` or a
    :class:`~mlstorlets.client.swift.Swift` gateway) and the environment."""
    if stores is not None:
        return stores
    if isinstance(connection, Stores):
        return connection
    if isinstance(connection, Swift):
        connection = connection.parent
    return Stores(swift=connection)


def runner_for(
    *uris: str | Iterable[str] | None,
    connection=None,
    stores: Stores | None = None,
    placement: str = "auto",
) -> Runner:
    """The runner of a command over ``uris`` (sources, destinations, models:
    a URI, a list of URIs, or None for one not given).

    Parameters
    ----------
    *uris
    connection : Connection, Swift or Stores, optional
        A :class:`~mlstorlets.client.swift.Swift` gateway is used as it is
        (its connections, its counters).
    stores : Stores, optional
    placement : {'auto', 'client', 'cluster'}, default='auto'
        ``'auto'``: in the cluster when every URI is, on the client
        otherwise.  ``'client'``: on the client whatever the URIs (the
        data comes through it; ``--on-client``).  ``'cluster'``: in the
        cluster or not at all (``--in-cluster-only``): a URI outside it is
        a :class:`~mlstorlets.client.errors.UsageError` before any work.
    """
    if placement not in PLACEMENTS:
        raise UsageError("placement must be one of %s, got %r" % (PLACEMENTS, placement))
    stores = stores_for(connection, stores)
    named = []
    for item in uris:
        if item is None:
            continue
        named += [item] if isinstance(item, str) else list(item)
    if placement == "client":
        return ClientRunner(stores)
    outside = [u for u in named if not stores.in_cluster(parse(u))]
    if named and not outside:
        swift = connection if isinstance(connection, Swift) else None
        return ClusterRunner(stores, swift)
    if placement == "cluster":
        raise UsageError(
            "in the cluster only, but %s is not in it: running elsewhere would move "
            "its data through the client" % (outside[0] if outside else "no URI")
        )
    return ClientRunner(stores)
