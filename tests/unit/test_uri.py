"""URIs of every store: parsing, validation, naming outputs."""

import pytest

from mlstorlets.client.uri import URI, output_type_for, parse, parse_uri, plan_keys


@pytest.mark.parametrize(
    "uri, scheme, location, key, prefix",
    [
        ("swift://photos/train/a.jpg", "swift", "photos", "train/a.jpg", False),
        ("swift://photos/train/", "swift", "photos", "train/", True),
        ("swift://photos", "swift", "photos", "", True),
        ("s3://my-bucket.x/k/ey", "s3", "my-bucket.x", "k/ey", False),
        ("s3://abc/", "s3", "abc", "", True),
        ("file:///tmp/x/y.jpg", "file", "", "tmp/x/y.jpg", False),
        ("file:///tmp/x/", "file", "", "tmp/x/", True),
        ("file:///", "file", "", "", True),
        ("dropbox://Photos/a.jpg", "dropbox", "", "Photos/a.jpg", False),
        ("dropbox:///Photos/", "dropbox", "", "Photos/", True),
        ("dropbox://", "dropbox", "", "", True),
        ("gdrive://Renders/f.png", "gdrive", "", "Renders/f.png", False),
        ("gdrive:///Renders/", "gdrive", "", "Renders/", True),
        ("gdrive://", "gdrive", "", "", True),
    ],
)
def test_parse(uri, scheme, location, key, prefix):
    parsed = parse(uri)
    assert (parsed.scheme, parsed.location, parsed.key) == (scheme, location, key)
    assert parsed.is_prefix is prefix
    assert parse(str(parsed)) == parsed


@pytest.mark.parametrize(
    "uri, message",
    [
        ("http://x/y", "unknown scheme"),
        ("gs://bucket/key", "unknown scheme"),
        ("gdrive://a//b", "empty folder name"),
        ("swift:///object", "no container"),
        ("swift://" + "c" * 257 + "/o", "at most 256 bytes"),
        ("swift://c/" + "é" * 513, "at most 1024 bytes"),
        ("swift://c/a\x00b", "NUL"),
        ("swift://c/\udc80", "UTF-8"),
        ("s3:///key", "no bucket"),
        ("s3://ab/key", "not a valid bucket name"),
        ("s3://Upper/key", "not a valid bucket name"),
        ("s3://under_score/key", "not a valid bucket name"),
        ("s3://a..b/key", "not a valid bucket name"),
        ("s3://-abc/key", "not a valid bucket name"),
        ("s3://192.168.1.1/key", "not a valid bucket name"),
        ("s3://" + "a" * 64 + "/key", "not a valid bucket name"),
        ("s3://abc/" + "k" * 1025, "at most 1024 bytes"),
        ("file://relative/path", "absolute path"),
        ("file:///a/../etc", "no . or .."),
    ],
)
def test_invalid_uris_are_named(uri, message):
    with pytest.raises(ValueError, match=message) as err:
        parse(uri)
    assert repr(uri)[:40] in str(err.value)


def test_a_swift_container_cannot_hold_a_slash():
    # Everything after the first / is the object: the container never has
    # one, and the limits apply to each part.
    assert parse("swift://c/d/e") == URI("swift", "c", "d/e")
    assert parse("swift://" + "c" * 256 + "/" + "o" * 1024).key == "o" * 1024


def test_parse_uri_keeps_its_contract():
    assert parse_uri("swift://c/p/") == ("c", "p/")
    with pytest.raises(ValueError, match="not a swift:// URI"):
        parse_uri("s3://abc/x")


def test_plan_keys_names_outputs_like_the_batch_runner():
    assert plan_keys("s3://abc/in/", "file:///out/", ["in/a", "in/d/b"]) == [
        ("in/a", "out/a"),
        ("in/d/b", "out/d/b"),
    ]
    assert plan_keys("s3://abc/in/a.jpg", "dropbox://x/", ["in/a.jpg"]) == [("in/a.jpg", "x/a.jpg")]
    assert plan_keys("s3://abc/in/a.jpg", "swift://c/b.jpg", ["in/a.jpg"]) == [
        ("in/a.jpg", "b.jpg")
    ]
    with pytest.raises(ValueError, match="names one object"):
        plan_keys("s3://abc/in/", "swift://c/one", ["in/a", "in/b"])
    with pytest.raises(ValueError, match="overwrite its own source"):
        plan_keys("s3://abc/in/", "s3://abc/in/", ["in/a"])


def test_a_suffix_renames_outputs_under_a_prefix_only():
    assert plan_keys(
        "s3://abc/in/", "swift://c/out/", ["in/a.jpeg", "in/d.x/b"], suffix=".png"
    ) == [("in/a.jpeg", "out/a.png"), ("in/d.x/b", "out/d.x/b.png")]
    # A destination naming one object is named as the user asked.
    assert plan_keys("s3://abc/in/a.jpeg", "swift://c/crop.bin", ["in/a.jpeg"], suffix=".png") == [
        ("in/a.jpeg", "crop.bin")
    ]


def test_an_output_type_may_depend_on_the_source():
    def output_type(name):
        return (".avi", "video/x-msvideo") if name.endswith(".mp4") else None

    assert plan_keys(
        "swift://c/in/",
        "swift://c/out/",
        ["in/a.mp4", "in/b.jpeg"],
        suffix=lambda name: output_type_for(output_type, name)[0],
    ) == [("in/a.mp4", "out/a.avi"), ("in/b.jpeg", "out/b.jpeg")]
    assert output_type_for(output_type, "in/b.jpeg") == (None, None)
    assert output_type_for((".png", "image/png"), "in/b.jpeg") == (".png", "image/png")
    assert output_type_for(None, "in/b.jpeg") == (None, None)


def test_a_plain_path_is_a_local_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    assert str(parse("photos/a.jpg")) == "file://%s/photos/a.jpg" % tmp_path
    assert parse("photos").is_prefix and parse("photos/").is_prefix
    assert parse(str(tmp_path / "x.csv")) == parse("file://%s/x.csv" % tmp_path)
    assert not parse("missing").is_prefix
