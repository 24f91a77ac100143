"""Storlets run on the client: the file API and the refusal protocol."""

import os
import textwrap

import pytest

from mlstorlets.client.deploy import default_source_dir
from mlstorlets.client.errors import Refused, StorletFailed, UsageError
from mlstorlets.client.local_storlet import (
    InputFile,
    OutputFile,
    invoke,
    load_storlet,
)

HERE = os.path.dirname(os.path.abspath(__file__))
TEST_STORLETS = os.path.join(os.path.dirname(HERE), "storlets")

REFUSER = """
from mlstorlets.sandbox import invocation
from mlstorlets.sandbox.errors import ObjectError


def compute(in_files, params):
    body = in_files[0].read()
    if body.startswith(b'bad'):
        raise ObjectError(params['source'], 'not an image')
    return {'length': len(body)}, body.upper()


class RefuserStorlet(object):
    def __init__(self, logger):
        self.logger = logger

    def __call__(self, in_files, out_files, params):
        if params.get('lie') == 'yes':
            # Declares more than it writes: an output cut short.
            out_files[0].set_metadata({'Storlet-Output-Length': '99'})
            out_files[0].write(in_files[0].read())
            out_files[0].close()
            return
        invocation.run(self.logger, in_files, out_files, params, compute)
"""


@pytest.fixture
def storlets_dir(tmp_path):
    (tmp_path / "refuser.py").write_text(textwrap.dedent(REFUSER))
    return str(tmp_path)


def test_files_behave_like_the_engines():
    f = InputFile(b"line 1\nline 2\n", {"Name": "x"})
    assert f.readline() == b"line 1\n"
    assert f.read(4) == b"line"
    assert list(f) == [b" 2\n"]
    metadata = f.get_metadata()
    metadata["Name"] = "changed"
    assert f.get_metadata() == {"Name": "x"}
    f.close()
    assert f.closed

    out = OutputFile()
    with pytest.raises(IOError, match="after metadata"):
        out.write(b"x")
    out.set_metadata({"a": "1"})
    with pytest.raises(IOError, match="twice"):
        out.set_metadata({"a": "2"})
    out.writelines([b"a", b"b"])
    out.close()
    assert out.body == b"ab"


def test_the_probe_runs_as_in_the_cluster():
    cls = load_storlet("probe.py", TEST_STORLETS)
    metadata, body = invoke(cls, [(b"abc", {"Name": "n"})], {"k": "v"}, "file:///x", "probe.py")
    assert body == b"abc"
    assert metadata["Name"] == "n" and metadata["Probe-Params"] == "k=v"
    assert "Storlet-Output-Length" not in metadata
    with pytest.raises(StorletFailed, match="probe asked to fail"):
        invoke(cls, [(b"abc", {})], {"action": "fail"}, "x", "probe.py")
    with pytest.raises(StorletFailed, match=r"^x: storlet probe.py failed: "):
        invoke(cls, [(b"abcd", {})], {"action": "fail-late"}, "x", "probe.py")


def test_a_refusal_names_the_object(storlets_dir):
    cls = load_storlet("refuser", storlets_dir)
    metadata, body = invoke(cls, [(b"ok", {})], {"source": "s"}, "s", "r")
    assert (metadata, body) == ({"Length": "2"}, b"OK")
    with pytest.raises(Refused, match="^s3://b/k: storlet r refused it: not an image$") as refused:
        invoke(cls, [(b"bad", {})], {"source": "s3://b/k"}, "s3://b/k", "r")
    assert refused.value.name == "s3://b/k"
    with pytest.raises(StorletFailed, match="ended after 2 of 99 bytes"):
        invoke(cls, [(b"ok", {})], {"source": "s", "lie": "yes"}, "s", "r")


def test_the_projects_storlets_load():
    cls = load_storlet("estimator.py", default_source_dir())
    assert cls.__name__ == "EstimatorStorlet"
    with pytest.raises(UsageError, match="no storlet nothing.py"):
        load_storlet("nothing.py", default_source_dir())
