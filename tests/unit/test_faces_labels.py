"""A crop's person from its metadata, its folder or its name; and the
training job that carries the labels to the storlet."""

import json

import pytest

from mlstorlets.client.errors import UsageError
from mlstorlets.client.faces.labels import label_rule
from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.faces import shards


@pytest.mark.parametrize(
    "spec, uri, metadata, label",
    [
        (None, "swift://c/crops/x.png", {"Name": "obama"}, "obama"),
        ("metadata:Person", "swift://c/x.png", {"Person": "merkel"}, "merkel"),
        ("metadata", "swift://c/x.png", {}, None),
        ("folder", "swift://c/crops/obama/1.png", {"Name": "wrong"}, "obama"),
        ("folder", "file:///data/merkel/2.png", {}, "merkel"),
        ("folder", "swift://c/1.png", {}, None),
        ("name:^([a-z]+)", "s3://bucket/crops/trump07.png", {}, "trump"),
        ("name:[0-9]+", "s3://bucket/crops/trump07.png", {}, "07"),
        ("name:^zz", "s3://bucket/crops/trump07.png", {}, None),
        ("folder", "swift://c/%s/1.png" % ("x" * 300), {}, None),
    ],
)
def test_label_rules(spec, uri, metadata, label):
    assert label_rule(spec)(uri, metadata) == label


@pytest.mark.parametrize("spec", ["folders", "name:", "name:([a-z", "metadata;Name", "folder:x"])
def test_a_bad_rule_is_refused_before_any_work(spec):
    with pytest.raises(UsageError):
        label_rule(spec)


class Crop:
    def __init__(self, metadata):
        self.metadata = metadata

    def get_metadata(self):
        return self.metadata


def test_a_job_carries_a_label_an_input(monkeypatch):
    body = shards.job_body(["c/a.png", "c/b.png"], ["obama", "merkel"])
    assert json.loads(body) == {"inputs": ["c/a.png", "c/b.png"], "labels": ["obama", "merkel"]}
    names, labels = shards._job(_File(body), "c/job", 2)
    assert labels == ["obama", "merkel"]
    # Crops whose pixels and embeddings do not matter here.
    monkeypatch.setattr(shards, "read_embedding", lambda data, name: shards.np.zeros(128))
    monkeypatch.setattr(shards, "read_input", lambda f, name, limit: b"")
    metadata, shard = shards.pack([Crop({}), Crop({"Name": "x"})], names, {}, labels)
    assert metadata == {"Shard-Rows": "2"}
    assert shards.load_shard(shard, "s")[1].tolist() == ["obama", "merkel"]


class _File:
    def __init__(self, body):
        self.body = body

    def read(self, size=-1):
        body, self.body = self.body, b""
        return body


@pytest.mark.parametrize("labels", [["only one"], ["a", ""], ["a", 3], ["a", "x" * 257], "ab"])
def test_bad_job_labels_are_refused(labels):
    body = json.dumps({"inputs": ["c/a", "c/b"], "labels": labels}).encode()
    with pytest.raises(ObjectError, match="labels must be one name"):
        shards._job(_File(body), "c/job", 2)
