"""KITTI object detection: `image_2/<stem>.png` with `label_2/<stem>.txt`, optionally under `training/` and
`testing/` (which give the split).

Each label line is `type truncated occluded alpha left top right bottom h w l x y z rotation_y [score]`. The
2D box `(left, top, right, bottom)` is in 0-based pixel edges, so it is the canonical xyxy as written.
`truncated`, `occluded` and `alpha` are kept under KITTI-specific keys because they do not mean VOC's 0/1
flags (truncation is a fraction, occlusion 0-3 where 3 is "unknown"); the 3D fields and the score are not
kept. `DontCare` lines mark regions to ignore, not objects, and are skipped.
"""

from __future__ import annotations

import math
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from dataset_pipeline.domain.model import (
    AttributeValue,
    BoxFormat,
    DatasetFormat,
    Issue,
    LabelParseError,
    LabelState,
    ParsedDataset,
    Severity,
    SourceBox,
    SourceImage,
)
from dataset_pipeline.formats.common import (
    decode_text,
    error_issue,
    is_image_path,
    list_files,
    normalize_split,
    parse_decimal,
    read_file,
    text_lines,
    with_image,
)

IMAGE_DIR = "image_2"
LABEL_DIR = "label_2"
DONT_CARE = "DontCare"
#: Box attribute keys; prefixed so no writer takes them for VOC's `truncated` / `occluded` 0/1 flags.
TRUNCATED = "kitti_truncated"
OCCLUDED = "kitti_occluded"
ALPHA = "kitti_alpha"

_FIELDS = (
    "type",
    "truncated",
    "occluded",
    "alpha",
    "left",
    "top",
    "right",
    "bottom",
    "height",
    "width",
    "length",
    "x",
    "y",
    "z",
    "rotation_y",
    "score",
)


@dataclass(slots=True)
class KittiObject:
    """One object line: its type, canonical xyxy pixels, kept attributes, and its 1-based line number."""

    type: str
    coords: tuple[float, float, float, float]
    attributes: dict[str, AttributeValue]
    line: int


@dataclass(slots=True)
class KittiLabel:
    """One label file: its objects, how many `DontCare` regions it had, and the problems of its lines."""

    objects: list[KittiObject] = field(default_factory=list)
    dont_care: int = 0
    issues: list[Issue] = field(default_factory=list)


def parse_label_text(data: bytes, file: str) -> KittiLabel:
    """Parse one `label_2/<stem>.txt`; bad lines become issues naming file and line, and only bytes that are
    not UTF-8 raise `LabelParseError`."""
    label = KittiLabel()
    for number, raw in enumerate(text_lines(decode_text(data, file)), start=1):
        tokens = raw.split()
        if not tokens:
            continue

        def report(code: str, message: str, severity: Severity = Severity.ERROR, *, at: int = number) -> None:
            label.issues.append(Issue(severity, code, file, message, line=at))

        if len(tokens) not in (15, 16):
            report(
                "kitti.field_count",
                f"has {len(tokens)} fields, expected 15 (type truncated occluded alpha left top right bottom "
                "h w l x y z rotation_y) or 16 with a score",
            )
            continue
        values = [parse_decimal(token) for token in tokens[1:]]
        bad = [
            (name, token)
            for name, token, value in zip(_FIELDS[1:], tokens[1:], values, strict=False)
            if value is None
        ]
        if bad:
            name, token = bad[0]
            shown = token if len(token) <= 20 else token[:20] + "..."
            report("kitti.not_numeric", f"{name} {shown!r} is not a decimal number; write plain numbers")
            continue
        numbers = [v or 0.0 for v in values]
        if not all(math.isfinite(v) for v in numbers):
            report("kitti.not_finite", "holds a number too large to represent (infinite); fix the line")
            continue
        kind = tokens[0]
        if kind == DONT_CARE:
            label.dont_care += 1
            continue
        truncated, occluded, alpha, left, top, right, bottom = numbers[:7]
        if right < left or bottom < top:
            report(
                "kitti.coordinate_inverted",
                f"{kind[:50]} box has left {tokens[4]}, right {tokens[6]}, top {tokens[5]}, bottom {tokens[7]}; "
                "right must not be below left, nor bottom below top",
            )
            continue
        attributes: dict[str, AttributeValue] = {ALPHA: alpha}
        if 0.0 <= truncated <= 1.0:
            attributes[TRUNCATED] = truncated
        else:
            report(
                "kitti.attribute_invalid",
                f"truncated {tokens[1]} must be between 0 and 1; ignored",
                Severity.WARNING,
            )
        if occluded.is_integer() and 0 <= occluded <= 3:
            attributes[OCCLUDED] = int(occluded)
        else:
            report(
                "kitti.attribute_invalid",
                f"occluded {tokens[2]} must be 0, 1, 2 or 3; ignored",
                Severity.WARNING,
            )
        label.objects.append(KittiObject(kind, (left, top, right, bottom), attributes, number))
    return label


def _split_and_kind(path: str) -> tuple[str, str] | None:
    """(folder holding image_2/label_2, which of the two) for `[<folder>/]image_2/<name>`, else None."""
    parts = path.split("/")
    if len(parts) == 2 and parts[0] in (IMAGE_DIR, LABEL_DIR):
        return "", parts[0]
    if len(parts) == 3 and parts[1] in (IMAGE_DIR, LABEL_DIR):
        return parts[0], parts[1]
    return None


def looks_like_kitti(files: list[str]) -> bool:
    """True when a `label_2/*.txt` and an `image_2/` image sit side by side (at the top or one folder down)."""
    labels, images = set(), set()
    for path in files:
        found = _split_and_kind(path)
        if found is None:
            continue
        folder, kind = found
        if kind == LABEL_DIR and path.lower().endswith(".txt"):
            labels.add(folder)
        elif kind == IMAGE_DIR and is_image_path(path):
            images.add(folder)
    return bool(labels & images)


def parse(root: Path) -> ParsedDataset:
    """Parse a KITTI detection upload rooted at `root`. Per-file problems become issues; nothing here raises."""
    files = list_files(root)
    images: dict[str, tuple[str, str]] = {}  # image path -> (folder, stem)
    labels: dict[tuple[str, str], str] = {}  # (folder, stem) -> label path
    for path in files:
        found = _split_and_kind(path)
        if found is None:
            continue
        folder, kind = found
        stem = posixpath.splitext(posixpath.basename(path))[0]
        if kind == IMAGE_DIR and is_image_path(path):
            images[path] = (folder, stem)
        elif kind == LABEL_DIR and path.lower().endswith(".txt"):
            labels[(folder, stem)] = path

    issues: list[Issue] = []
    read: dict[str, tuple[str, KittiLabel | None]] = {}  # image path -> (label path, parsed label)
    claimed: set[str] = set()
    for image, key in sorted(images.items()):
        label_path = labels.get(key)
        if label_path is None:
            continue
        if label_path in claimed:  # a.png beside a.jpg: both would read label_2/a.txt
            issues.append(
                Issue(
                    Severity.ERROR,
                    "kitti.label_shared",
                    label_path,
                    f"{image} has the same stem as another image, so both would take this label file; "
                    "rename one",
                    image=image,
                )
            )
            continue
        claimed.add(label_path)
        try:
            read[image] = (label_path, parse_label_text(read_file(root, label_path), label_path))
        except LabelParseError as error:
            issues.append(error_issue(error, "file.unreadable", image=image))
            read[image] = (label_path, None)

    class_names = sorted({o.type for _, label in read.values() if label for o in label.objects})
    class_index = {name: i for i, name in enumerate(class_names)}
    parsed: list[SourceImage] = []
    dont_care: dict[str, int] = {}
    for image, (folder, _) in sorted(images.items()):
        split = normalize_split(folder) if folder else None
        if image not in read:
            parsed.append(SourceImage(image, split, LabelState.UNLABELLED))
            continue
        label_path, label = read[image]
        if label is None:
            parsed.append(SourceImage(image, split, LabelState.UNLABELLED, label_file=label_path))
            continue
        issues.extend(with_image(label.issues, image))
        if label.dont_care:
            dont_care[label_path] = label.dont_care
        boxes = [
            SourceBox(
                class_index[o.type],
                o.coords,
                BoxFormat.XYXY_PIXELS,
                label_path,
                line=o.line,
                attributes=o.attributes,
            )
            for o in label.objects
        ]
        # As for YOLO: a file with any line in it was labelled, even if every line was refused or DontCare.
        blank = not boxes and not label.dont_care and not label.issues
        state = LabelState.BACKGROUND if blank else LabelState.LABELLED
        frame = posixpath.splitext(posixpath.basename(image))[0]
        parsed.append(SourceImage(image, split, state, boxes, label_file=label_path, source_id=frame))

    for key, label_path in sorted(labels.items()):
        if label_path not in claimed:
            issues.append(
                Issue(
                    Severity.WARNING,
                    "kitti.label_without_image",
                    label_path,
                    f"has no image {posixpath.join(key[0], IMAGE_DIR, key[1])}.*; the labels are not used",
                )
            )
    if dont_care:
        first = next(iter(dont_care))
        issues.append(
            Issue(
                Severity.INFO,
                "kitti.dont_care_skipped",
                first,
                f"{sum(dont_care.values())} DontCare regions in {len(dont_care)} label files are regions to "
                "ignore, not objects; they are not kept",
            )
        )
    return ParsedDataset(DatasetFormat.KITTI, "kitti", class_names, parsed, issues)
