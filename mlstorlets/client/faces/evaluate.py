"""Evaluate the face recognizer on a labelled data set, on this machine.

The very functions the storlets run (:mod:`mlstorlets.sandbox.faces`) embed
every photo once; then, without tuning anything to the test photos:

* **cross-validation**: stratified k-fold over ``train/``, each fold
  recognised by a model (SVM and calibrated threshold) trained on the others;
* **leave one person out**: for each person and each fold, a model trained
  on the *other* people's photos outside the fold; that person's photos
  (``train/`` and ``test/``) must come back ``unknown``, the other people's
  photos of the fold must still be named right;
* **test photos**: a model trained on all of ``train/`` names ``test/``;
* **group photos**: every pair of test photos of two people, side by side
  in one image: the same model names every face it finds
  (:func:`mlstorlets.sandbox.faces.people.name_faces`); a face is named
  right, named wrong (another person's name), or missed (not found, or
  ``unknown``);
* **videos**: the same model names every face of every frame of each
  ``video/<label>_*`` file (frames without a face are not counted).

Run it with::

    python -m mlstorlets.client.faces.evaluate /work/shared/data/faces [--json out.json]
"""

import argparse
import json
import sys
import time

import numpy as np
from sklearn.model_selection import StratifiedKFold

from mlstorlets.client import datasets
from mlstorlets.sandbox.faces.image import decode_image
from mlstorlets.sandbox.faces.model import UNKNOWN, recognize, train
from mlstorlets.sandbox.faces.people import name_faces
from mlstorlets.sandbox.faces.tasks import photo_face
from mlstorlets.sandbox.faces.video import recognize_video

__all__ = [
    "embed_items",
    "cross_validate",
    "leave_one_person_out",
    "group_photos",
    "evaluate",
    "main",
]


def embed_items(items):
    """Embeddings of the largest face of each photo; photos without one are listed."""
    X, y, names, missed = [], [], [], []
    for item in items:
        with open(item.path, "rb") as f:
            _, face, embedding = photo_face(f.read(), item.name)
        if face is None:
            missed.append(item.name)
            continue
        X.append(embedding)
        y.append(item.label)
        names.append(item.name)
    return np.asarray(X, dtype=np.float32).reshape(-1, 128), np.asarray(y), names, missed


def group_photos(model, test_items):
    """Faces named right, wrong and missed in every two-person group made
    of the test photos (see the module)."""
    photos = []
    for item in test_items:
        with open(item.path, "rb") as f:
            photos.append((item, decode_image(f.read(), item.name, color=True)))
    right = wrong = missed = groups = 0
    for i, (left, left_rgb) in enumerate(photos):
        for right_item, right_rgb in photos[i + 1 :]:
            if left.label == right_item.label:
                continue
            image, edges = datasets.group_photo(left_rgb, right_rgb)
            groups += 1
            found = {left.label: None, right_item.label: None}
            for face in name_faces(model, image):
                centre = face.box[0] + face.box[2] / 2
                person = left.label if centre < edges[1] else right_item.label
                if found[person] is None or face.name == person:
                    found[person] = face.name
            for person, name in found.items():
                if name == person:
                    right += 1
                elif name in (None, UNKNOWN):
                    missed += 1
                else:
                    wrong += 1
    return {"groups": groups, "faces": 2 * groups, "right": right, "wrong": wrong, "missed": missed}


def _name_all(model, X):
    return [recognize(model, x)[0] for x in X]


def cross_validate(X, y, folds=5, seed=0):
    """Fraction of faces named right, each by a model that did not see it."""
    right, thresholds = 0, []
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for fit, held in split.split(X, y):
        model = train(X[fit], y[fit])
        thresholds.append(model.threshold)
        right += sum(n == t for n, t in zip(_name_all(model, X[held]), y[held]))
    return {
        "right": int(right),
        "faces": len(y),
        "accuracy": right / len(y),
        "thresholds": [round(t, 4) for t in thresholds],
    }


def leave_one_person_out(X, y, X_out, y_out, folds=5, seed=0):
    """Per person left out: their faces ``unknown``, the others still right.

    ``X_out``/``y_out`` are extra faces (the test photos) counted only when
    their person is the one left out.
    """
    report = {}
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for person in sorted(set(y)):
        unknown = others_right = others = 0
        absent = np.concatenate([X[y == person], X_out[y_out == person]])
        for fit, held in split.split(X, y):
            keep = fit[y[fit] != person]
            model = train(X[keep], y[keep])
            unknown += sum(n == UNKNOWN for n in _name_all(model, absent))
            held = held[y[held] != person]
            others += len(held)
            others_right += sum(n == t for n, t in zip(_name_all(model, X[held]), y[held]))
        absent_total = len(absent) * folds
        report[person] = {
            "unknown": unknown / absent_total,
            "others_right": others_right / others,
            "faces_left_out": len(absent),
        }
    return report


def evaluate(root, folds=5, seed=0, videos=True):
    """Every figure of the module's description, as a dict."""
    started = time.monotonic()
    items = datasets.items(root)
    train_items = [i for i in items if i.split == "train"]
    test_items = [i for i in items if i.split == "test"]
    X, y, _, missed_train = embed_items(train_items)
    X_test, y_test, test_names, missed_test = embed_items(test_items)
    result = {
        "data": root,
        "train_faces": len(y),
        "missed": missed_train + missed_test,
        "cross_validation": cross_validate(X, y, folds, seed),
        "leave_one_person_out": leave_one_person_out(X, y, X_test, y_test, folds, seed),
    }
    model = train(X, y)
    result["threshold"] = model.threshold
    result["calibration"] = model.calibration
    named = [recognize(model, x) for x in X_test]
    result["test_photos"] = {
        "right": sum(n[0] == t for n, t in zip(named, y_test)),
        "photos": len(test_items),
        "names": {k: [n[0], round(n[1], 3)] for k, n in zip(test_names, named)},
    }
    result["group_photos"] = group_photos(model, test_items)
    result["videos"] = {}
    for item in (i for i in items if i.split == "video") if videos else ():
        summary = recognize_video(model, item.path, None, item.name)
        faces = sum(c for n, c in summary["frames"].items() if n != "none")
        result["videos"][item.name] = {
            "label": item.label,
            "right": summary["frames"].get(item.label, 0),
            "face_frames": faces,
            "fraction": summary["frames"].get(item.label, 0) / max(1, faces),
            "frames": summary["frames"],
        }
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def _print(result):
    cv = result["cross_validation"]
    print(
        f"data: {result['data']}: {result['train_faces']} training faces; "
        f"photos without a face found: {result['missed'] or 'none'}"
    )
    print(
        f"threshold calibrated on all of train/: {result['threshold']:.3f} "
        f"{json.dumps(result['calibration'])}"
    )
    print(
        f"cross-validation: {cv['right']}/{cv['faces']} right ({cv['accuracy']:.1%}); "
        f"fold thresholds {cv['thresholds']}"
    )
    print("leave one person out (that person's photos unknown; the others right):")
    for person, r in result["leave_one_person_out"].items():
        print(
            f"  {person:12s} unknown {r['unknown']:.1%} of {r['faces_left_out']} photos; "
            f"others right {r['others_right']:.1%}"
        )
    t = result["test_photos"]
    print(f"test photos: {t['right']}/{t['photos']} named right")
    for name, (person, confidence) in t["names"].items():
        print(f"  {name:28s} -> {person} ({confidence})")
    g = result["group_photos"]
    print(
        f"group photos (two test photos side by side): {g['right']}/{g['faces']} faces "
        f"named right, {g['wrong']} named wrong, {g['missed']} missed ({g['groups']} groups)"
    )
    for name, v in result["videos"].items():
        print(
            f"video {name}: {v['right']}/{v['face_frames']} face frames named {v['label']} "
            f"({v['fraction']:.1%}); {json.dumps(v['frames'])}"
        )
    print(f"{result['seconds']} s")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", help="a data set folder (train/, test/, video/)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-video", action="store_true")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    result = evaluate(args.data, args.folds, args.seed, videos=not args.no_video)
    _print(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
