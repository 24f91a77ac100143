"""The main job on a labelled data set: extract, train, recognize.

``mlstorlets demo --data DIR`` runs it against the embedded cluster:

1. upload the photos and videos with their labels (``X-Object-Meta-Name``),
   once: the only time data crosses from the client;
2. ``extract_face`` over every training photo, in the cluster;
3. ``train`` a recognizer from the crops, in the cluster;
4. ``recognize_face`` over the test photos and the videos, in the cluster;

then prints the accuracy and the bytes that went through the client for
steps 2 to 4.
"""

import hashlib
import json
import os
import time

from mlstorlets.client import datasets
from mlstorlets.client.batch import gateway
from mlstorlets.client.deploy import deploy
from mlstorlets.client.faces import pipeline

PHOTOS, FACES, MODELS, RESULTS = ("demo-photos", "demo-faces", "demo-models", "demo-results")
MODEL = "swift://%s/faces.npz" % MODELS


def upload(conn, items, log):
    """Put the data set in the cluster; skip what is there already."""
    swift = gateway(conn)
    swift.ensure_container(PHOTOS)
    have = {e["name"]: e["hash"] for e in swift.listing(PHOTOS)}
    sent = uploaded = 0
    for item in items:
        with open(item.path, "rb") as f:
            body = f.read()
        if have.get(item.name) == hashlib.md5(body).hexdigest():
            continue
        swift.call(
            "%s/%s" % (PHOTOS, item.name),
            "put_object",
            PHOTOS,
            item.name,
            body,
            headers={"X-Object-Meta-Name": item.label},
        )
        sent += len(body)
        uploaded += 1
    if uploaded:
        log(
            "uploaded %d of the data set's %d objects, %d bytes sent (once; "
            "steps below move no data)" % (uploaded, len(items), sent)
        )
    else:
        log("the data set is in the cluster already: %d objects, 0 bytes sent" % len(items))
    return sent


def run(conn, data_dir, threshold=None, log=print):
    """Run the whole pipeline; return a dict of what it measured."""
    started = time.monotonic()
    deploy(conn, log=log)
    items = datasets.items(data_dir)
    upload(conn, items, log)
    for container in (FACES, MODELS, RESULTS):
        gateway(conn).ensure_container(container)

    extracted = pipeline.extract(conn, "swift://%s/train/" % PHOTOS, "swift://%s/train/" % FACES)
    log(extracted.format())

    report = pipeline.train(conn, "swift://%s/train/" % FACES, MODEL)
    log(
        "trained %s on %d faces of %s (%d shard(s)) in %.1f s; open-set "
        "threshold %s"
        % (
            report.model,
            report.faces,
            ", ".join(report.classes),
            report.shards,
            report.seconds,
            report.metadata.get("Threshold"),
        )
    )

    photos = pipeline.recognize(
        conn, MODEL, "swift://%s/test/" % PHOTOS, "swift://%s/test/" % RESULTS, threshold=threshold
    )
    log(photos.format())
    tests = [i for i in items if i.split == "test"]
    correct = 0
    for item in tests:
        tags = _tags(conn, item.name)
        named = tags.get("name")
        correct += named == item.label
        log(
            "  %-28s %-8s -> %s (%s)"
            % (item.name, item.label, named or "no face", tags.get("confidence", "-"))
        )
    log("photos: %d of %d test photos named correctly" % (correct, len(tests)))
    result = {
        "photos_correct": correct,
        "photos": len(tests),
        "extract": _counts(extracted),
        "recognize": _counts(photos),
        "train_faces": report.faces,
    }
    client_bytes = extracted.client_bytes + photos.client_bytes

    videos = [i for i in items if i.split == "video"]
    if videos:
        tagged = pipeline.recognize(
            conn,
            MODEL,
            "swift://%s/video/" % PHOTOS,
            "swift://%s/video/" % RESULTS,
            threshold=threshold,
            kind="video",
        )
        log(tagged.format())
        client_bytes += tagged.client_bytes
        for item in videos:
            tags = _tags(conn, os.path.splitext(item.name)[0] + ".avi")
            frames = json.loads(tags.get("frames", "{}"))
            with_face = sum(n for name, n in frames.items() if name != "none")
            right = frames.get(item.label, 0)
            log(
                "video %s: %d of %d frames with a face tagged %s (%.0f%%); "
                "most frequent name: %s"
                % (
                    item.name,
                    right,
                    with_face,
                    item.label,
                    100.0 * right / max(with_face, 1),
                    tags.get("name"),
                )
            )
            result.setdefault("videos", {})[item.name] = frames
    result["client_bytes"] = client_bytes
    result["seconds"] = time.monotonic() - started
    log(
        "bytes through the client for extract, train and recognize: %d "
        "(the data stayed in the cluster)" % client_bytes
    )
    return result


def _tags(conn, name):
    """The ``Face-*`` metadata of a result, keys without the prefix."""
    prefix = "x-object-meta-face-"
    return {
        k[len(prefix) :]: v
        for k, v in gateway(conn)
        .call("%s/%s" % (RESULTS, name), "head_object", RESULTS, name)
        .items()
        if k.startswith(prefix)
    }


def _counts(summary):
    return {
        "done": len(summary.done),
        "skipped": len(summary.skipped),
        "failed": len(summary.failed),
    }
