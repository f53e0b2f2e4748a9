"""YOLO detection datasets: the Ultralytics layout (data.yaml, images/ + labels/) and the Darknet one
(obj.names, obj.data, train.txt, labels beside images).

A label file holds one `class cx cy w h` line per box, normalised to the image size, so boxes come out as
`BoxFormat.CXCYWH_NORMALIZED` and are turned into pixels once the image size is known.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from dataset_pipeline.domain.model import (
    SPLITS,
    BoxFormat,
    CanonicalDataset,
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
    is_image_path,
    join_within,
    list_files,
    normalize_split,
    parse_decimal,
    path_suffixes,
    read_file,
    read_text,
    split_from_path,
    split_order,
    text_lines,
    with_image,
)

#: Coordinates this close outside [0, 1] are float noise and pass silently.
TOLERANCE = 1e-6
#: Coordinates outside [0, 1] by at most this much are a warning (clipped later); further out is an error.
SLIGHT_MARGIN = 0.01

_YAML_NAMES = ("data.yaml", "data.yml")
_NAMES_FILES = ("obj.names", "classes.txt")
_LABEL_DIR_NAMES = ("labels", "Labels", "annotations", "Annotations")
_SPLIT_KEYS = {"train": "train", "val": "val", "valid": "val", "test": "test"}


def _range_excess(values: tuple[float, ...]) -> float:
    return max(max(-v, v - 1.0, 0.0) for v in values)


def parse_label_text(data: bytes, file: str, num_classes: int) -> tuple[list[SourceBox], list[Issue]]:
    """Parse one YOLO label file into boxes and the problems of each bad line.

    Bad lines are reported and left out rather than raising, so one typo does not hide the rest of the file;
    only bytes that are not UTF-8 text raise `LabelParseError`. Boxes reaching past the image edge and repeated
    boxes are left to validation, which judges them the same way for every format.
    """
    text = decode_text(data, file)
    boxes: list[SourceBox] = []
    issues: list[Issue] = []

    for number, raw in enumerate(text_lines(text), start=1):
        line = raw.strip()
        if not line:
            continue

        def report(code: str, message: str, severity: Severity = Severity.ERROR, *, at: int = number) -> None:
            issues.append(Issue(severity, code, file, message, line=at))

        if not line.isascii():
            report("yolo.non_ascii", "holds non-ASCII characters; write numbers with the digits 0-9 only")
            continue
        tokens = line.split()
        if len(tokens) != 5:
            if len(tokens) > 6 and len(tokens) % 2 == 1:
                hint = "this looks like a segmentation polygon, which is unsupported; export bounding boxes"
            elif len(tokens) == 6:
                hint = "a sixth column looks like a prediction confidence; drop it"
            else:
                hint = "write `class cx cy w h`"
            report("yolo.column_count", f"has {len(tokens)} columns, expected 5; {hint}")
            continue
        values = [parse_decimal(token) for token in tokens]
        bad = [token for token, value in zip(tokens, values, strict=True) if value is None]
        if bad:
            shown = bad[0] if len(bad[0]) <= 20 else bad[0][:20] + "..."
            report(
                "yolo.not_numeric", f"value {shown!r} is not a decimal number; write plain numbers like 0.5"
            )
            continue
        numbers = [v for v in values if v is not None]
        if not all(math.isfinite(v) for v in numbers):
            report("yolo.not_finite", "holds a number too large to represent (infinite); fix the coordinates")
            continue
        class_value, cx, cy, w, h = numbers
        if not class_value.is_integer():
            report("yolo.class_not_integer", f"class {tokens[0]!r} is not a whole number")
            continue
        class_index = int(class_value)
        if not 0 <= class_index < num_classes:
            report(
                "yolo.class_out_of_range",
                f"class {class_index} is not among the {num_classes} class names; "
                "add the name or fix the class id",
            )
            continue
        if w <= 0 or h <= 0:
            report("yolo.non_positive_size", f"box width {tokens[3]} / height {tokens[4]} must be above 0")
            continue
        excess = _range_excess((cx, cy, w, h))
        if excess > SLIGHT_MARGIN:
            report(
                "yolo.out_of_range",
                "coordinates must be normalised to [0, 1]; these look like pixels or lie far outside",
            )
            continue
        if excess > TOLERANCE:
            report(
                "yolo.slightly_out_of_range",
                "a coordinate is slightly outside [0, 1]; it will be clipped to the image",
                Severity.WARNING,
            )
        boxes.append(SourceBox(class_index, (cx, cy, w, h), BoxFormat.CXCYWH_NORMALIZED, file, line=number))
    return boxes, issues


def parse_names_text(data: bytes, file: str) -> tuple[list[str], list[Issue]]:
    """Read a Darknet `obj.names` / `classes.txt`: one class per line, its line number is its class id."""
    lines = [line.strip() for line in text_lines(decode_text(data, file))]
    while lines and not lines[-1]:
        lines.pop()
    names: list[str] = []
    issues: list[Issue] = []
    for number, name in enumerate(lines, start=1):
        if not name:
            name = f"class_{number - 1}"
            issues.append(
                Issue(
                    Severity.WARNING, "yolo.class_name_empty", file, f"empty class name, named {name}", number
                )
            )
        names.append(name)
    return names, issues


def parse_data_yaml(data: bytes, file: str) -> tuple[dict[str, object], list[str], list[Issue]]:
    """Read an Ultralytics data.yaml into its mapping and its class names (list or `{id: name}` form)."""
    text = decode_text(data, file)
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise CodedParseError(
            "yolo.yaml_invalid", file, f"is not valid YAML ({error}); fix the syntax", line
        ) from None
    except RecursionError:
        raise CodedParseError("yolo.yaml_invalid", file, "is nested too deeply to read") from None
    if not isinstance(loaded, dict):
        raise CodedParseError(
            "yolo.yaml_invalid", file, "must be a mapping with `names` and `train`/`val` keys"
        )
    config = {str(k): v for k, v in loaded.items()}
    issues: list[Issue] = []

    def warn(code: str, message: str) -> None:
        issues.append(Issue(Severity.WARNING, code, file, message))

    raw = config.get("names")
    names: list[str]
    if isinstance(raw, list):
        names = [_name(value, i, warn) for i, value in enumerate(raw)]
    elif isinstance(raw, dict):
        by_id: dict[int, str] = {}
        for key, value in raw.items():
            index = key if isinstance(key, int) and not isinstance(key, bool) else None
            if index is None and isinstance(key, str) and key.strip().isdigit() and key.strip().isascii():
                index = int(key.strip())
            if index is None or index < 0 or index > 100_000:
                raise CodedParseError(
                    "yolo.names_invalid", file, f"`names` key {key!r} is not a class id (0, 1, ...)"
                )
            by_id[index] = _name(value, index, warn)
        count = max(by_id, default=-1) + 1
        missing = [i for i in range(count) if i not in by_id]
        if missing:
            warn(
                "yolo.names_gap",
                f"`names` has no entry for class ids {missing[:10]}; they are named class_<id>",
            )
        names = [by_id.get(i, f"class_{i}") for i in range(count)]
    elif raw is None and (nc := _int_or_none(config.get("nc"))) is not None and 0 < nc <= 100_000:
        count = nc
        warn(
            "yolo.names_missing",
            f"has `nc: {count}` but no `names`; classes are named class_0 ... class_{count - 1}",
        )
        names = [f"class_{i}" for i in range(count)]
    else:
        raise CodedParseError("yolo.names_invalid", file, "needs `names` as a list or an {id: name} mapping")
    nc = _int_or_none(config.get("nc"))
    if nc is not None and nc != len(names):
        warn("yolo.nc_mismatch", f"says nc: {nc} but lists {len(names)} names; the names win")
    return config, names, issues


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _name(value: object, index: int, warn: Callable[[str, str], None]) -> str:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    kind = type(value).__name__
    warn("yolo.class_name_empty", f"class {index} has no usable name (a {kind}); named class_{index}")
    return f"class_{index}"


def parse_obj_data(data: bytes, file: str) -> dict[str, str]:
    """Read Darknet's `obj.data` (`key = value` lines such as `names = data/obj.names`)."""
    entries: dict[str, str] = {}
    for line in text_lines(decode_text(data, file)):
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.lstrip().startswith("#"):
            entries[key.strip().lower()] = value.strip()
    return entries


@dataclass
class _Tree:
    """The listing of the dataset root with the lookups path resolution needs."""

    files: list[str]
    file_set: set[str] = field(init=False)
    dirs: set[str] = field(init=False)

    def __post_init__(self) -> None:
        self.file_set = set(self.files)
        self.dirs = {""}
        for path in self.files:
            parent = posixpath.dirname(path)
            while parent not in self.dirs:
                self.dirs.add(parent)
                parent = posixpath.dirname(parent)

    def images_under(self, folder: str) -> list[str]:
        prefix = folder + "/" if folder else ""
        return [f for f in self.files if f.startswith(prefix) and is_image_path(f)]

    def resolve(self, ref: str, bases: tuple[str, ...], *, want_dir: bool | None = None) -> str | None:
        """Find `ref` inside the root: relative to each base, Ultralytics' `../` fallback, then by its tail
        (a path written on another machine: `data/obj_train_data/1.jpg`, `/content/ds/images/train`)."""
        ref = ref.strip()
        if not ref:
            return None
        candidates: list[str | None] = [join_within(base, ref) for base in bases]
        if ref.startswith("../"):
            candidates += [join_within(base, ref[3:]) for base in bases]
        candidates += [join_within(base, tail) for tail in path_suffixes(ref) for base in bases]
        for candidate in candidates:
            if candidate is None:
                continue
            if (want_dir is not False and candidate in self.dirs) or (
                want_dir is not True and candidate in self.file_set
            ):
                return candidate
        return None


@dataclass
class _Config:
    layout: str
    class_names: list[str]
    meta_files: set[str]
    # split -> declared refs (folders, .txt lists or images); None when the config declares no split
    declared: dict[str, list[str]] | None
    base: str  # folder the declared refs are relative to
    source_file: str


def _read_config(root: Path, tree: _Tree, issues: list[Issue]) -> _Config:
    top_level = [f for f in tree.files if "/" not in f]
    yaml_file = next((f for f in top_level if f.lower() in _YAML_NAMES), None)
    if yaml_file is None:
        yaml_file = next(
            (f for f in top_level if f.lower().endswith((".yaml", ".yml")) and has_names_key(root, f)), None
        )
    if yaml_file is not None:
        return _read_ultralytics(root, tree, yaml_file, issues)
    return _read_darknet(root, tree, top_level, issues)


def has_names_key(root: Path, rel: str) -> bool:
    """Whether a YAML file at the root looks like a dataset config (`names:` at the start of a line)."""
    try:
        with (root / rel).open("rb") as handle:
            head = handle.read(1 << 20)
    except OSError:
        return False
    return re.search(rb"(?m)^names\s*:", head) is not None


def _read_ultralytics(root: Path, tree: _Tree, yaml_file: str, issues: list[Issue]) -> _Config:
    try:
        config, names, yaml_issues = parse_data_yaml(read_file(root, yaml_file), yaml_file)
    except LabelParseError as error:
        raise DatasetError(f"YOLO dataset: {error}") from None
    issues.extend(yaml_issues)
    base = ""
    path = config.get("path")
    if isinstance(path, str) and path.strip() not in ("", "."):
        inside = join_within("", path.strip())
        if inside is not None and inside in tree.dirs:
            base = inside
        else:
            issues.append(
                Issue(
                    Severity.INFO,
                    "yolo.path_ignored",
                    yaml_file,
                    f"`path: {path}` is not a folder of the upload; paths are read relative to {yaml_file}",
                )
            )
    declared: dict[str, list[str]] = {}
    for key, split in _SPLIT_KEYS.items():
        value = config.get(key)
        refs = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        declared.setdefault(split, []).extend(str(r) for r in refs if isinstance(r, str))
    declared = {k: v for k, v in declared.items() if v}
    return _Config("ultralytics", names, {yaml_file}, declared or None, base, yaml_file)


def _read_darknet(root: Path, tree: _Tree, top_level: list[str], issues: list[Issue]) -> _Config:
    meta: set[str] = set()
    data_file = next((f for f in top_level if f.lower() == "obj.data"), None)
    data_file = data_file or next((f for f in top_level if f.lower().endswith(".data")), None)
    entries: dict[str, str] = {}
    if data_file is not None:
        meta.add(data_file)
        try:
            entries = parse_obj_data(read_file(root, data_file), data_file)
        except LabelParseError as error:
            issues.append(error_issue(error, "file.unreadable"))
    names_file = None
    if "names" in entries:
        names_file = tree.resolve(entries["names"], ("",), want_dir=False)
        if names_file is None:
            issues.append(
                Issue(
                    Severity.WARNING,
                    "yolo.names_file_missing",
                    data_file or "obj.data",
                    f"names = {entries['names']} is not in the upload",
                )
            )
    names_file = names_file or next((f for f in top_level if f.lower() in _NAMES_FILES), None)
    names_file = names_file or next((f for f in top_level if f.lower().endswith(".names")), None)
    if names_file is None:
        raise DatasetError(
            "YOLO dataset: no class names found; add data.yaml with `names`, or obj.names / classes.txt "
            "with one class per line"
        )
    meta.add(names_file)
    try:
        names, name_issues = parse_names_text(read_file(root, names_file), names_file)
    except LabelParseError as error:
        raise DatasetError(f"YOLO dataset: {error}") from None
    issues.extend(name_issues)

    declared: dict[str, list[str]] = {}
    for key, split in _SPLIT_KEYS.items():
        if entries.get(key):
            declared.setdefault(split, []).append(entries[key])
    if not declared:
        for name in top_level:
            stem, ext = posixpath.splitext(name)
            split = normalize_split(stem) if ext.lower() == ".txt" else None
            if split is not None:
                declared.setdefault(split, []).append(name)
    return _Config("darknet", names, meta, declared or None, "", data_file or names_file)


def _images_from_ref(
    root: Path, tree: _Tree, cfg: _Config, ref: str, issues: list[Issue]
) -> list[str] | None:
    """The images a declared split entry stands for: a folder, a .txt list of image paths, or one image."""
    found = tree.resolve(ref, (cfg.base, ""))
    if found is None:
        return None
    if found in tree.dirs:
        return tree.images_under(found)
    if is_image_path(found):
        return [found]
    cfg.meta_files.add(found)
    try:
        text = read_text(root, found)
    except CodedParseError as error:
        issues.append(error.to_issue())
        return []
    list_dir = posixpath.dirname(found)
    images: list[str] = []
    for number, raw in enumerate(text_lines(text), start=1):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        bases = (list_dir,) if entry.startswith("./") else (list_dir, cfg.base, "")
        image = tree.resolve(entry, bases, want_dir=False)
        if image is None or not is_image_path(image):
            issues.append(
                Issue(
                    Severity.WARNING,
                    "yolo.list_entry_missing",
                    found,
                    f"lists {entry[:200]!r}, which is not an image of the upload",
                    line=number,
                )
            )
            continue
        images.append(image)
    return images


def _assign_splits(root: Path, tree: _Tree, cfg: _Config, issues: list[Issue]) -> dict[str, str | None]:
    """Image path -> split, from the declared train/val/test entries or else from folder names."""
    assigned: dict[str, str | None] = {}
    if cfg.declared:
        for split in sorted(cfg.declared, key=SPLITS.index):
            for ref in cfg.declared[split]:
                images = _images_from_ref(root, tree, cfg, ref, issues)
                if images is None:
                    issues.append(
                        Issue(
                            Severity.WARNING,
                            "yolo.split_path_missing",
                            cfg.source_file,
                            f"{split}: {ref[:200]} is not a folder, list or image of the upload",
                        )
                    )
                    continue
                for image in images:
                    previous = assigned.setdefault(image, split)
                    if previous != split:
                        issues.append(
                            Issue(
                                Severity.WARNING,
                                "yolo.split_conflict",
                                image,
                                f"is listed in both {previous} and {split}; kept in {previous}",
                                image=image,
                            )
                        )
        if assigned:
            unlisted = [f for f in tree.files if is_image_path(f) and f not in assigned]
            if unlisted:
                shown = ", ".join(unlisted[:5]) + (" ..." if len(unlisted) > 5 else "")
                issues.append(
                    Issue(
                        Severity.WARNING,
                        "yolo.images_not_in_split",
                        unlisted[0],
                        f"{len(unlisted)} images are in no declared split and are left out: {shown}; "
                        f"add their folders to {cfg.source_file}",
                    )
                )
            return assigned
        issues.append(
            Issue(
                Severity.WARNING,
                "yolo.splits_unresolved",
                cfg.source_file,
                "no declared train/val/test entry matched images; all images of the upload are used",
            )
        )
    return {f: split_from_path(f) for f in tree.files if is_image_path(f)}


def label_path_for(image: str, dirs: set[str]) -> str:
    """Where the label of `image` lives: Ultralytics swaps the last `images` folder for `labels` (or an
    `annotations` folder beside it); Darknet keeps the .txt next to the image."""
    parts = image.split("/")
    stem = posixpath.splitext(parts[-1])[0] + ".txt"
    for i in range(len(parts) - 2, -1, -1):
        if parts[i].lower() == "images":
            parent = "/".join(parts[:i])
            siblings = [posixpath.join(parent, name) if parent else name for name in _LABEL_DIR_NAMES]
            label_dir = next((d for d in siblings if d in dirs), None)
            if label_dir is not None:
                return "/".join([label_dir, *parts[i + 1 : -1], stem])
            break
    return "/".join([*parts[:-1], stem])


def _blank(data: bytes) -> bool:
    return not data.removeprefix(b"\xef\xbb\xbf").strip()


def parse(root: Path) -> ParsedDataset:
    """Parse a YOLO dataset rooted at `root`; raises `DatasetError` only when no class names can be read."""
    tree = _Tree(list_files(root))
    issues: list[Issue] = []
    cfg = _read_config(root, tree, issues)
    assigned = _assign_splits(root, tree, cfg, issues)

    images: list[SourceImage] = []
    used_labels: dict[str, str] = {}
    label_dirs: set[str] = set()
    for path in sorted(assigned):
        split = assigned[path]
        label = label_path_for(path, tree.dirs)
        beside = posixpath.splitext(path)[0] + ".txt"
        if label not in tree.file_set and beside in tree.file_set:
            label = beside
        label_dirs.add(posixpath.dirname(label))
        if label not in tree.file_set:
            images.append(SourceImage(path, split, LabelState.UNLABELLED))
            continue
        if label in used_labels:
            issues.append(
                Issue(
                    Severity.WARNING,
                    "yolo.shared_label",
                    label,
                    f"is the label of both {used_labels[label]} and {path}; give the images distinct names",
                    image=path,
                )
            )
        used_labels.setdefault(label, path)
        try:
            data = read_file(root, label)
            if _blank(data):
                images.append(SourceImage(path, split, LabelState.BACKGROUND, label_file=label))
                continue
            boxes, label_issues = parse_label_text(data, label, len(cfg.class_names))
        except LabelParseError as error:
            issues.append(error_issue(error, "yolo.label_unreadable", image=path))
            images.append(SourceImage(path, split, LabelState.UNLABELLED, label_file=label))
            continue
        issues.extend(with_image(label_issues, path))
        images.append(SourceImage(path, split, LabelState.LABELLED, boxes, label_file=label))

    for file in tree.files:
        if file in used_labels or file in cfg.meta_files or not file.lower().endswith(".txt"):
            continue
        parent = posixpath.dirname(file)
        in_label_dir = parent in label_dirs or "labels" in parent.lower().split("/")
        if in_label_dir and not _is_meta_name(file):
            issues.append(
                Issue(
                    Severity.WARNING,
                    "yolo.orphan_label",
                    file,
                    "is a label file with no image of the same name; add the image or remove the file",
                )
            )
    return ParsedDataset(DatasetFormat.YOLO, cfg.layout, cfg.class_names, images, issues)


def _is_meta_name(path: str) -> bool:
    """Text files that sit among labels but are not labels: read-mes, class lists, top-level split lists."""
    name = posixpath.basename(path).lower()
    if name.startswith("readme") or name in _NAMES_FILES:
        return True
    return "/" not in path and normalize_split(posixpath.splitext(name)[0]) is not None


def _decimal(value: float) -> str:
    """The shortest digits that read back as the same double, never in exponent notation: readers that
    check a line by its characters (Datumaro) drop a file with `5e-05` in it."""
    return np.format_float_positional(value, trim="-")


def render(dataset: CanonicalDataset) -> RenderedDataset:
    """Write an Ultralytics layout: data.yaml, images/<split>/<file>, labels/<split>/<stem>.txt.

    Floats are written as the shortest positional decimals that parse back to the same doubles; background images get an
    empty label file and unlabelled images none, keeping YOLO's distinction between the two.
    """
    check_export_names(dataset, "YOLO export", unique_stems_per_split=True)
    splits = sorted({image.split for image in dataset.images}, key=split_order)
    # No `path`: Ultralytics then resolves the split folders against the yaml's own folder, so training works
    # from any working directory (`path: .` would mean the current one).
    config: dict[str, object] = {split: f"images/{split}" for split in splits}
    config["nc"] = len(dataset.class_names)
    config["names"] = dict(enumerate(dataset.class_names))
    label_files: dict[str, bytes] = {
        "data.yaml": yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=1 << 16).encode()
    }
    image_paths: dict[str, str] = {}
    for image in sorted(dataset.images, key=lambda im: (split_order(im.split), im.file_name)):
        image_paths[image.file_name] = f"images/{image.split}/{image.file_name}"
        if image.label_state is LabelState.UNLABELLED and not image.boxes:
            continue
        if image.width <= 0 or image.height <= 0:
            raise ValueError(f"YOLO export: {image.file_name} has no size ({image.width}x{image.height})")
        lines = []
        for box in image.boxes:
            cx = (box.x_min + box.x_max) / 2 / image.width
            cy = (box.y_min + box.y_max) / 2 / image.height
            w = (box.x_max - box.x_min) / image.width
            h = (box.y_max - box.y_min) / image.height
            lines.append(f"{box.class_index} {_decimal(cx)} {_decimal(cy)} {_decimal(w)} {_decimal(h)}\n")
        stem = posixpath.splitext(image.file_name)[0]
        label_files[f"labels/{image.split}/{stem}.txt"] = "".join(lines).encode()
    return RenderedDataset(label_files, image_paths)
