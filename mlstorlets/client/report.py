"""One self-contained HTML page of results, for people to look at.

``mlstorlets report SRC OUT.html`` shows the objects under ``SRC``:

* recognized photos (``faces recognize`` outputs): a thumbnail of each with
  the face boxed and named (``Face-Box``, ``Face-Name``,
  ``Face-Confidence``), and the count of photos per person; a video shows
  its per-name frame counts (``Face-Frames``);
* with ``--compare FILTERED``, frames before and after a filter (a
  rotoscope's ``frames-*`` and filtered prefixes): a strip of source and
  filtered frames side by side, paired by ``Frame-Index`` (or by name).

Only thumbnails leave the store's side, of at most ``max_objects``
objects, each read within a byte and a pixel bound; images are inlined as
``data:`` URIs, so the page needs nothing else to be shown or mailed.
"""

from __future__ import annotations

import base64
import collections
import html
import io

import numpy as np

from mlstorlets.client.errors import NotFound, UsageError
from mlstorlets.client.stores.registry import Stores
from mlstorlets.client.uri import parse
from mlstorlets.sandbox import protocol

THUMB_WIDTH = 320
MAX_OBJECTS = 100
# What one object may be for the report to decode it.
MAX_IMAGE_BYTES = 64 << 20
MAX_PIXELS = 64_000_000
# BGR: a colour no photo's box label is confused with.
BOX_COLOUR = (0, 255, 0)
NO_FACE = "none"

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.3em; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; width: {width}px; }}
figure img {{ width: 100%; display: block; }}
figcaption {{ font-size: 0.85em; overflow-wrap: anywhere; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }}
td, th {{ border: 1px solid #bbb; padding: 2px 8px; text-align: left; }}
.pair {{ display: flex; gap: 6px; margin-bottom: 6px; }}
</style></head>
<body><h1>{title}</h1>
{body}
</body></html>
"""


def write_report(
    src: str,
    out: str,
    compare: str | None = None,
    max_objects: int = MAX_OBJECTS,
    stores: Stores | None = None,
) -> dict:
    """Write the page for ``src`` (and ``compare``) to the local file
    ``out``; what it shows, as a dict (``objects``, ``people``...).

    Raises
    ------
    mlstorlets.client.errors.NotFound
        ``src`` or ``compare`` holds nothing to show.
    mlstorlets.client.errors.UsageError
        No frame of ``src`` pairs with one of ``compare``.
    mlstorlets.client.stores.base.StoreError
        ``src`` or ``compare`` cannot be listed.
    """
    stores = stores or Stores()
    if compare:
        body, shown = _frames(stores, src, compare, max_objects)
        title = "Frames of %s and %s" % (src, compare)
    else:
        body, shown = _faces(stores, src, max_objects)
        title = "Faces in %s" % src
    page = PAGE.format(title=html.escape(title), width=THUMB_WIDTH, body=body)
    with open(out, "w", encoding="utf-8") as f:
        f.write(page)
    return shown


def _listing(stores, uri, max_objects):
    # An empty page would look like a run that made nothing: say which.
    store, parsed = stores.open(uri)
    if not parsed.is_prefix:
        entry = store.head(parsed.key)
        if entry is None:
            raise NotFound(
                uri, "no such object (to name every object under a prefix, end it with /)"
            )
        return store, [entry]
    entries = sorted(store.list(parsed.key), key=lambda e: e.name)[:max_objects]
    if not entries:
        raise NotFound(uri, "no objects under this prefix")
    return store, entries


def _faces(stores, src, max_objects):
    store, entries = _listing(stores, src, max_objects)
    people = collections.Counter()
    figures = []
    for entry in entries:
        head = store.head(entry.name) or entry
        meta = head.metadata or {}
        name = meta.get("Face-Name", "")
        caption = [html.escape(entry.name)]
        if meta.get("Face-Frames"):
            frames = _frame_counts(meta["Face-Frames"])
            people.update({n: c for n, c in frames.items() if n != NO_FACE})
            caption.append(
                "video: " + ", ".join("%s %d" % (html.escape(n), c) for n, c in frames.items())
            )
            figures.append(_figure(None, caption))
            continue
        if name and name != NO_FACE:
            people[name] += 1
        label = name or "not recognized"
        if meta.get("Face-Confidence"):
            label += " (%s)" % meta["Face-Confidence"]
        caption.append("<b>%s</b>" % html.escape(label))
        image, problem = _thumbnail(store, entry, _box(meta.get("Face-Box")), name)
        if problem:
            caption.append(html.escape(problem))
        figures.append(_figure(image, caption))
    counts = "".join(
        "<tr><td>%s</td><td>%d</td></tr>" % (html.escape(n), c) for n, c in people.most_common()
    )
    body = (
        "<table><tr><th>person</th><th>photos or frames</th></tr>%s"
        '</table><p>%d objects</p><div class="grid">%s</div>'
        % (counts, len(entries), "".join(figures))
    )
    return body, {"objects": len(entries), "people": dict(people)}


def _frames(stores, src, compare, max_objects):
    store, before = _listing(stores, src, 10**9)
    other, after = _listing(stores, compare, 10**9)
    pairs = _pairs(store, before, other, after)
    if not pairs:
        raise UsageError(
            "%s and %s: no frame pairs (their frames share no Frame-Index)" % (src, compare)
        )
    if len(pairs) > max_objects:
        step = len(pairs) / max_objects
        pairs = [pairs[int(i * step)] for i in range(max_objects)]
    rows = []
    for a, b in pairs:
        left, _ = _thumbnail(store, a)
        right, _ = _thumbnail(other, b)
        rows.append(
            '<div class="pair">%s%s</div>'
            % (_figure(left, [html.escape(a.name)]), _figure(right, [html.escape(b.name)]))
        )
    return ("<p>%d frame pairs shown</p>%s" % (len(pairs), "".join(rows)), {"objects": len(pairs)})


def _pairs(store, before, other, after):
    """Source and filtered frames with the same ``Frame-Index``, else the
    same position in name order."""

    def indexed(s, entries):
        found = {}
        for entry in entries:
            meta = (s.head(entry.name) or entry).metadata or {}
            if "Frame-Index" not in meta:
                return None
            found[meta["Frame-Index"]] = entry
        return found

    left, right = indexed(store, before), indexed(other, after)
    if left is not None and right is not None:
        common = sorted(set(left) & set(right), key=lambda i: int(i))
        return [(left[i], right[i]) for i in common]
    return list(zip(before, after))


def _thumbnail(store, entry, box=None, name=""):
    """(data URI of a JPEG thumbnail, None) or (None, why not)."""
    import cv2
    from PIL import Image

    if entry.size > MAX_IMAGE_BYTES:
        return None, "not shown: over %d bytes" % MAX_IMAGE_BYTES
    data, _ = store.get(entry.name)
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except Exception:
        return None, "not an image"
    if width * height > MAX_PIXELS:
        return None, "not shown: over %d pixels" % MAX_PIXELS
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None, "not an image"
    if box:
        x, y, w, h = box
        thick = max(2, image.shape[1] // 200)
        cv2.rectangle(image, (x, y), (x + w, y + h), BOX_COLOUR, thick)
        if name:
            scale = max(0.5, image.shape[1] / 600)
            cv2.putText(
                image,
                name,
                (x, max(y - thick * 2, 12)),
                cv2.FONT_HERSHEY_SIMPLEX,
                scale,
                BOX_COLOUR,
                thick,
            )
    scale = THUMB_WIDTH / image.shape[1]
    image = cv2.resize(
        image, (THUMB_WIDTH, max(1, round(image.shape[0] * scale))), interpolation=cv2.INTER_AREA
    )
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return "data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode("ascii"), None


def _figure(image, caption):
    img = '<img src="%s" alt="">' % image if image else ""
    return "<figure>%s<figcaption>%s</figcaption></figure>" % (img, "<br>".join(caption))


def _box(text):
    try:
        box = [int(v) for v in (text or "").split(",")]
    except ValueError:
        return None
    return box if len(box) == 4 and box[2] > 0 and box[3] > 0 else None


def _frame_counts(text):
    try:
        counts = protocol.storlet_json(text)
    except ValueError:
        return {}
    return {str(k): int(v) for k, v in counts.items()} if isinstance(counts, dict) else {}


def check_destination(out: str) -> str:
    """``out`` must be a local file: the report is for a person here."""
    parsed = parse(out)
    if parsed.scheme != "file" or parsed.is_prefix:
        raise UsageError("%s: the report is written to a local file, e.g. report.html" % out)
    return "/" + parsed.key
