"""CreateML detection datasets (Apple's format, as Roboflow exports it): `<split>/_annotations.createml.json`
beside the images of each split, or one `*.createml.json` / annotations JSON at the top.

The file is a JSON list of `{"image": "a.jpg", "annotations": [{"label": "cat", "coordinates": {"x", "y",
"width", "height"}}]}` where x, y is the box centre in pixels; boxes come out as `BoxFormat.XYXY_PIXELS`.
CreateML has no class list, so the classes are the labels met, sorted. JSON has no useful line numbers, so
issues name the entry (`image a.jpg, annotation 2`, counted from 1) as COCO's name the annotation.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from dataset_pipeline.domain.model import (
    BoxFormat,
    DatasetError,
    DatasetFormat,
    Issue,
    LabelParseError,
    LabelState,
    ParsedDataset,
    Severity,
    SourceBox,
    SourceImage,
)
from dataset_pipeline.formats.coco import describe_json, json_number, load_json
from dataset_pipeline.formats.common import (
    CodedParseError,
    error_issue,
    guess_split,
    is_image_path,
    join_within,
    list_files,
    path_suffixes,
    read_file,
    split_from_path,
    with_image,
)

SUFFIX = ".createml.json"
_SNIFF_BYTES = 1 << 16
_COORDINATES = ("x", "y", "width", "height")


@dataclass(slots=True)
class CreateMLBox:
    """One annotation: its label, canonical xyxy pixels and the id issues use for it."""

    label: str
    coords: tuple[float, float, float, float]
    annotation_id: str


@dataclass(slots=True)
class CreateMLEntry:
    """One list entry: the image it names, its valid boxes, and the problems charged to it."""

    image: str
    annotation_id: str  # `image a.jpg`, how issues about the entry as a whole name it
    boxes: list[CreateMLBox] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)


@dataclass(slots=True)
class CreateMLFile:
    """What one CreateML JSON holds: its entries and the problems of entries that name no image."""

    entries: list[CreateMLEntry]
    issues: list[Issue]


def parse_annotations(data: bytes, file: str) -> CreateMLFile:
    """Parse one CreateML JSON; raises `LabelParseError` only when it is not JSON or not a list at all."""
    try:
        document = load_json(data, file)
    except CodedParseError as error:
        code = "createml.json_invalid" if error.code == "coco.json_invalid" else error.code
        raise CodedParseError(code, error.file, error.detail, error.line) from None
    if not isinstance(document, list):
        raise CodedParseError(
            "createml.structure",
            file,
            'must be a JSON list of {"image": ..., "annotations": [...]} entries; is this a CreateML file?',
        )
    issues: list[Issue] = []
    entries: list[CreateMLEntry] = []
    for position, raw in enumerate(document, start=1):
        image = raw.get("image") if isinstance(raw, dict) else None
        if not isinstance(image, str) or not image.strip():
            issues.append(
                Issue(
                    Severity.ERROR,
                    "createml.entry_invalid",
                    file,
                    f"entry {position} needs an `image` file name and an `annotations` list",
                    annotation_id=f"entry {position}",
                )
            )
            continue
        entry = CreateMLEntry(image.strip(), f"image {image.strip()[:100]}")
        entries.append(entry)
        annotations = raw.get("annotations") if isinstance(raw, dict) else None
        if not isinstance(annotations, list):
            entry.issues.append(
                Issue(
                    Severity.ERROR,
                    "createml.annotations_invalid",
                    file,
                    f"`annotations` of {entry.image[:100]} is {describe_json(annotations)}, not a list; "
                    "write [] for an image without objects",
                    annotation_id=entry.annotation_id,
                )
            )
            continue
        for number, annotation in enumerate(annotations, start=1):
            _read_box(annotation, f"{entry.annotation_id}, annotation {number}", file, entry)
    return CreateMLFile(entries, issues)


def _read_box(annotation: object, annotation_id: str, file: str, entry: CreateMLEntry) -> None:
    def report(code: str, message: str) -> None:
        entry.issues.append(Issue(Severity.ERROR, code, file, message, annotation_id=annotation_id))

    if not isinstance(annotation, dict):
        report(
            "createml.annotation_invalid",
            f"is {describe_json(annotation)}, not an object with label/coordinates",
        )
        return
    label = annotation.get("label")
    if not isinstance(label, str) or not label.strip():
        report("createml.label_missing", f"label {describe_json(label)} must be a class name")
        return
    coordinates = annotation.get("coordinates")
    if not isinstance(coordinates, dict):
        report(
            "createml.coordinates_invalid",
            f"coordinates {describe_json(coordinates)} must be an object with x, y, width, height",
        )
        return
    values = [json_number(coordinates.get(key)) for key in _COORDINATES]
    bad = [
        f"{key} {describe_json(coordinates.get(key))}"
        for key, v in zip(_COORDINATES, values, strict=True)
        if v is None
    ]
    if bad:
        report(
            "createml.coordinates_invalid",
            f"coordinates need finite numbers: {', '.join(bad)}; write plain numbers (pixels)",
        )
        return
    x, y, width, height = (v or 0.0 for v in values)
    if width <= 0 or height <= 0:
        report("createml.size_non_positive", f"box width {width} and height {height} must be above 0")
        return
    coords = (x - width / 2, y - height / 2, x + width / 2, y + height / 2)
    entry.boxes.append(CreateMLBox(label.strip(), coords, annotation_id))


def looks_like_createml(path: Path) -> bool:
    """Cheap test for a CreateML JSON not named `*.createml.json`: a list whose start names an `image` and
    its `annotations` (a COCO file is an object, so it never matches)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError:
        return False
    head = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    return head.startswith(b"[") and b'"image"' in head and b'"annotations"' in head


def annotation_files(root: Path, files: list[str]) -> list[str]:
    """The CreateML JSONs of an upload: every `*.createml.json` up to two folders down, else the JSONs at
    the top that look like CreateML."""
    named = [f for f in files if f.lower().endswith(SUFFIX) and f.count("/") <= 2]
    if named:
        return named
    return [
        f for f in files if "/" not in f and f.lower().endswith(".json") and looks_like_createml(root / f)
    ]


def _split_of(json_path: str) -> str | None:
    """`train/_annotations.createml.json` -> train; a top-level `val.createml.json` -> val."""
    folder = posixpath.dirname(json_path)
    if folder:
        return guess_split(posixpath.basename(folder))
    stem = posixpath.basename(json_path)
    stem = stem[: -len(SUFFIX)] if stem.lower().endswith(SUFFIX) else posixpath.splitext(stem)[0]
    stem = stem.strip("_-.")
    return guess_split(stem) if stem else None


class _ImageFinder:
    """Resolves an entry's `image` against the JSON's folder, then by tail, then by a unique base name."""

    def __init__(self, files: list[str]) -> None:
        self.images = {f for f in files if is_image_path(f)}
        self.by_name: dict[str, list[str]] = {}
        for path in sorted(self.images):
            self.by_name.setdefault(posixpath.basename(path), []).append(path)

    def find(self, name: str, json_path: str) -> str | None:
        candidate = join_within(posixpath.dirname(json_path), name)
        if candidate in self.images:
            return candidate
        for tail in path_suffixes(name):
            if tail in self.images:
                return tail
        matches = self.by_name.get(posixpath.basename(name.replace("\\", "/")), [])
        return matches[0] if len(matches) == 1 else None


def parse(root: Path) -> ParsedDataset:
    """Parse a CreateML upload rooted at `root`; raises `DatasetError` only when no annotation file can be
    read at all."""
    files = list_files(root)
    json_files = annotation_files(root, files)
    if not json_files:
        raise DatasetError("CreateML dataset: no *.createml.json or CreateML annotations JSON found")
    finder = _ImageFinder(files)
    issues: list[Issue] = []
    failures: list[str] = []
    listed: dict[str, tuple[str, CreateMLEntry, str | None]] = {}  # image path -> (json, entry, split)
    for json_path in json_files:
        try:
            document = parse_annotations(read_file(root, json_path), json_path)
        except LabelParseError as error:
            issues.append(error_issue(error, "createml.json_invalid"))
            failures.append(str(error))
            continue
        issues.extend(document.issues)
        split = _split_of(json_path)
        for entry in document.entries:
            path = finder.find(entry.image, json_path)
            if path is None:
                issues.append(
                    Issue(
                        Severity.ERROR,
                        "createml.image_missing",
                        json_path,
                        f"lists {entry.image[:200]}, which is not in the upload (or several files have its "
                        "name); add the image or remove the entry",
                        annotation_id=entry.annotation_id,
                    )
                )
                continue
            if path in listed:
                issues.append(
                    Issue(
                        Severity.ERROR,
                        "createml.image_listed_twice",
                        json_path,
                        f"{path} is already listed in {listed[path][0]}; it is kept there",
                        annotation_id=entry.annotation_id,
                        image=path,
                    )
                )
                continue
            listed[path] = (json_path, entry, split)
    if len(failures) == len(json_files):
        raise DatasetError(f"CreateML dataset: no annotation file could be read; {failures[0]}")

    class_names = sorted({box.label for _, entry, _ in listed.values() for box in entry.boxes})
    class_index = {name: i for i, name in enumerate(class_names)}
    images: dict[str, SourceImage] = {}
    for path, (json_path, entry, split) in listed.items():
        issues.extend(with_image(entry.issues, path))
        boxes = [
            SourceBox(
                class_index[box.label],
                box.coords,
                BoxFormat.XYXY_PIXELS,
                json_path,
                annotation_id=box.annotation_id,
            )
            for box in entry.boxes
        ]
        # Like YOLO's label file: an entry with annotations (even refused ones) was labelled; [] is background.
        state = LabelState.LABELLED if boxes or entry.issues else LabelState.BACKGROUND
        images[path] = SourceImage(
            path, split if split is not None else split_from_path(path), state, boxes, label_file=json_path
        )
    unlisted = sorted(finder.images - images.keys())
    for path in unlisted:
        images[path] = SourceImage(path, split_from_path(path), LabelState.UNLABELLED)
    if unlisted:
        shown = ", ".join(unlisted[:5]) + (" ..." if len(unlisted) > 5 else "")
        issues.append(
            Issue(
                Severity.INFO,
                "createml.images_not_listed",
                unlisted[0],
                f"{len(unlisted)} image files are in no CreateML file and count as unlabelled: {shown}",
            )
        )
    ordered = [images[path] for path in sorted(images)]
    return ParsedDataset(DatasetFormat.CREATEML, "createml", class_names, ordered, issues)
