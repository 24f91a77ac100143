"""The estimator storlet's decoding bounds, through the real cluster.

Each object here would make an unbounded decoder hold gigabytes (a zip bomb
``.npz``, one huge CSV line) or run past what a caller allowed (too many
rows).  The storlet refuses it: the client gets a 422 that names the object
and the limit, nothing is written, the object is untouched, and the next
call works.  Both ways of calling are tried: one call per object (on an
object server) and a group of objects in one call (on the proxy).
"""

import io
import zipfile

import numpy as np
import pytest
from swiftclient.client import Connection

from mlstorlets.client.incremental import SGDRegressor
from mlstorlets.client.incremental.transport import STATE_PREFIX
from mlstorlets.sandbox.errors import ObjectError


def good_csv(seed):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(40, 3))
    y = X @ [1.0, -2.0, 0.5] + 0.1
    return "".join("%r,%r,%r,%r\n" % tuple(map(float, (*x, t))) for x, t in zip(X, y)).encode()


def zip_bomb(n_rows=75_000_000):
    """An honest .npz of 600 MB of float64 zeros, well under 1 MB compressed."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("X.npy", "w", force_zip64=True) as member:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, {"descr": "<f8", "fortran_order": False, "shape": (n_rows, 1)}
            )
            member.write(header.getvalue())
            chunk = bytes(1 << 20)
            left = n_rows * 8
            while left:
                member.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))
        y = io.BytesIO()
        np.save(y, np.zeros(1))
        archive.writestr("y.npy", y.getvalue())
    return buf.getvalue()


@pytest.fixture(scope="module")
def bomb():
    return zip_bomb()


CASES = [
    # name, object, data options, what the refusal says
    (
        "zip-bomb",
        "bomb.npz",
        {},
        ".npz member X.npy of 600000128 bytes uncompressed is over max_array_bytes=536870912",
    ),
    ("huge-line", "line.csv", {}, "line 1 is longer than max_line_bytes=1048576 bytes"),
    ("too-many-rows", "rows.csv", {"max_rows": 50}, "51 rows is over max_rows=50"),
]


def payload_of(case, bomb):
    if case == "zip-bomb":
        return bomb
    if case == "huge-line":
        return b"1," * (1 << 20) + b"2\n"  # one 2 MB line
    return good_csv(1) + good_csv(2) + good_csv(3)  # 120 rows


@pytest.fixture
def rconn(cluster):
    auth, user, key = cluster.credentials()
    return Connection(authurl=auth, user=user, key=key, retries=0)


@pytest.mark.parametrize("per_call", [1, None], ids=["per-object", "grouped"])
@pytest.mark.parametrize("case,obj,options,message", CASES, ids=[c[0] for c in CASES])
def test_a_bound_refuses_the_object_and_the_cluster_keeps_serving(
    rconn, container, bomb, case, obj, options, message, per_call
):
    payload = payload_of(case, bomb)
    if case == "zip-bomb":
        assert len(payload) < 3_000_000
    rconn.put_object(container, "good.csv", good_csv(0))
    rconn.put_object(container, "good2.csv", good_csv(4))
    etag = rconn.put_object(container, obj, payload)
    good, good2, bad = ("swift://%s/%s" % (container, o) for o in ("good.csv", "good2.csv", obj))
    est = SGDRegressor(random_state=0, shuffle=False)
    call = dict(connection=rconn, objects_per_call=per_call, data_options=options)

    with pytest.raises(ObjectError) as err:
        est.remote_partial_fit([good, bad], **call)
    assert err.value.name == bad, str(err.value)
    assert err.value.status == 422
    assert message in str(err.value)
    assert not hasattr(est, "coef_")

    # nothing written, the object untouched
    listing = rconn.get_container(container, full_listing=True)[1]
    assert sorted(e["name"] for e in listing) == sorted(["good.csv", "good2.csv", obj])
    assert not any(e["name"].startswith(STATE_PREFIX) for e in listing)
    headers = rconn.head_object(container, obj)
    assert headers["etag"] == etag and int(headers["content-length"]) == len(payload)

    # and the next calls work, alone and in a group
    est.remote_partial_fit([good, good2], **call)
    est.remote_partial_fit(good, **call)
    assert est.t_ == 1 + 120


def test_a_caller_cannot_raise_a_limit_past_its_hard_maximum(rconn, container):
    rconn.put_object(container, "good.csv", good_csv(0))
    est = SGDRegressor(random_state=0)
    with pytest.raises(ObjectError) as err:
        est.remote_partial_fit(
            "swift://%s/good.csv" % container,
            connection=rconn,
            data_options={"max_array_bytes": 1 << 40},
        )
    assert err.value.status == 422
    assert "max_array_bytes must be in [1, 4294967296]" in str(err.value)
