"""Read a dataset folder with Datumaro and print what it found as JSON, for `readers.read_with_datumaro`.

Run by the readers venv's interpreter (`.venv-readers/bin/python -I datumaro_reader.py <dir> <format>`), never
imported by the tests: Datumaro cannot live in `.venv`, and this script must not see `dataset_pipeline`, so the
reading is independent of our own parsers. `-I` keeps this folder and PYTHONPATH off `sys.path`.

`<format>` is `yolo`, `coco` or `voc` (our export names) or any Datumaro importer name. Output on stdout:
`{"format": <importer used>, "items": [{"subset", "id", "media", "width", "height", "annotations":
[{"label", "x", "y", "w", "h", "xyxy"}]}]}`, boxes in pixels as Datumaro holds them: `xyxy` is its `points`
(float32, rounded to 2 decimals on construction), `x, y, w, h` what its Bbox derives from them. `media` is
relative to the dataset folder, or the bare file name when Datumaro points outside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any

#: Our export names -> the Datumaro 1.13 importer for that layout. `yolo` tries Darknet (obj.data, obj.names)
#: first and falls back to Ultralytics (data.yaml); `voc_detection` reads boxes only, no masks or actions.
IMPORTERS = {"yolo": "yolo", "coco": "coco_instances", "voc": "voc_detection"}


def read(root: str, importer: str) -> list[dict[str, Any]]:
    """Import `root` with Datumaro's `importer` and flatten its items and bounding boxes."""
    from datumaro.components.annotation import AnnotationType
    from datumaro.components.dataset import Dataset

    dataset = Dataset.import_from(root, importer)
    labels = dataset.categories().get(AnnotationType.label)
    items = []
    for item in dataset:
        media = item.media
        path = getattr(media, "path", None)
        size = None
        if media is not None:
            with contextlib.suppress(Exception):  # an image Datumaro cannot open has no size, not no item
                size = media.size  # (height, width), read from the file when the format does not say
        boxes = []
        for ann in item.annotations:
            if ann.type != AnnotationType.bbox:
                continue
            name = labels[ann.label].name if labels is not None and ann.label is not None else None
            boxes.append(
                {"label": name, "x": ann.x, "y": ann.y, "w": ann.w, "h": ann.h, "xyxy": list(ann.points)}
            )
        items.append(
            {
                "subset": item.subset,
                "id": item.id,
                "media": _relative(path, root),
                "width": size[1] if size else None,
                "height": size[0] if size else None,
                "annotations": boxes,
            }
        )
    return items


def _relative(path: str | None, root: str) -> str | None:
    if not path:
        return None
    relative = os.path.relpath(os.path.abspath(path), root)
    return os.path.basename(path) if relative.startswith(os.pardir) else relative.replace(os.sep, "/")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: datumaro_reader.py <dataset dir> <yolo|coco|voc|datumaro importer>", file=sys.stderr)
        return 2
    root = os.path.abspath(argv[0])
    importer = IMPORTERS.get(argv[1], argv[1])
    out = sys.stdout
    # Anything Datumaro prints goes to stderr, so stdout carries the JSON alone.
    with contextlib.redirect_stdout(sys.stderr):
        items = read(root, importer)
    json.dump({"format": importer, "items": items}, out)
    out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
