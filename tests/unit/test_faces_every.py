"""Every face of a photo cropped, on the client over files: the names of
the crops, the rerun that skips them, and the training set that keeps the
photo's subject only."""

import cv2
from support import group_photo

from mlstorlets.client.faces import pipeline
from mlstorlets.client.stores import Stores


def _stores():
    return Stores(environ={})


def _photos(faces_data, folder):
    folder.mkdir()
    for name in ("obama1", "obama2", "obama3", "merkel1", "merkel2", "merkel3"):
        (folder / (name + ".jpg")).write_bytes(
            (faces_data / "train" / (name + ".jpeg")).read_bytes()
        )
    big = cv2.imread(str(faces_data / "test" / "obama_test1.jpeg"))
    small = cv2.resize(
        cv2.imread(str(faces_data / "test" / "merkel_test2.jpeg")), None, fx=0.7, fy=0.7
    )
    cv2.imwrite(str(folder / "obamagroup.jpg"), group_photo(small, big))


def test_every_face_is_cropped_and_a_rerun_skips_the_photos(faces_data, tmp_path):
    _photos(faces_data, tmp_path / "photos")
    src, dest = "file://%s/photos/" % tmp_path, "file://%s/crops/" % tmp_path
    summary = pipeline.extract(_stores(), src, dest, faces="all", progress=False)
    assert summary.ok and len(summary.done) == 7, summary.format()
    crops = sorted(p.name for p in (tmp_path / "crops").iterdir() if p.suffix == ".png")
    assert "obamagroup.png" in crops and "obamagroup-face1.png" in crops
    assert len(crops) == 8
    store, uri = _stores().open(dest + "obamagroup-face1.png")
    meta = {k.lower(): v for k, v in store.head(uri.key).metadata.items()}
    assert (meta["face-index"], meta["face-count"]) == ("1", "2")

    again = pipeline.extract(_stores(), src, dest, faces="all", progress=False)
    assert not again.done and len(again.skipped) == 7

    # A changed photo is cropped again, the others not.
    (tmp_path / "photos" / "obama1.jpg").write_bytes(
        (faces_data / "train" / "obama4.jpeg").read_bytes()
    )
    third = pipeline.extract(_stores(), src, dest, faces="all", progress=False)
    assert [u.rsplit("/", 1)[1] for u in third.done] == ["obama1.jpg"]


def test_training_keeps_each_photos_subject_and_reports_the_rest(faces_data, tmp_path):
    _photos(faces_data, tmp_path / "photos")
    src, dest = "file://%s/photos/" % tmp_path, "file://%s/crops/" % tmp_path
    assert pipeline.extract(_stores(), src, dest, faces="all", progress=False).ok
    report = pipeline.train(
        _stores(),
        dest,
        "file://%s/model.npz" % tmp_path,
        labels="name:^([a-z]+?)(group|[0-9])",
    )
    assert report.faces == 7 and report.classes == ["merkel", "obama"]
    assert [u.rsplit("/", 1)[1] for u in report.skipped] == ["obamagroup-face1.png"]
