"""Recognise which format an extracted upload is in and hand it to the right parser.

Markers are checked from the most specific to the least, so a file that could fit two formats goes to the one
it most likely came from (a CreateML list is checked before COCO, XMLs beside images last).

Zips often wrap everything in one folder (`my_dataset/...`, `VOCdevkit/VOC2012/...`), so when the top folder
matches nothing, a lone subfolder is tried, a few levels deep. Paths in the result stay relative to the folder
the caller passed in, so they can be joined to it directly.
"""

from __future__ import annotations

import dataclasses
import functools
import posixpath
from collections.abc import Callable
from pathlib import Path

from dataset_pipeline.domain.model import (
    DEFAULT_VOC_PIXEL_ORIGIN,
    DatasetFormat,
    FormatDetectionError,
    ParsedDataset,
    VocPixelOrigin,
)
from dataset_pipeline.formats import coco, createml, kitti, voc, yolo
from dataset_pipeline.formats.common import is_image_path, list_files, normalize_split

#: One parser per format, each taking the dataset folder; VOC's also takes `pixel_origin` (see parse_dataset).
PARSERS: dict[DatasetFormat, Callable[[Path], ParsedDataset]] = {
    DatasetFormat.YOLO: yolo.parse,
    DatasetFormat.COCO: coco.parse,
    DatasetFormat.VOC: voc.parse,
    DatasetFormat.CREATEML: createml.parse,
    DatasetFormat.KITTI: kitti.parse,
}

_MAX_WRAPPING = 3
_LOOKED_FOR = (
    "YOLO (data.yaml, or obj.names / obj.data / classes.txt together with images and .txt labels), "
    'COCO (a .json file with "images", "annotations" and "categories"), '
    "Pascal VOC (Annotations/*.xml together with JPEGImages/, or each .xml beside its image, e.g. "
    "train/a.jpg + train/a.xml), "
    "CreateML (_annotations.createml.json or a *.createml.json list of images and annotations) and "
    "KITTI (image_2/ together with label_2/*.txt, optionally under training/ and testing/)"
)
_DARKNET_FILES = ("obj.names", "obj.data", "classes.txt")


def _top(path: str) -> str:
    return path.split("/", 1)[0].lower() if "/" in path else ""


def _detect_here(root: Path, files: list[str]) -> DatasetFormat | None:
    """The format the files at this level form, checked from the most specific marker to the least."""
    top_files = [f for f in files if "/" not in f]
    top_lower = {f.lower() for f in top_files}
    if top_lower & {"data.yaml", "data.yml"}:
        return DatasetFormat.YOLO
    if any(f.lower().endswith((".yaml", ".yml")) and yolo.has_names_key(root, f) for f in top_files):
        return DatasetFormat.YOLO
    voc_xml = any(_top(f) == "annotations" and f.lower().endswith(".xml") for f in files)
    voc_meta = any(_top(f) == "imagesets" or f.lower() == "labelmap.txt" for f in files)
    if (voc_xml or voc_meta) and any(_top(f) == "jpegimages" for f in files):
        return DatasetFormat.VOC
    if kitti.looks_like_kitti(files):
        return DatasetFormat.KITTI
    if createml.annotation_files(root, files):
        return DatasetFormat.CREATEML
    jsons = [f for f in files if f.lower().endswith(".json") and f.count("/") <= 2]
    if any(coco.looks_like_coco(root / f) for f in jsons):
        return DatasetFormat.COCO
    if top_lower & set(_DARKNET_FILES) or any(f.endswith(".names") for f in top_lower):
        labels = [
            f
            for f in files
            if f.lower().endswith(".txt")
            and "/" in f
            and normalize_split(posixpath.splitext(posixpath.basename(f))[0]) is None
        ]
        if labels and any(is_image_path(f) for f in files):
            return DatasetFormat.YOLO
    if voc_xml and voc_meta:
        return DatasetFormat.VOC
    if voc.looks_side_by_side(root, files):
        return DatasetFormat.VOC
    return None


def locate_dataset(root: Path, shown_as: str | None = None) -> tuple[Path, DatasetFormat]:
    """The folder holding the dataset (`root` or a lone subfolder of it) and its format; errors name the
    upload `shown_as` (default: the folder's name)."""
    name = shown_as or root.resolve().name
    if not root.is_dir():
        raise FormatDetectionError(f"{name}: is not a folder; nothing to read")
    files = list_files(root)
    prefix = ""
    for _ in range(_MAX_WRAPPING + 1):
        here = [f[len(prefix) :] for f in files if f.startswith(prefix)]
        found = _detect_here(root / prefix, here)
        if found is not None:
            return root / prefix, found
        tops = {f.split("/", 1)[0] for f in here}
        if len(tops) != 1 or all("/" not in f for f in here):
            break
        prefix += tops.pop() + "/"
    if not files:
        raise FormatDetectionError(f"{name}: the upload holds no files; looked for {_LOOKED_FOR}")
    where = f" (and inside {prefix.rstrip('/')}/)" if prefix else ""
    inner = [f[len(prefix) :] for f in files]
    listing = sorted({f.split("/", 1)[0] + ("/" if "/" in f else "") for f in inner})
    shown = ", ".join(listing[:10]) + (" ..." if len(listing) > 10 else "")
    raise FormatDetectionError(
        f"{name}: no known dataset layout found{where}; looked for {_LOOKED_FOR}. It holds: {shown}"
    )


def detect_format(root: Path, shown_as: str | None = None) -> DatasetFormat:
    """The format of the upload at `root`; raises `FormatDetectionError` saying what was looked for."""
    return locate_dataset(root, shown_as)[1]


def parse_dataset(
    root: Path, *, voc_pixel_origin: VocPixelOrigin = DEFAULT_VOC_PIXEL_ORIGIN
) -> ParsedDataset:
    """Detect and parse the upload at `root`, reading VOC boxes with `voc_pixel_origin` (the other formats
    say what their numbers mean). Every path in the result is relative to `root` itself, even when the
    dataset sits in a wrapping subfolder."""
    folder, fmt = locate_dataset(root)
    parser = PARSERS[fmt]
    if fmt is DatasetFormat.VOC:
        parser = functools.partial(parser, pixel_origin=voc_pixel_origin)
    parsed = parser(folder)
    prefix = folder.relative_to(root).as_posix()
    return parsed if prefix == "." else rebase(parsed, prefix + "/")


def rebase(parsed: ParsedDataset, prefix: str) -> ParsedDataset:
    """Prefix every path of `parsed` with `prefix` (a folder ending in `/`)."""
    for image in parsed.images:
        image.path = prefix + image.path
        if image.label_file is not None:
            image.label_file = prefix + image.label_file
        for box in image.boxes:
            box.source_file = prefix + box.source_file
    parsed.issues = [
        dataclasses.replace(
            issue, file=prefix + issue.file, image=None if issue.image is None else prefix + issue.image
        )
        for issue in parsed.issues
    ]
    return parsed
