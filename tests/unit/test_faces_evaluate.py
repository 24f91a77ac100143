"""The evaluation's group photos: every pair of test photos of two people
side by side, every face named."""

from mlstorlets.client import datasets
from mlstorlets.client.faces.evaluate import group_photos


def test_group_photos_count_every_face_once(faces_model, faces_data):
    tests = datasets.items(str(faces_data), splits=("test",))
    labels = [i.label for i in tests]
    pairs = sum(
        1 for i in range(len(tests)) for j in range(i + 1, len(tests)) if labels[i] != labels[j]
    )
    found = group_photos(faces_model, tests)
    assert found["groups"] == pairs and found["faces"] == 2 * pairs
    assert found["right"] + found["wrong"] + found["missed"] == found["faces"]
    # Most faces are named right, few named wrong: what a user of group
    # photos meets first.
    assert found["right"] >= 0.75 * found["faces"], found
    assert found["wrong"] <= 0.05 * found["faces"], found
