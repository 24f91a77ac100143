"""swift:// through fsspec (the package's entry point), against the
embedded cluster: what pandas, pyarrow and dask would call."""

import json

import fsspec
import pytest

from mlstorlets.client.stores import Stores
from mlstorlets.client.stores.swiftfs import SwiftFileSystem


@pytest.fixture
def fs(cluster):
    return SwiftFileSystem(
        stores=Stores(cluster.env(), segment_size=1 << 20), skip_instance_cache=True
    )


def test_the_protocol_is_registered():
    assert fsspec.get_filesystem_class("swift") is SwiftFileSystem


def test_write_list_read_by_ranges(cluster, fs, conn, container):
    rows = "".join("%d,%d\n" % (i, i * i) for i in range(1000))
    # By URL, as pandas opens it (storage options go to the filesystem).
    with fsspec.open(
        "swift://%s/d/a.csv" % container,
        "wt",
        stores=Stores(cluster.env()),
        headers={"Content-Type": "text/csv"},
    ) as f:
        f.write("n,square\n")
        f.write(rows)
    assert conn.head_object(container, "d/a.csv")["content-type"] == "text/csv"
    with fs.open("%s/d/a.csv" % container, "rb", block_size=100) as f:
        f.seek(9)
        assert f.read(8) == b"0,0\n1,1\n"
    assert fs.cat_file("swift://%s/d/a.csv" % container, 0, 8) == b"n,square"
    fs.pipe_file("swift://%s/d/e/b.json" % container, json.dumps({"k": 1}).encode())
    assert sorted(fs.ls("swift://%s/d" % container, detail=False)) == [
        "%s/d/a.csv" % container,
        "%s/d/e" % container,
    ]
    assert fs.info("%s/d/e" % container)["type"] == "directory"
    info = fs.info("swift://%s/d/a.csv" % container)
    assert info["size"] == len(rows) + 9 and info["type"] == "file"
    assert json.loads(fs.cat("swift://%s/d/e/b.json" % container)) == {"k": 1}
    with pytest.raises(FileNotFoundError):
        fs.info("swift://%s/none" % container)
    fs.rm("swift://%s/d/e/b.json" % container)
    assert not fs.exists("swift://%s/d/e/b.json" % container)


def test_a_big_file_is_written_in_segments(fs, conn, container):
    data = bytes(range(256)) * 10000  # 2.4 MiB, three 1 MiB segments
    with fs.open("swift://%s/big.bin" % container, "wb") as f:
        for start in range(0, len(data), 300000):
            f.write(data[start : start + 300000])
    headers = conn.head_object(container, "big.bin")
    assert headers["x-static-large-object"] == "True"
    assert fs.cat_file("swift://%s/big.bin" % container) == data
    segments = conn.get_container(container + "_segments")[1]
    assert len(segments) == 3
    conn.delete_object(container, "big.bin", query_string="multipart-manifest=delete")
    conn.delete_container(container + "_segments")
