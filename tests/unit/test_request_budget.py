"""Planning multi-input storlet requests within the engine's limits."""

import json

import pytest

from mlstorlets.client.faces.labels import mix_by_label
from mlstorlets.client.runners import budget as plan
from mlstorlets.sandbox import protocol


def test_input_cost_is_the_json_the_engine_sends():
    sent = json.dumps({"storlets": {"type": "SBUS_FD_INPUT_OBJECT"}, "storage": {"Name": "obama"}})
    assert plan.input_cost({"Name": "obama"}) == len(sent) + len(", ")
    # Storlet-* metadata is not sent to storlets.
    assert plan.input_cost({"Name": "obama", "Storlet-Main": "x.Y"}) == plan.input_cost(
        {"Name": "obama"}
    )
    # A non-ASCII byte is escaped to \u00XX: six characters.
    assert plan.input_cost({"Name": "\u00e9"}) == plan.input_cost({"Name": "e"}) + 2 * 6 - 1


def test_cost_model_matches_the_limits_measured_on_the_cluster():
    # Largest number of inputs a probe request read, found by bisection:
    # (metadata, inputs) -> the next input overflows the 4096-byte datagram.
    measured = [({}, 59), ({"Name": "obama"}, 47), ({"Name": "obama", "Source": "x" * 140}, 16)]
    bases = []
    for metadata, n in measured:
        cost = plan.input_cost(metadata)
        bases.append((plan.SBUS_LIMIT - (n + 1) * cost, plan.SBUS_LIMIT - n * cost))
    low, high = max(b[0] for b in bases), min(b[1] for b in bases)
    # One fixed overhead explains every measurement, and RESERVED covers it.
    assert low < high <= plan.RESERVED


def test_resource_path_quotes_what_the_header_list_would_split():
    assert plan.resource_path("c", "a,b/é %.png") == "/c/a%2Cb/%C3%A9%20%25.png"


def test_groups_fill_the_datagram_budget():
    costs = [100] * 25
    paths = ["/c/o%02d" % i for i in range(25)]
    groups = plan.plan_groups(costs, paths, budget=1000)
    assert [len(g) for g in groups] == [10, 10, 5]
    assert sum(groups, []) == list(range(25))


def test_groups_respect_the_header_line():
    paths = ["/c/" + "x" * 97 for _ in range(200)]  # 100 characters and a comma
    groups = plan.plan_groups([1] * 200, paths, budget=10**6, max_count=1000)
    room = plan.HEADER_LIMIT - len("X-Storlet-Extra-Resources: ") - 2
    for group in groups:
        assert len(",".join(paths[i] for i in group)) <= room
    assert len(groups[0]) == (room + 1) // 101


def test_groups_respect_the_inputs_a_sandbox_takes():
    groups = plan.plan_groups([1] * 200, ["/c/o%03d" % i for i in range(200)], budget=10**6)
    # With the request's object and a payload, never past MAX_INPUTS.
    assert max(len(g) for g in groups) == protocol.MAX_INPUTS - 2


def test_groups_respect_weights():
    groups = plan.plan_groups(
        [1] * 6, ["/c/o"] * 6, weights=[3, 3, 3, 1, 1, 7], max_weight=6, budget=100
    )
    assert groups == [[0, 1], [2, 3, 4], [5]]
    assert plan.plan_groups([1] * 5, ["/c/o"] * 5, max_weight=2, budget=100) == [
        [0, 1],
        [2, 3],
        [4],
    ]


def test_an_input_too_large_for_any_request_is_refused():
    with pytest.raises(ValueError, match="input 1"):
        plan.plan_groups([10, 5000], ["/c/a", "/c/b"], budget=3000)
    with pytest.raises(ValueError, match="max_weight"):
        plan.plan_groups([1], ["/c/a"], max_weight=0)


def test_2000_crops_fit_in_bounded_requests():
    # Crops as extract_face writes them, with the batch runner's etag.
    metadata = {
        "Name": "obama",
        "Face-Box": "120,85,240,240",
        "Source": "photos/train/obama%04d.jpeg" % 1999,
        "Source-Etag": "0" * 32,
    }
    costs = [plan.input_cost(metadata)] * 2000
    paths = [plan.resource_path("crops", "faces/obama%04d.png" % i) for i in range(2000)]
    groups = plan.plan_groups(costs, paths)
    assert all(sum(costs[i] for i in g) <= plan.SBUS_LIMIT - plan.RESERVED for g in groups)
    assert 10 <= len(groups[0]) <= 20
    # One header would not even hold the paths of 2000 crops.
    assert len(",".join(paths)) > plan.HEADER_LIMIT


def test_mix_by_label_spreads_every_label():
    labels = ["a"] * 30 + ["b"] * 30 + ["c"] * 30
    order = mix_by_label(labels, seed=1)
    assert sorted(order) == list(range(90))
    # Every window of 15 holds every person.
    for start in range(0, 90, 15):
        assert {labels[i] for i in order[start : start + 15]} == {"a", "b", "c"}
    assert mix_by_label(labels, seed=1) == order
    assert mix_by_label(labels, seed=2) != order


@pytest.mark.parametrize(
    "kind, name, expected",
    [
        (None, "v/clip.mp4", (".avi", "video/x-msvideo")),
        (None, "v/clip.mov", (".avi", "video/x-msvideo")),
        (None, "p/photo.jpeg", None),
        ("video", "v/clip", (".avi", "video/x-msvideo")),
        ("image", "v/clip.mp4", None),
    ],
)
def test_a_recognized_video_is_named_and_typed_avi(kind, name, expected):
    from mlstorlets.client.faces.pipeline import _recognized_type

    assert _recognized_type(kind, name) == expected
