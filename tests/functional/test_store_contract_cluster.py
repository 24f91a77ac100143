"""The shared store suite (tests/store_contract.py) over the embedded
cluster: swift:// through SwiftService, and s3:// through the cluster's
own S3 API with boto3."""

import pytest
from store_contract import StoreContract

from mlstorlets.client.stores import Stores


class TestSwiftStore(StoreContract):
    @pytest.fixture
    def store(self, conn, container):
        store, _ = Stores(environ={}, swift=conn).open("swift://%s/" % container)
        return store


class TestClusterS3Store(StoreContract):
    @pytest.fixture
    def store(self, cluster, conn, container):
        store, _ = Stores(environ=cluster.env(), swift=conn).open("s3://%s/" % container)
        return store
