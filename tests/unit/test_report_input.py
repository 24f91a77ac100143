"""``mlstorlets report`` refuses a source with nothing to show, as ``run``
does, rather than writing an empty page."""

import pytest

from mlstorlets.client.errors import NotFound
from mlstorlets.client.report import write_report


def test_an_empty_prefix_is_refused_and_no_page_written(tmp_path):
    (tmp_path / "frames").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.jpg").write_bytes(b"x")
    page = tmp_path / "page.html"
    src = "file://%s/frames/" % tmp_path
    with pytest.raises(NotFound, match="no objects under this prefix") as err:
        write_report(src, str(page))
    assert err.value.uri == src
    with pytest.raises(NotFound, match="no objects under this prefix"):
        write_report("file://%s/other/" % tmp_path, str(page), compare=src)
    assert not page.exists()


def test_a_missing_object_is_refused(tmp_path):
    page = tmp_path / "page.html"
    with pytest.raises(NotFound, match="no such object"):
        write_report("file://%s/absent.jpg" % tmp_path, str(page))
    assert not page.exists()
