"""mlstorlets ls, cat, stat, rm over local files, and the filters.

tests/functional/test_objects_cli.py runs the same commands against the
real cluster, with ``storlets``.
"""

import io
import json

import pytest

from mlstorlets.client.cli import main
from mlstorlets.client.objects import Filter, format_size, storlet_doc


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.txt").write_bytes(b"hello")
    (tmp_path / "d" / "b.bin").write_bytes(bytes(3000))
    (tmp_path / "d" / "sub" / "c.csv").write_bytes(b"1,2\n")
    return tmp_path


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize(
    "rules, selected",
    [
        ((), ["a.txt", "b.bin", "sub/c.csv"]),
        ((("exclude", "*.bin"),), ["a.txt", "sub/c.csv"]),
        ((("exclude", "*"), ("include", "*.csv")), ["sub/c.csv"]),
        # The last rule that matches decides, as in aws s3.
        ((("include", "*.csv"), ("exclude", "sub/*")), ["a.txt", "b.bin"]),
        ((("exclude", "sub/*"), ("include", "*.csv")), ["a.txt", "b.bin", "sub/c.csv"]),
    ],
)
def test_filters_as_aws_applies_them(rules, selected):
    names = ["a.txt", "b.bin", "sub/c.csv"]
    assert [n for n in names if Filter(rules).selects(n)] == selected


def test_ls_takes_plain_paths_and_filters(tree, capsys):
    status, out, _ = run(capsys, "ls", "d/", "--exclude", "*.bin", "-s")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["5", "file://%s/d/a.txt" % tree]
    assert lines[1].split() == ["4", "file://%s/d/sub/c.csv" % tree]
    assert lines[2] == "2 objects, 9"


def test_ls_json_and_long(tree, capsys):
    status, out, _ = run(capsys, "ls", str(tree / "d"), "--json")
    found = json.loads(out)
    assert status == 0 and [f["size"] for f in found] == [5, 3000, 4]
    assert found[0]["etag"] == "5d41402abc4b2a76b9719d911017c592"
    status, out, _ = run(capsys, "ls", "d/a.txt", "-l", "-H")
    assert out.split() == ["5B", "5d41402abc4b2a76b9719d911017c592", "file://%s/d/a.txt" % tree]


def test_cat_writes_the_body(tree, capsys, monkeypatch):
    out = io.BytesIO()
    monkeypatch.setattr("sys.stdout", io.TextIOWrapper(out))
    assert main(["cat", "d/b.bin"]) == 0
    assert out.getvalue() == bytes(3000)


def test_cat_of_a_prefix_or_a_missing_object_is_an_error(tree, capsys):
    status, _, err = run(capsys, "cat", "d/")
    assert status == 2 and "cat reads one object" in err
    status, _, err = run(capsys, "cat", "d/none")
    assert status == 2 and "d/none: no such" in err


def test_stat_shows_size_etag_and_metadata(tree, capsys):
    status, out, _ = run(capsys, "stat", "d/a.txt", "--json")
    found = json.loads(out)
    assert status == 0
    assert (found["size"], found["etag"]) == (5, "5d41402abc4b2a76b9719d911017c592")
    status, out, _ = run(capsys, "stat", "d/")
    assert out.count("size:") == 3


def test_rm_of_a_prefix_needs_force(tree, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    status, _, err = run(capsys, "rm", "d/")
    assert status == 2 and "would delete 3 objects: pass --force" in err
    assert (tree / "d" / "a.txt").exists()
    status, out, _ = run(capsys, "rm", "d/", "--dry-run", "--json")
    assert len(json.loads(out)["would_delete"]) == 3
    assert (tree / "d" / "a.txt").exists()
    status, out, _ = run(capsys, "rm", "d/", "-f", "--exclude", "*.csv")
    assert status == 0 and out.count("deleted") == 2
    assert not (tree / "d" / "a.txt").exists()
    assert (tree / "d" / "sub" / "c.csv").exists()


def test_rm_of_one_object_needs_no_force(tree, capsys):
    assert run(capsys, "rm", "d/a.txt")[0] == 0
    assert not (tree / "d" / "a.txt").exists()


def test_rm_asks_on_a_terminal(tree, capsys, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    status, out, _ = run(capsys, "rm", "d/")
    assert status == 0 and "nothing deleted" in out
    assert (tree / "d" / "a.txt").exists()
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    assert run(capsys, "rm", "d/")[0] == 0
    assert not (tree / "d" / "a.txt").exists()


def test_storlet_doc_reads_the_class_docstring_without_running_it():
    source = (
        b'"""Module doc."""\nraise SystemExit("never run")\n'
        b'class Crop(object):\n    """Crop faces.\n\n    More.\n    """\n'
    )
    assert storlet_doc(source, "Crop") == "Crop faces."
    assert storlet_doc(source, "Other") == "Module doc."
    assert storlet_doc(b"def (", "Crop") == ""


@pytest.mark.parametrize(
    "size, text", [(0, "0B"), (1023, "1023B"), (1536, "1.5K"), (5 << 30, "5.0G")]
)
def test_format_size(size, text):
    assert format_size(size) == text
