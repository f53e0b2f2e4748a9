"""COCO detection datasets: one instances JSON per split (`annotations/instances_<split>.json`, Roboflow's
`<split>/_annotations.coco.json`, or any JSON with images/annotations/categories) plus the image files.

Boxes are `[x, y, w, h]` in pixels and come out as `BoxFormat.XYXY_PIXELS`; category ids become 0-based class
indices in id order. What an export needs to give the upload back is kept: each category's id and
supercategory (`ParsedDataset.class_info`), each image's id (`SourceImage.source_id`) and each annotation's
valid `area` and `segmentation` (box attributes `area` and `SEGMENTATION`). Several annotation files (one per split) are matched by
category name; when their categories differ that is a warning, and a class keeps the first file's id.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from dataset_pipeline.domain.model import (
    SEGMENTATION,
    AttributeValue,
    BoxFormat,
    CanonicalDataset,
    CanonicalImage,
    ClassInfo,
    DatasetError,
    DatasetFormat,
    Issue,
    LabelParseError,
    LabelState,
    ParsedDataset,
    RenderedDataset,
    Severity,
    SourceBox,
    SourceImage,
)
from dataset_pipeline.formats.common import (
    CodedParseError,
    check_export_names,
    decode_text,
    error_issue,
    guess_split,
    is_image_path,
    join_within,
    list_files,
    path_suffixes,
    read_file,
    split_from_path,
    split_order,
    with_image,
)

_REQUIRED_KEYS = ("images", "annotations", "categories")
_SCAN_CHUNK = 1 << 20
#: Attributes the writer puts in their own annotation fields rather than under "attributes".
_WRITTEN_ATTRIBUTES = frozenset({"iscrowd", "area", SEGMENTATION})

#: The local `report` / `charge` callbacks: (code, message, severity=ERROR) -> None.
_Report = Callable[..., None]


class _NonFinite:
    """Stands in for the `NaN`/`Infinity` literals Python's json accepts but JSON does not."""

    def __init__(self, literal: str) -> None:
        self.literal = literal


@dataclass(slots=True)
class CocoImageEntry:
    """One `images` entry with the boxes of its annotations; `issues` are the problems charged to it."""

    id: str
    file_name: str
    width: int | None
    height: int | None
    annotated: bool = False
    boxes: list[SourceBox] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)


@dataclass(slots=True)
class CocoInstances:
    """What one instances JSON holds: classes in category-id order, images, and file-level problems."""

    class_names: list[str]
    category_ids: list[int]
    images: list[CocoImageEntry]
    issues: list[Issue]
    #: Each class's category id and supercategory, aligned with class_names.
    class_info: list[ClassInfo] = field(default_factory=list)


def _is_id(value: object) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)


def json_number(value: object) -> float | None:
    """A JSON number as a finite float, else None (strings, booleans, NaN, Infinity are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer literal with hundreds of digits
        return None
    return number if math.isfinite(number) else None


def describe_json(value: object) -> str:
    if isinstance(value, _NonFinite):
        return value.literal
    text = (
        json.dumps(value)
        if isinstance(value, str | int | float | bool) or value is None
        else type(value).__name__
    )
    return text if len(text) <= 40 else text[:40] + "..."


def load_json(data: bytes, file: str) -> object:
    """Strict UTF-8 JSON with `NaN`/`Infinity` kept as markers so they can be reported, not silently used."""
    text = decode_text(data, file)
    try:
        return json.loads(text, parse_constant=_NonFinite)
    except json.JSONDecodeError as error:
        raise CodedParseError(
            "coco.json_invalid", file, f"is not valid JSON ({error.msg}, column {error.colno})", error.lineno
        ) from None
    except (ValueError, RecursionError) as error:
        raise CodedParseError("coco.json_invalid", file, f"is not usable JSON ({error})") from None


def parse_instances(data: bytes, file: str) -> CocoInstances:
    """Parse one COCO instances JSON; raises `LabelParseError` only when it is not such a JSON at all."""
    document = load_json(data, file)
    if not isinstance(document, dict):
        raise CodedParseError(
            "coco.structure", file, "must be a JSON object with images/annotations/categories"
        )
    for key in _REQUIRED_KEYS:
        if not isinstance(document.get(key), list):
            raise CodedParseError(
                "coco.structure", file, f"needs a `{key}` list; is this a COCO instances file?"
            )
    issues: list[Issue] = []

    def report(code: str, message: str, severity: Severity = Severity.ERROR, ann: str | None = None) -> None:
        issues.append(Issue(severity, code, file, message, annotation_id=ann))

    class_names, category_ids, class_info = _read_categories(document["categories"], report)
    category_index = {cid: index for index, cid in enumerate(category_ids)}
    images, by_id = _read_images(document["images"], file, report)

    seen_annotations: set[object] = set()
    for position, ann in enumerate(document["annotations"]):
        if not isinstance(ann, dict):
            report("coco.annotation_invalid", f"annotations[{position}] is not an object")
            continue
        ann_id = ann.get("id")
        label = str(ann_id) if _is_id(ann_id) else f"annotations[{position}]"
        entry = by_id.get(ann.get("image_id")) if _is_id(ann.get("image_id")) else None
        if entry is None:
            shown = describe_json(ann.get("image_id"))
            report(
                "coco.dangling_image_id",
                f"image_id {shown} is not in `images`; add it or drop the box",
                ann=label,
            )
            continue
        entry.annotated = True

        charge = partial(_charge, entry, file, label)
        if not _is_id(ann_id):
            charge("coco.annotation_id_invalid", f"annotation id {describe_json(ann_id)} must be an integer")
        elif ann_id in seen_annotations:
            charge("coco.duplicate_annotation_id", f"annotation id {ann_id} is used more than once")
        else:
            seen_annotations.add(ann_id)
        category = ann.get("category_id")
        class_index = category_index.get(category) if _is_id(category) else None
        if class_index is None:
            charge(
                "coco.dangling_category_id", f"category_id {describe_json(category)} is not in `categories`"
            )
            continue
        coords = _read_bbox(ann.get("bbox"), charge)
        if coords is None:
            continue
        attributes = _read_attributes(ann, charge)
        entry.boxes.append(
            SourceBox(
                class_index, coords, BoxFormat.XYXY_PIXELS, file, annotation_id=label, attributes=attributes
            )
        )
    return CocoInstances(class_names, category_ids, images, issues, class_info)


def _charge(
    entry: CocoImageEntry, file: str, label: str, code: str, message: str, severity: Severity = Severity.ERROR
) -> None:
    entry.issues.append(Issue(severity, code, file, message, annotation_id=label))


def _read_categories(raw: list[object], report: _Report) -> tuple[list[str], list[int], list[ClassInfo]]:
    by_id: dict[int, str] = {}
    supercategories: dict[int, str] = {}
    for position, category in enumerate(raw):
        cid = category.get("id") if isinstance(category, dict) else None
        if not isinstance(category, dict) or not isinstance(cid, int) or isinstance(cid, bool):
            report("coco.category_invalid", f"categories[{position}] needs an integer `id`")
            continue
        if cid in by_id:
            report(
                "coco.duplicate_category_id", f"category id {cid} is used more than once; the first is kept"
            )
            continue
        name = category.get("name")
        if not isinstance(name, str) or not name.strip():
            name = f"category_{cid}"
            report(
                "coco.category_name_missing", f"category {cid} has no name; named {name}", Severity.WARNING
            )
        by_id[cid] = name.strip()
        supercategory = category.get("supercategory")
        if supercategory is not None and not isinstance(supercategory, str):
            report(
                "coco.supercategory_invalid",
                f"category {cid} has supercategory {describe_json(supercategory)}, not a string; it is left empty",
                Severity.WARNING,
            )
        supercategories[cid] = supercategory.strip() if isinstance(supercategory, str) else ""
    ids = sorted(by_id)
    if 0 in by_id:
        report(
            "coco.category_id_zero",
            "category id 0 is taken for background by many COCO tools; number categories from 1",
            Severity.WARNING,
        )
    if ids and ids != list(range(ids[0], ids[0] + len(ids))):
        report(
            "coco.category_id_gap",
            f"category ids are not contiguous ({ids[:10]}); class indices follow the id order",
            Severity.WARNING,
        )
    names = [by_id[cid] for cid in ids]
    duplicated = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicated:
        report(
            "coco.duplicate_category_name",
            f"category names {duplicated[:5]} are used by several ids; they are merged into one class",
            Severity.WARNING,
        )
    return names, ids, [ClassInfo(cid, supercategories[cid]) for cid in ids]


def _read_images(
    raw: list[object], file: str, report: _Report
) -> tuple[list[CocoImageEntry], dict[object, CocoImageEntry]]:
    images: list[CocoImageEntry] = []
    by_id: dict[object, CocoImageEntry] = {}
    by_name: dict[str, CocoImageEntry] = {}
    for position, image in enumerate(raw):
        image_id = image.get("id") if isinstance(image, dict) else None
        name = image.get("file_name") if isinstance(image, dict) else None
        if (
            not isinstance(image, dict)
            or not _is_id(image_id)
            or not isinstance(name, str)
            or not name.strip()
        ):
            report("coco.image_invalid", f"images[{position}] needs an integer `id` and a `file_name`")
            continue
        if image_id in by_id:
            first = by_id[image_id]
            first.issues.append(
                Issue(
                    Severity.ERROR,
                    "coco.duplicate_image_id",
                    file,
                    f"image id {image_id} is used by {first.file_name} and {name[:100]}; ids must be unique",
                )
            )
            continue
        if name in by_name:
            first = by_name[name]
            first.issues.append(
                Issue(
                    Severity.ERROR,
                    "coco.duplicate_file_name",
                    file,
                    f"{name[:100]} is listed twice (ids {first.id} and {image_id}); list each image once",
                )
            )
            by_id[image_id] = first
            continue
        entry = CocoImageEntry(str(image_id), name, None, None)
        entry.width, entry.height = _read_size(image, entry, file)
        images.append(entry)
        by_id[image_id] = entry
        by_name[name] = entry
    return images, by_id


def _read_size(image: dict[str, object], entry: CocoImageEntry, file: str) -> tuple[int | None, int | None]:
    width, height = image.get("width"), image.get("height")
    if width is None and height is None:
        entry.issues.append(
            Issue(Severity.WARNING, "coco.image_size_missing", file, f"image {entry.id} has no width/height")
        )
        return None, None
    sizes = [json_number(width), json_number(height)]
    if any(v is None or v <= 0 or not v.is_integer() for v in sizes):
        entry.issues.append(
            Issue(
                Severity.ERROR,
                "coco.image_size_invalid",
                file,
                f"image {entry.id} has width {describe_json(width)} and height {describe_json(height)}; "
                "both must be whole numbers above 0",
            )
        )
        return None, None
    return int(sizes[0] or 0), int(sizes[1] or 0)


def _read_bbox(bbox: object, charge: _Report) -> tuple[float, float, float, float] | None:
    if not isinstance(bbox, list):
        charge("coco.bbox_not_list", f"bbox {describe_json(bbox)} must be a list [x, y, width, height]")
        return None
    if len(bbox) != 4:
        charge("coco.bbox_length", f"bbox has {len(bbox)} numbers, expected 4: [x, y, width, height]")
        return None
    if any(isinstance(v, _NonFinite) or (isinstance(v, float) and not math.isfinite(v)) for v in bbox):
        charge("coco.not_finite", "bbox holds NaN or Infinity; write finite numbers")
        return None
    values = [json_number(v) for v in bbox]
    if any(v is None for v in values):
        shown = ", ".join(describe_json(v) for v in bbox)
        charge("coco.bbox_not_numeric", f"bbox [{shown}] must hold four numbers")
        return None
    x, y, w, h = (v or 0.0 for v in values)
    if w <= 0 or h <= 0:
        charge("coco.bbox_non_positive", f"bbox width {w} and height {h} must be above 0")
        return None
    return (x, y, x + w, y + h)


def _read_attributes(ann: dict[str, object], charge: _Report) -> dict[str, AttributeValue]:
    """`iscrowd` (always, 0/1), a valid `area` and `segmentation` (kept so an export can give them back: a
    polygon's or crowd's area is not its box's) and the scalar CVAT/Datumaro-style `attributes`."""
    attributes: dict[str, AttributeValue] = {}
    extra = ann.get("attributes")
    if isinstance(extra, dict):
        for key, value in extra.items():
            if str(key) in (SEGMENTATION, "area"):  # those keys hold the annotation's own fields only
                continue
            if isinstance(value, str | bool | int) or (isinstance(value, float) and math.isfinite(value)):
                attributes[str(key)] = value
    crowd = ann.get("iscrowd", 0)
    if isinstance(crowd, bool):
        crowd = int(crowd)
    if not isinstance(crowd, int) or crowd not in (0, 1):
        charge(
            "coco.iscrowd_invalid",
            f"iscrowd {describe_json(crowd)} must be 0 or 1; 0 is used",
            Severity.WARNING,
        )
        crowd = 0
    attributes["iscrowd"] = crowd
    area = ann.get("area")
    if area is not None:
        value = json_number(area)
        if value is not None and value >= 0:
            attributes["area"] = value
        else:
            charge(
                "coco.area_invalid",
                f"area {describe_json(area)} must be a number of at least 0; the box's own area is used",
                Severity.WARNING,
            )
    segmentation = ann.get(SEGMENTATION)
    if segmentation is not None and segmentation != []:
        problem = _segmentation_problem(segmentation)
        if problem is None:
            attributes[SEGMENTATION] = segmentation
        else:
            charge(
                "coco.segmentation_invalid",
                f"segmentation {problem}; it is dropped (the box is kept)",
                Severity.WARNING,
            )
    return attributes


def _segmentation_problem(value: object) -> str | None:
    """What is wrong with a COCO `segmentation`, or None when it is polygons (lists of at least three x, y
    points) or an RLE object (`counts` as a string or list of run lengths, `size` as [height, width])."""
    if isinstance(value, list):
        for number, polygon in enumerate(value, start=1):
            if not isinstance(polygon, list) or any(json_number(v) is None for v in polygon):
                return f"polygon {number} must be a list of finite numbers"
            if len(polygon) < 6 or len(polygon) % 2:
                return (
                    f"polygon {number} has {len(polygon)} numbers; it needs x, y pairs for at least 3 points"
                )
        return None
    if isinstance(value, dict):
        counts, size = value.get("counts"), value.get("size")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_count(v) for v in size)):
            return f"RLE size {describe_json(size)} must be [height, width]"
        if not (isinstance(counts, str) or (isinstance(counts, list) and all(_is_count(v) for v in counts))):
            return "RLE counts must be a string or a list of run lengths"
        return None
    return f"{describe_json(value)} is neither a list of polygons nor an RLE object"


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def looks_like_coco(path: Path) -> bool:
    """Cheap test for an instances JSON: the three top-level key names occur in the text. Reads in chunks and
    stops early, so a large file is not parsed twice just to detect the format."""
    wanted = {f'"{key}"'.encode() for key in _REQUIRED_KEYS}
    tail = b""
    try:
        with path.open("rb") as handle:
            start = handle.read(_SCAN_CHUNK)
            if not start.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"{"):
                return False  # a list (CreateML) or anything else is not an instances file
            handle.seek(0)
            while wanted:
                chunk = handle.read(_SCAN_CHUNK)
                if not chunk:
                    break
                window = tail + chunk
                wanted = {key for key in wanted if key not in window}
                tail = window[-16:]
    except OSError:
        return False
    return not wanted


def split_token(json_path: str) -> tuple[str | None, str | None]:
    """The split a JSON is for and the raw token naming it (`instances_train2017.json` -> train,
    `train2017`); Roboflow's `train/_annotations.coco.json` takes it from its folder."""
    stem = re.sub(r"(?i)(\.coco)?\.json$", "", posixpath.basename(json_path))
    token = re.sub(r"(?i)^(instances|_?annotations)", "", stem).strip("_-.")
    split = guess_split(token) if token else None
    if split is not None:
        return split, token
    parent = posixpath.basename(posixpath.dirname(json_path))
    if guess_split(parent) is not None:
        return guess_split(parent), parent
    return split_from_path(json_path), None


class _ImageIndex:
    """Finds the image file an `images[].file_name` means, trying the layouts COCO exports use."""

    def __init__(self, files: list[str]) -> None:
        self.files = {f for f in files if is_image_path(f)}
        self.by_basename: dict[str, list[str]] = {}
        for path in sorted(self.files):
            self.by_basename.setdefault(posixpath.basename(path), []).append(path)

    def find(self, file_name: str, json_path: str, token: str | None) -> tuple[str | None, str]:
        json_dir = posixpath.dirname(json_path)
        parent = (
            posixpath.dirname(json_dir) if posixpath.basename(json_dir).lower() == "annotations" else None
        )
        bases = [json_dir]
        for top in ([parent] if parent is not None else []) + [""]:
            if token:
                bases += [posixpath.join(top, "images", token), posixpath.join(top, token)]
            bases += [posixpath.join(top, "images"), top]
        for base in bases:
            candidate = join_within(base.strip("/"), file_name)
            if candidate in self.files:
                return candidate, ""
        for tail in path_suffixes(file_name)[1:]:
            if tail in self.files:
                return tail, ""
        matches = self.by_basename.get(posixpath.basename(file_name.replace("\\", "/")), [])
        if token and len(matches) > 1:
            matches = [m for m in matches if token in m.split("/")] or matches
        if len(matches) == 1:
            return matches[0], ""
        if len(matches) > 1:
            return None, f"several files are named {posixpath.basename(file_name)}: {', '.join(matches[:3])}"
        return None, "no such image file is in the upload; add it or remove the entry"


def parse(root: Path) -> ParsedDataset:
    """Parse a COCO dataset rooted at `root`; raises `DatasetError` when no instances JSON can be read."""
    files = list_files(root)
    candidates = [f for f in files if f.lower().endswith(".json") and looks_like_coco(root / f)]
    named = [f for f in candidates if posixpath.basename(f).lower().startswith("instances_")]
    issues: list[Issue] = []
    for skipped in sorted(set(candidates) - set(named)) if named else []:
        issues.append(
            Issue(Severity.INFO, "coco.json_skipped", skipped, "not an instances_*.json file; not read")
        )
    candidates = named or candidates
    if not candidates:
        raise DatasetError("COCO dataset: no JSON file with `images`, `annotations` and `categories` found")

    index = _ImageIndex(files)
    class_names: list[str] = []
    class_info: list[ClassInfo] = []  # a class met in several files keeps what the first one said
    class_of_name: dict[str, int] = {}
    first_categories: list[tuple[int, str]] | None = None
    images: dict[str, SourceImage] = {}
    failures: list[str] = []
    for json_path in candidates:
        try:
            instances = parse_instances(read_file(root, json_path), json_path)
        except LabelParseError as error:
            issues.append(error_issue(error, "coco.json_invalid"))
            failures.append(str(error))
            continue
        issues.extend(instances.issues)
        categories = list(zip(instances.category_ids, instances.class_names, strict=True))
        if first_categories is None:
            first_categories = categories
        elif categories != first_categories:
            issues.append(
                Issue(
                    Severity.WARNING,
                    "coco.categories_differ",
                    json_path,
                    "its categories differ from the first annotation file's; classes are matched by name",
                )
            )
        local_to_global = []
        for name, info in zip(instances.class_names, instances.class_info, strict=True):
            if name not in class_of_name:
                class_of_name[name] = len(class_names)
                class_names.append(name)
                class_info.append(info)
            local_to_global.append(class_of_name[name])
        split, token = split_token(json_path)
        for entry in instances.images:
            _add_image(entry, json_path, split, token, index, local_to_global, images, issues)
    if len(failures) == len(candidates):
        raise DatasetError(f"COCO dataset: no annotation file could be read; {failures[0]}")

    unlisted = sorted(index.files - images.keys())
    for path in unlisted:
        images[path] = SourceImage(path, split_from_path(path), LabelState.UNLABELLED)
    if unlisted:
        shown = ", ".join(unlisted[:5]) + (" ..." if len(unlisted) > 5 else "")
        issues.append(
            Issue(
                Severity.INFO,
                "coco.images_not_listed",
                unlisted[0],
                f"{len(unlisted)} image files are in no annotation file and count as unlabelled: {shown}",
            )
        )
    ordered = [images[path] for path in sorted(images)]
    return ParsedDataset(DatasetFormat.COCO, "coco", class_names, ordered, issues, class_info)


def _add_image(
    entry: CocoImageEntry,
    json_path: str,
    split: str | None,
    token: str | None,
    index: _ImageIndex,
    local_to_global: list[int],
    images: dict[str, SourceImage],
    issues: list[Issue],
) -> None:
    path, why = index.find(entry.file_name, json_path, token)
    if path is None:
        issues.append(
            Issue(
                Severity.ERROR,
                "coco.image_missing",
                json_path,
                f"image {entry.id} ({entry.file_name[:200]}) is listed but {why}",
            )
        )
        return
    if path in images:
        issues.append(
            Issue(
                Severity.ERROR,
                "coco.image_listed_twice",
                json_path,
                f"{path} is already listed in {images[path].label_file}; it is kept there",
                image=path,
            )
        )
        return
    issues.extend(with_image(entry.issues, path))
    for box in entry.boxes:
        box.class_index = local_to_global[box.class_index]
    state = LabelState.LABELLED if entry.annotated else LabelState.BACKGROUND
    images[path] = SourceImage(
        path,
        split if split is not None else split_from_path(path),
        state,
        entry.boxes,
        label_file=json_path,
        declared_width=entry.width,
        declared_height=entry.height,
        source_id=entry.id,
    )


def category_ids(dataset: CanonicalDataset) -> list[int]:
    """The COCO category id of each class: the upload's where it declared one (unique), else 1..K.

    COCO's own ids have gaps (COCO-2017: 1..90 for 80 classes) and results files carry them, so they are
    kept; a class without one (another format, a class made by a label edit) gets the next id above them.
    """
    declared = [info.coco_id for info in dataset.class_info] if dataset.class_info else []
    kept: dict[int, int] = {}
    for index, coco_id in enumerate(declared):
        if isinstance(coco_id, int) and coco_id > 0 and coco_id not in kept.values():
            kept[index] = coco_id
    next_id = max(kept.values(), default=0) + 1
    ids = []
    for index in range(len(dataset.class_names)):
        if index in kept:
            ids.append(kept[index])
        else:
            ids.append(next_id)
            next_id += 1
    return ids


def _image_ids(images: list[CanonicalImage]) -> dict[str, int]:
    """File name -> image id: the upload's COCO id where it had a unique one, the others above the largest."""
    kept: dict[str, int] = {}
    taken: set[int] = set()
    for image in sorted(images, key=lambda im: im.file_name):
        source = image.source_id
        if source is not None and source.isdigit() and int(source) > 0 and int(source) not in taken:
            kept[image.file_name] = int(source)
            taken.add(int(source))
    next_id = max(taken, default=0) + 1
    for image in sorted(images, key=lambda im: (split_order(im.split), im.file_name)):
        if image.file_name not in kept:
            kept[image.file_name] = next_id
            next_id += 1
    return kept


def render(dataset: CanonicalDataset) -> RenderedDataset:
    """Write `annotations/instances_<split>.json` per split with images at `images/<split>/<file_name>`.

    Category and image ids are the upload's where it had them (`category_ids`, `CanonicalImage.source_id`),
    else they count from 1 (images in split and file-name order); annotation ids count from 1. Identical input
    gives identical bytes. Supercategories and the originals' segmentation and area are written back;
    unlabelled images are placed but not listed, which is how COCO says "nobody looked"; listed images
    without boxes are backgrounds.
    """
    check_export_names(dataset, "COCO export", unique_stems_per_split=None)
    ids = category_ids(dataset)
    info = dataset.class_info or [ClassInfo()] * len(dataset.class_names)
    categories = [
        {"id": ids[index], "name": name, "supercategory": info[index].supercategory}
        for index, name in enumerate(dataset.class_names)
    ]
    listed = [
        image for image in dataset.images if image.boxes or image.label_state is not LabelState.UNLABELLED
    ]
    image_ids = _image_ids(listed)
    by_split: dict[str, list[CanonicalImage]] = {}
    for image in dataset.images:
        by_split.setdefault(image.split, []).append(image)
    label_files: dict[str, bytes] = {}
    image_paths: dict[str, str] = {}
    annotation_id = 0
    for split in sorted(by_split, key=split_order):
        image_entries: list[dict[str, object]] = []
        annotations: list[dict[str, object]] = []
        for image in sorted(by_split[split], key=lambda im: im.file_name):
            image_paths[image.file_name] = f"images/{split}/{image.file_name}"
            if image.file_name not in image_ids:
                continue
            image_id = image_ids[image.file_name]
            image_entries.append(
                {"id": image_id, "file_name": image.file_name, "width": image.width, "height": image.height}
            )
            for box in image.boxes:
                annotation_id += 1
                extra = {k: v for k, v in box.attributes.items() if k not in _WRITTEN_ATTRIBUTES}
                area = box.attributes.get("area")
                segmentation = box.attributes.get(SEGMENTATION)
                annotation: dict[str, object] = {
                    "id": annotation_id,
                    "image_id": image_id,
                    "category_id": ids[box.class_index],
                    "bbox": [float(box.x_min), float(box.y_min), float(box.width), float(box.height)],
                    "area": float(area) if json_number(area) is not None else float(box.width * box.height),
                    "iscrowd": int(bool(box.attributes.get("iscrowd", 0))),
                    "segmentation": segmentation if segmentation is not None else [],
                }
                if extra:
                    annotation["attributes"] = extra
                annotations.append(annotation)
        document = {
            "info": {"description": "exported by dataset_pipeline"},
            "licenses": [],
            "categories": categories,
            "images": image_entries,
            "annotations": annotations,
        }
        text = json.dumps(
            document, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
        label_files[f"annotations/instances_{split}.json"] = (text + "\n").encode()
    return RenderedDataset(label_files, dict(sorted(image_paths.items())))
