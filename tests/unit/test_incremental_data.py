import io
import zipfile

import numpy as np
import pytest
from sgd_fakes import FakeInput

from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.incremental.data import DataOptions, iter_batches


def read(payload, metadata=None, **params):
    options = DataOptions.from_sources({k: str(v) for k, v in params.items()}, metadata, "c/o")
    batches = list(iter_batches(FakeInput(payload), options, "c/o"))
    return (np.vstack([b.X for b in batches]), np.concatenate([b.y for b in batches]), batches)


@pytest.mark.parametrize(
    "text", [b"1,2,3\n4,5,6\n", b"1\t2\t3\n4\t5\t6\n", b"1 2   3\n\n# note\n4 5 6\n"]
)
def test_text_formats(text):
    X, y, _ = read(text)
    np.testing.assert_array_equal(X, [[1, 2], [4, 5]])
    np.testing.assert_array_equal(y, [3, 6])


def test_label_and_weight_columns_header_and_metadata():
    X, y, batches = read(
        b"a,b,c,w\n9,1,2,0.5\n8,3,4,2\n",
        {"Num-Features": "2", "Label-Column": "0"},
        weight_column=3,
        header_rows=1,
    )
    np.testing.assert_array_equal(X, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(y, [9, 8])
    np.testing.assert_array_equal(batches[0].sample_weight, [0.5, 2])


def test_streaming_batches_keep_line_numbers():
    payload = b"".join(b"%d,%d\n" % (i, i) for i in range(10))
    _, _, batches = read(payload, batch_size=4)
    assert [len(b.y) for b in batches] == [4, 4, 2]
    assert batches[2].lines.tolist() == [9, 10]


@pytest.mark.parametrize(
    "payload, params, message",
    [
        (b"1,2,3\n1,2\n", {}, "line 2: 2 columns, expected 3"),
        (b"1,2,3\n1,x,3\n", {}, "line 2: non-numeric value 'x'"),
        (b"1,2,3\n1,nan,3\n", {}, "line 2: feature is NaN"),
        (b"1,2,inf\n", {}, "line 1: label is NaN or infinite"),
        (b"", {}, "empty object"),
        (b"# only a comment\n", {}, "empty object"),
        (b"1,2,3\n", {"num_features": 3}, "line 1: 3 columns, expected 4"),
    ],
)
def test_text_errors_name_object_and_line(payload, params, message):
    with pytest.raises(ObjectError) as err:
        read(payload, **params)
    assert err.value.name == "c/o" and message in err.value.reason


def test_npy_streamed_and_npz():
    arr = np.arange(12, dtype=np.float32).reshape(4, 3)
    buf = io.BytesIO()
    np.save(buf, arr)
    X, y, batches = read(buf.getvalue(), batch_size=3)
    np.testing.assert_array_equal(X, arr[:, :2])
    np.testing.assert_array_equal(y, arr[:, 2])
    assert len(batches) == 2
    buf = io.BytesIO()
    np.savez(buf, X=arr, y=np.array(["a", "b", "a", "b"]), sample_weight=np.ones(4))
    X, y, _ = read(buf.getvalue())
    np.testing.assert_array_equal(X, arr)
    assert y.tolist() == ["a", "b", "a", "b"]


def test_npy_object_arrays_and_truncation_are_refused():
    buf = io.BytesIO()
    np.save(buf, np.array([[1, "a"]], dtype=object), allow_pickle=True)
    with pytest.raises(ObjectError, match="pickle"):
        read(buf.getvalue())
    buf = io.BytesIO()
    np.save(buf, np.ones((4, 3)))
    with pytest.raises(ObjectError, match="truncated"):
        read(buf.getvalue()[:-8])


# -- bounds ------------------------------------------------------------------


def npz_bytes(**arrays):
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def npy_member(shape, data):
    """A .npy member whose header declares ``shape`` but holds ``data``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": shape}
    )
    return buf.getvalue() + data


def refused(payload, **params):
    with pytest.raises(ObjectError) as err:
        read(payload, **params)
    assert err.value.name == "c/o"
    return err.value.reason


def test_a_line_longer_than_the_limit_is_refused_before_it_is_read_whole():
    assert "line 2 is longer than max_line_bytes=64 bytes" in refused(
        b"1,2\n" + b"1," * 100 + b"3\n", max_line_bytes=64
    )
    # the limit counts the line, not its newline
    X, _, _ = read(b"1" * 62 + b",2\n", max_line_bytes=64)
    assert X.shape == (1, 1)


def test_a_line_longer_than_the_default_limit_is_refused():
    reason = refused(b"1," * (1 << 20) + b"2\n")
    assert "line 1 is longer than max_line_bytes=1048576" in reason


@pytest.mark.parametrize("fmt", ["csv", "npy", "npz"])
def test_too_many_rows_are_refused(fmt):
    arr = np.ones((5, 3))
    if fmt == "csv":
        payload = b"1,2,3\n" * 5
    elif fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, arr)
        payload = buf.getvalue()
    else:
        payload = npz_bytes(X=arr, y=np.ones(5))
    assert "5 rows is over max_rows=4" in refused(payload, max_rows=4)
    read(payload, max_rows=5)


def test_too_many_features_and_too_big_batches_are_refused():
    assert "line 1: 5 features is over max_features=4" in refused(b"1,2,3,4,5,6\n", max_features=4)
    reason = refused(b"1,2,3\n" * 100, max_batch_bytes=1000)
    assert "over max_batch_bytes=1000; lower batch_size" in reason
    read(b"1,2,3\n" * 100, max_batch_bytes=1000, batch_size=10)


def test_a_zip_bomb_is_refused_before_it_is_inflated():
    bomb = npz_bytes(X=np.zeros((6_250_000, 1)), y=np.zeros(1))  # 50 MB of zeros
    assert len(bomb) < 200_000
    reason = refused(bomb, max_array_bytes=1 << 20)
    assert (
        ".npz member X.npy of 50000128 bytes uncompressed is over max_array_bytes=1048576" in reason
    )


def test_an_npz_member_whose_header_lies_about_its_size_is_refused():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("X.npy", npy_member((100_000_000, 10), b"\0" * 80))
        archive.writestr("y.npy", npy_member((10,), b"\0" * 80))
    reason = refused(buf.getvalue())
    assert "X.npy: its header declares 8000000000 bytes of data, the archive holds 80" in reason


def test_archive_size_and_member_count_are_bounded():
    payload = npz_bytes(X=np.ones((4, 2)), y=np.ones(4))
    assert "over max_archive_bytes=100 bytes" in refused(payload, max_archive_bytes=100)
    many = npz_bytes(X=np.ones((4, 2)), y=np.ones(4), **{f"a{i}": np.ones(1) for i in range(20)})
    assert ".npz with 22 members is over max_members=16" in refused(many)


@pytest.mark.parametrize(
    "limit, value", [("max_rows", 0), ("max_line_bytes", 1 << 30), ("max_members", "x")]
)
def test_limits_are_checked_against_their_hard_maxima(limit, value):
    reason = refused(b"1,2\n", **{limit: value})
    assert limit in reason


def test_limits_are_never_read_from_metadata():
    options = DataOptions.from_sources({}, {"Max-Rows": "1"}, "c/o")
    assert options.max_rows == DataOptions().max_rows
