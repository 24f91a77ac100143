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

from mlstorlets.client.runners.client import ClientRunner
from mlstorlets.client.runners.cluster import ClusterRunner
from mlstorlets.client.stores.registry import Stores
from mlstorlets.client.swift import Connection, Swift
from mlstorlets.client.uri import parse

__all__ = [
    "ClientRunner",
    "ClusterRunner",
    "ConnectionLike",
    "Runner",
    "runner_for",
    "stores_for",
]

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
    *uris: str | Iterable[str] | None, connection=None, stores: Stores | None = None
) -> Runner:
    """The runner of a command over ``uris`` (sources, destinations, models:
    a URI, a list of URIs, or None for one not given).

    In the cluster when every URI is; on the client otherwise.  A
    :class:`~mlstorlets.client.swift.Swift` gateway given as ``connection``
    is used as it is (its connections, its counters).
    """
    stores = stores_for(connection, stores)
    named = []
    for item in uris:
        if item is None:
            continue
        named += [item] if isinstance(item, str) else list(item)
    if named and all(stores.in_cluster(parse(u)) for u in named):
        swift = connection if isinstance(connection, Swift) else None
        return ClusterRunner(stores, swift)
    return ClientRunner(stores)
