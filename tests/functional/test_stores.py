"""Data URIs across stores against the embedded cluster's Swift and S3 APIs:
storlets in place when the data is in the cluster, on the client when not,
copies between stores, and what happens when a store fails."""

import os
import socket
import uuid
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config
from support import REPO, CuttingProxy

from mlstorlets.client.placement import copy, run_anywhere
from mlstorlets.client.stores import NotFound, StoreError, Stores
from mlstorlets.client.stores.local import FileStore

TEST_STORLETS = os.path.join(REPO, "tests", "storlets")
N = 8


@pytest.fixture
def env(cluster):
    return cluster.env()


@pytest.fixture
def s3(env):
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


@pytest.fixture
def bucket(s3, conn):
    """A fresh bucket (a container of the main account) with N objects
    under in/, written through the S3 API."""
    name = "mls-%s" % uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=name)
    for i in range(N):
        s3.put_object(
            Bucket=name, Key="in/p%d.jpg" % i, Body=b"x" * 1000 * i, Metadata={"label": "l%d" % i}
        )
    yield name
    for entry in conn.get_container(name, full_listing=True)[1]:
        conn.delete_object(name, entry["name"])
    conn.delete_container(name)


def test_s3_of_this_cluster_runs_in_place(env, s3, bucket):
    stores = Stores(env)
    summary = run_anywhere(
        "probe.py", "s3://%s/in/" % bucket, "s3://%s/out/" % bucket, {"k": "v"}, stores=stores
    )
    assert summary.placement == "cluster" and len(summary.done) == N
    assert summary.client_bytes == 0
    assert summary.source_bytes == 1000 * sum(range(N))
    answer = s3.get_object(Bucket=bucket, Key="out/p3.jpg")
    assert answer["Body"].read() == b"x" * 3000
    # The probe ran inside an object server's sandbox, not here.
    assert answer["Metadata"]["probe-host"].startswith("object-server-")
    assert answer["Metadata"]["label"] == "l3"
    again = run_anywhere(
        "probe.py", "s3://%s/in/" % bucket, "s3://%s/out/" % bucket, {"k": "v"}, stores=stores
    )
    assert len(again.skipped) == N


def test_the_same_job_elsewhere_runs_on_the_client(env, bucket, tmp_path):
    summary = run_anywhere(
        "probe.py",
        "s3://%s/in/" % bucket,
        "file://%s/out/" % tmp_path,
        {"k": "v"},
        stores=Stores(env),
        storlets_dir=TEST_STORLETS,
    )
    assert summary.placement == "client" and len(summary.done) == N
    data = 1000 * sum(range(N))
    assert summary.source_bytes == data
    assert summary.client_bytes == 2 * data  # downloaded, then written
    body, metadata = FileStore().get("%s/out/p3.jpg" % str(tmp_path)[1:])
    assert body == b"x" * 3000
    assert metadata["Probe-Host"] == socket.gethostname()
    assert metadata["Label"] == "l3"
    assert metadata["Source-Etag"] == FileStore().head("%s/out/p3.jpg" % str(tmp_path)[1:]).etag


def test_s3_with_another_accounts_credentials_is_not_in_place(cluster, env, bucket, tmp_path):
    # Same proxy, but the S3 credentials reach the account 'other': its
    # buckets are not the Swift account's containers.
    other = cluster.env("other")
    mixed = dict(
        env,
        AWS_ACCESS_KEY_ID=other["AWS_ACCESS_KEY_ID"],
        AWS_SECRET_ACCESS_KEY=other["AWS_SECRET_ACCESS_KEY"],
    )
    stores = Stores(mixed)
    with pytest.raises(NotFound, match="s3://%s/in/: no such bucket" % bucket):
        run_anywhere(
            "probe.py",
            "s3://%s/in/" % bucket,
            "s3://%s/out/" % bucket,
            stores=stores,
            storlets_dir=TEST_STORLETS,
        )
    assert not stores.in_cluster("s3://%s/" % bucket)


def test_copy_between_stores(env, s3, bucket, conn, container, tmp_path):
    stores = Stores(env)
    # Within the cluster: a server-side copy, nothing through the client.
    inside = copy("s3://%s/in/" % bucket, "swift://%s/copied/" % container, stores=stores)
    assert inside.placement == "cluster" and len(inside.done) == N
    assert inside.client_bytes == 0
    headers = conn.head_object(container, "copied/p2.jpg")
    assert headers["x-object-meta-label"] == "l2"
    # Out to local files and back into S3, resumable.
    out = copy("swift://%s/copied/" % container, "file://%s/" % tmp_path, stores=stores)
    assert out.placement == "client" and len(out.done) == N
    # A copy's bytes count once: read here, sent on as they are.
    assert out.client_bytes == 1000 * sum(range(N))
    assert (tmp_path / "p5.jpg").read_bytes() == b"x" * 5000
    back = copy("file://%s/" % tmp_path, "s3://%s/back/" % bucket, stores=stores)
    assert len(back.done) == N
    assert s3.head_object(Bucket=bucket, Key="back/p5.jpg")["Metadata"]["label"] == "l5"
    # Same MD5 on both sides: skipped.
    assert len(copy("file://%s/" % tmp_path, "s3://%s/back/" % bucket, stores=stores).skipped) == N
    single = copy("s3://%s/in/p1.jpg" % bucket, "file://%s/one.jpg" % tmp_path, stores=stores)
    assert single.done == ["s3://%s/in/p1.jpg" % bucket]
    assert (tmp_path / "one.jpg").read_bytes() == b"x" * 1000


def test_wrong_credentials_and_missing_buckets_are_named(env, bucket, tmp_path):
    wrong = Stores(dict(env, AWS_SECRET_ACCESS_KEY="wrong"))
    with pytest.raises(StoreError, match="s3://%s/in/: SignatureDoesNotMatch" % bucket):
        copy("s3://%s/in/" % bucket, "file://%s/" % tmp_path, stores=wrong)
    stores = Stores(env)
    with pytest.raises(
        NotFound, match="s3://no-such-bucket-x/in/: no such bucket 'no-such-bucket-x'"
    ):
        copy("s3://no-such-bucket-x/in/", "file://%s/" % tmp_path, stores=stores)
    with pytest.raises(NotFound, match="s3://no-such-bucket-x/: no such bucket"):
        copy("file://%s/" % tmp_path, "s3://no-such-bucket-x/", stores=stores)


def test_an_unreachable_endpoint_is_named(env, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port any more.
    stores = Stores(env, s3=s3_client(env, "http://127.0.0.1:%d" % port))
    with pytest.raises(StoreError, match="s3://abc/in/: cannot reach http://127.0.0.1:%d" % port):
        copy("s3://abc/in/", "file://%s/" % tmp_path, stores=stores)


def test_a_download_dropped_mid_body_fails_one_object_then_resumes(env, bucket, tmp_path):
    endpoint = urlsplit(env["AWS_ENDPOINT_URL"])
    proxy = CuttingProxy((endpoint.hostname, endpoint.port), "GET /%s/in/p3.jpg" % bucket)
    try:
        # Another endpoint than the cluster's proxy: on the client.
        stores = Stores(env, s3=s3_client(env, "http://127.0.0.1:%d" % proxy.port))
        first = run_anywhere(
            "probe.py",
            "s3://%s/in/" % bucket,
            "file://%s/out/" % tmp_path,
            stores=stores,
            storlets_dir=TEST_STORLETS,
        )
        assert first.placement == "client"
        assert [name for name, _ in first.failed] == ["s3://%s/in/p3.jpg" % bucket]
        assert "the download broke off" in first.failed[0][1]
        assert not (tmp_path / "out" / "p3.jpg").exists()
        second = run_anywhere(
            "probe.py",
            "s3://%s/in/" % bucket,
            "file://%s/out/" % tmp_path,
            stores=stores,
            storlets_dir=TEST_STORLETS,
        )
        assert second.done == ["s3://%s/in/p3.jpg" % bucket] and second.ok
        assert len(second.skipped) == N - 1
        assert (tmp_path / "out" / "p3.jpg").read_bytes() == b"x" * 3000
    finally:
        proxy.close()


def s3_client(env, endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )
