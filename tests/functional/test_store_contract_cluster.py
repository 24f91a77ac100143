"""The shared store suite (tests/store_contract.py) over the embedded
cluster: swift:// through SwiftService, and s3:// through the cluster's
own S3 API with boto3."""

import uuid

import pytest
from store_contract import StoreContract
from swiftclient.exceptions import ClientException

from mlstorlets.client.stores import Stores


@pytest.fixture
def bucket(conn):
    """A fresh container with a name S3 accepts, removed with its objects
    (and the segments of large uploads) after the test."""
    name = "mls-%s" % uuid.uuid4().hex[:12]
    conn.put_container(name)
    yield name
    for container in (name, name + "_segments"):
        try:
            listing = conn.get_container(container, full_listing=True)[1]
        except ClientException:  # no segments: no large upload
            continue
        for entry in listing:
            conn.delete_object(container, entry["name"])
        conn.delete_container(container)


class TestSwiftStore(StoreContract):
    @pytest.fixture
    def store(self, conn, bucket):
        store, _ = Stores(environ={}, swift=conn).open("swift://%s/" % bucket)
        return store


class TestClusterS3Store(StoreContract):
    @pytest.fixture
    def store(self, cluster, conn, bucket):
        store, _ = Stores(environ=cluster.env(), swift=conn).open("s3://%s/" % bucket)
        return store
