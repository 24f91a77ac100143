"""What `mlstorlets deploy` uploads, without a cluster."""

import io
import zipfile

import pytest

from mlstorlets.client.deploy import artifacts, library_zip


def test_library_zip_is_reproducible_and_holds_only_sandbox_code():
    first, second = library_zip(), library_zip()
    assert first == second
    names = zipfile.ZipFile(io.BytesIO(first)).namelist()
    assert "mlstorlets/sandbox/faces/image.py" in names
    assert "mlstorlets/sandbox/invocation.py" in names
    assert all(
        n == "mlstorlets/__init__.py" or n.startswith("mlstorlets/sandbox/") for n in names
    ), names


def test_each_storlet_is_given_the_library_it_is_deployed_with():
    found = artifacts()
    library = found[0]
    assert library.container == "dependency"
    assert library.name.startswith("mlstorlets-")
    storlets = {a.name: a for a in found if a.container == "storlet"}
    assert {"extract_face.py", "recognize_face.py", "train.py", "estimator.py"} <= set(storlets)
    for artifact in storlets.values():
        assert ("LIBRARY = %r" % library.name).encode() in artifact.body
        assert artifact.headers["X-Object-Meta-Storlet-Dependency"] == library.name


def test_a_storlet_without_the_library_line_is_refused(tmp_path):
    (tmp_path / "bare.py").write_text("class BareStorlet(object):\n    pass\n")
    with pytest.raises(ValueError, match="LIBRARY = None"):
        artifacts(str(tmp_path))
    assert [a.name for a in artifacts(str(tmp_path), library=False)] == ["bare.py"]
