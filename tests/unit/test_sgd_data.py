import io

import numpy as np
import pytest

from mlstorlets.sandbox.errors import ObjectError
from mlstorlets.sandbox.sgd.data import DataOptions, holdout_mask, iter_batches
from sgd_fakes import FakeInput


def read(payload, metadata=None, **params):
    options = DataOptions.from_sources({k: str(v) for k, v in params.items()}, metadata, "c/o")
    batches = list(iter_batches(FakeInput(payload), options, "c/o"))
    return (np.vstack([b.X for b in batches]), np.concatenate([b.y for b in batches]),
            batches)


@pytest.mark.parametrize("text", [b"1,2,3\n4,5,6\n", b"1\t2\t3\n4\t5\t6\n",
                                  b"1 2   3\n\n# note\n4 5 6\n"])
def test_text_formats(text):
    X, y, _ = read(text)
    np.testing.assert_array_equal(X, [[1, 2], [4, 5]])
    np.testing.assert_array_equal(y, [3, 6])


def test_label_and_weight_columns_header_and_metadata():
    X, y, batches = read(b"a,b,c,w\n9,1,2,0.5\n8,3,4,2\n",
                         {"Num-Features": "2", "Label-Column": "0"},
                         weight_column=3, header_rows=1)
    np.testing.assert_array_equal(X, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(y, [9, 8])
    np.testing.assert_array_equal(batches[0].sample_weight, [0.5, 2])


def test_streaming_batches_keep_line_numbers():
    payload = b"".join(b"%d,%d\n" % (i, i) for i in range(10))
    _, _, batches = read(payload, batch_size=4)
    assert [len(b.y) for b in batches] == [4, 4, 2]
    assert batches[2].lines.tolist() == [9, 10]


@pytest.mark.parametrize("payload, params, message", [
    (b"1,2,3\n1,2\n", {}, "line 2: 2 columns, expected 3"),
    (b"1,2,3\n1,x,3\n", {}, "line 2: non-numeric value 'x'"),
    (b"1,2,3\n1,nan,3\n", {}, "line 2: feature is NaN"),
    (b"1,2,inf\n", {}, "line 1: label is NaN or infinite"),
    (b"", {}, "empty object"),
    (b"# only a comment\n", {}, "empty object"),
    (b"1,2,3\n", {"num_features": 3}, "line 1: 3 columns, expected 4"),
])
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


def test_holdout_mask_is_independent_of_batching():
    whole = holdout_mask(100, 0, 0.3, 7, "c/o")
    parts = np.concatenate([holdout_mask(30, 0, 0.3, 7, "c/o"),
                            holdout_mask(70, 30, 0.3, 7, "c/o")])
    np.testing.assert_array_equal(whole, parts)
    assert 10 < whole.sum() < 50
