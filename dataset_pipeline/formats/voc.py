"""Pascal VOC detection datasets: the devkit layout (`Annotations/<id>.xml`, `JPEGImages/`,
`ImageSets/Main/<split>.txt` and, as Datumaro and CVAT write it, `labelmap.txt` declaring the classes), and
Roboflow's "Pascal VOC" export with each XML beside its image, in split folders (`train/a.jpg` + `train/a.xml`)
or in one flat folder.

Tools disagree on what `<bndbox>` numbers mean, so the reader is told (`VocPixelOrigin`): with origin 0 they
are the box's pixel edges as written (CVAT, Datumaro, torchvision, Roboflow) and the canonical box is
`(xmin, ymin, xmax, ymax)`; with origin 1 they are the devkit's 1-based inclusive pixels and the canonical box
is `(xmin - 1, ymin - 1, xmax, ymax)`.
"""

from __future__ import annotations

import math
import posixpath
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser, ParseError

from dataset_pipeline.domain.model import (
    DEFAULT_VOC_PIXEL_ORIGIN,
    AttributeValue,
    BoxFormat,
    CanonicalDataset,
    DatasetFormat,
    Issue,
    LabelParseError,
    LabelState,
    ParsedDataset,
    RenderedDataset,
    Severity,
    SourceBox,
    SourceImage,
    VocPixelOrigin,
)
from dataset_pipeline.formats.common import (
    CodedParseError,
    check_export_names,
    decode_text,
    error_issue,
    is_image_path,
    list_files,
    normalize_split,
    parse_decimal,
    read_file,
    split_order,
    text_lines,
    with_image,
)

_FLAGS = ("difficult", "truncated", "occluded")
_COORDS = ("xmin", "ymin", "xmax", "ymax")
_TRAINVAL = "trainval"


@dataclass(slots=True)
class VocObject:
    """One `<object>`: class name, canonical xyxy pixels, kept attributes, and where it is in the file."""

    name: str
    coords: tuple[float, float, float, float]
    attributes: dict[str, AttributeValue]
    number: int  # 1-based position among the file's <object> elements
    line: int | None


@dataclass(slots=True)
class VocAnnotation:
    """One annotation XML: the image it names, its declared size, valid objects and the problems met."""

    filename: str | None
    width: int | None
    height: int | None
    object_count: int  # every <object>, including the ones left out for errors
    objects: list[VocObject] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)


class _LineTreeBuilder(ET.TreeBuilder):
    """Remembers the line each element starts on, so issues can point at the `<object>` in the file."""

    def __init__(self) -> None:
        super().__init__()
        self.parser: DefusedXMLParser | None = None
        self.lines: dict[int, int] = {}

    def start(self, tag: str, attrs: dict[str, str]) -> ET.Element:
        element = super().start(tag, attrs)
        if self.parser is not None:
            self.lines[id(element)] = self.parser.parser.CurrentLineNumber
        return element


def _parse_xml(data: bytes, file: str) -> tuple[ET.Element, dict[int, int]]:
    builder = _LineTreeBuilder()
    parser = DefusedXMLParser(target=builder, forbid_dtd=True)
    builder.parser = parser
    try:
        parser.feed(data)
        return parser.close(), builder.lines
    except DefusedXmlException:
        raise CodedParseError(
            "voc.xml_unsafe",
            file,
            "declares a DTD or entities, which are refused for safety; export the XML without a DOCTYPE",
        ) from None
    except ParseError as error:
        line = error.position[0] if error.position else None
        raise CodedParseError("voc.xml_malformed", file, f"is not well-formed XML ({error})", line) from None
    except (ValueError, LookupError) as error:
        raise CodedParseError("voc.xml_malformed", file, f"cannot be read as XML ({error})") from None


def parse_annotation(
    data: bytes, file: str, *, pixel_origin: VocPixelOrigin = DEFAULT_VOC_PIXEL_ORIGIN
) -> VocAnnotation:
    """Parse one VOC annotation XML, reading `<bndbox>` with `pixel_origin`; raises `LabelParseError` (with
    `.code`) only when the XML itself is unsafe, malformed or not a VOC `<annotation>`; bad objects become
    issues."""
    root, lines = _parse_xml(data, file)
    if root.tag != "annotation":
        raise CodedParseError("voc.xml_structure", file, f"has root <{root.tag[:50]}>, expected <annotation>")
    issues: list[Issue] = []
    width, height = _read_size(root, file, lines, issues)
    filename = (root.findtext("filename") or "").strip() or None
    annotation = VocAnnotation(filename, width, height, 0, issues=issues)
    for number, element in enumerate(root.findall("object"), start=1):
        annotation.object_count += 1
        line = lines.get(id(element))
        obj = _read_object(element, number, line, file, issues, pixel_origin)
        if obj is not None:
            annotation.objects.append(obj)
    return annotation


def _read_size(
    root: ET.Element, file: str, lines: dict[int, int], issues: list[Issue]
) -> tuple[int | None, int | None]:
    size = root.find("size")
    if size is None:
        return None, None
    texts = [(size.findtext(tag) or "").strip() for tag in ("width", "height")]
    values = [parse_decimal(text) for text in texts]
    if all(v is not None and v > 0 and v.is_integer() and v < 1 << 31 for v in values):
        return int(values[0] or 0), int(values[1] or 0)
    issues.append(
        Issue(
            Severity.WARNING,
            "voc.size_invalid",
            file,
            f"<size> is {texts[0][:20]!r} x {texts[1][:20]!r}; the image's own size is used instead",
            lines.get(id(size)),
        )
    )
    return None, None


def _read_object(
    element: ET.Element,
    number: int,
    line: int | None,
    file: str,
    issues: list[Issue],
    pixel_origin: VocPixelOrigin,
) -> VocObject | None:
    def report(code: str, message: str, severity: Severity = Severity.ERROR) -> None:
        issues.append(Issue(severity, code, file, message, line=line, annotation_id=str(number)))

    name = (element.findtext("name") or "").strip()
    if not name:
        report("voc.name_missing", f"object {number} has no <name>; name its class")
        return None
    box = element.find("bndbox")
    if box is None:
        report("voc.bndbox_missing", f"object {number} ({name[:50]}) has no <bndbox>")
        return None
    texts = [(box.findtext(tag) or "").strip() for tag in _COORDS]
    values = [parse_decimal(text) for text in texts]
    bad = [f"<{tag}>{text[:20]}" for tag, text, v in zip(_COORDS, texts, values, strict=True) if v is None]
    if bad or not all(v is not None and math.isfinite(v) for v in values):
        shown = ", ".join(bad) or "a coordinate too large to represent"
        report("voc.coordinate_not_numeric", f"object {number} ({name[:50]}): {shown} is not a number")
        return None
    xmin, ymin, xmax, ymax = (v or 0.0 for v in values)
    x0, y0 = xmin - pixel_origin, ymin - pixel_origin
    # Origin 1 is inclusive, so xmin == xmax is one pixel wide and anything less has no area. With origin 0
    # an equal pair is a zero-size box, left to the degenerate-box rule that judges every format alike.
    inverted = xmax <= x0 or ymax <= y0 if pixel_origin == 1 else xmax < x0 or ymax < y0
    if inverted:
        report(
            "voc.coordinate_inverted",
            f"object {number} ({name[:50]}) has xmin {texts[0]}, xmax {texts[2]}, ymin {texts[1]}, ymax "
            f"{texts[3]}: the box is inverted; xmax must not be below xmin, nor ymax below ymin "
            f"(read with pixel origin {pixel_origin})",
        )
        return None
    attributes: dict[str, AttributeValue] = {}
    for flag in _FLAGS:
        text = (element.findtext(flag) or "").strip()
        if not text:
            continue
        value = {"0": 0, "1": 1, "false": 0, "true": 1}.get(text.lower())
        if value is None:
            report(
                "voc.attribute_invalid",
                f"<{flag}>{text[:20]}</{flag}> must be 0 or 1; ignored",
                Severity.WARNING,
            )
            continue
        attributes[flag] = value
    pose = (element.findtext("pose") or "").strip()
    if pose:
        attributes["pose"] = pose
    return VocObject(name, (x0, y0, xmax, ymax), attributes, number, line)


def parse_labelmap(data: bytes, file: str) -> tuple[list[str], list[Issue]]:
    """Read Datumaro/CVAT `labelmap.txt` (`name:color:parts:actions`, `#` comments) into class names."""
    names: list[str] = []
    issues: list[Issue] = []
    for number, raw in enumerate(text_lines(decode_text(data, file)), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name = line.split(":", 1)[0].strip()
        if not name:
            issues.append(
                Issue(Severity.WARNING, "voc.labelmap_invalid", file, "line has no label name", number)
            )
        elif name in names:
            issues.append(
                Issue(Severity.WARNING, "voc.labelmap_duplicate", file, f"{name} is listed twice", number)
            )
        else:
            names.append(name)
    return names, issues


def parse_split_list(data: bytes, file: str) -> list[tuple[str, int]]:
    """Image ids of an `ImageSets/Main/<split>.txt` with their line numbers; blanks and `#` lines skipped."""
    entries: list[tuple[str, int]] = []
    for number, raw in enumerate(text_lines(decode_text(data, file)), start=1):
        fields = raw.split()
        if fields and not fields[0].startswith("#"):
            entries.append((fields[0], number))
    return entries


@dataclass
class _Layout:
    """Where the parts of a VOC upload are, matching folder names case-insensitively."""

    files: list[str]
    annotations: list[str] = field(init=False)
    images_by_stem: dict[str, list[str]] = field(init=False)
    split_lists: list[tuple[str, str]] = field(init=False)  # (file, split or "trainval")
    labelmap: str | None = field(init=False)

    def __post_init__(self) -> None:
        self.annotations = [f for f in self.files if _under(f, "annotations") and f.lower().endswith(".xml")]
        self.images_by_stem = {}
        for path in self.files:
            if _under(path, "jpegimages") and is_image_path(path):
                stem = posixpath.splitext(path.split("/", 1)[1])[0]
                self.images_by_stem.setdefault(stem, []).append(path)
        self.split_lists = []
        for path in self.files:
            parts = path.lower().split("/")
            if len(parts) == 3 and parts[:2] == ["imagesets", "main"] and parts[2].endswith(".txt"):
                stem = parts[2][:-4]
                split = _TRAINVAL if stem == _TRAINVAL else normalize_split(stem)
                if split is not None:
                    self.split_lists.append((path, split))
        self.labelmap = next((f for f in self.files if f.lower() == "labelmap.txt"), None)

    def image_for(self, filename: str | None, stem: str) -> str | None:
        """The JPEGImages file an annotation means: its `<filename>`, else any image with its stem."""
        keys = []
        if filename:
            keys += [posixpath.splitext(posixpath.basename(filename.replace("\\", "/")))[0]]
        keys.append(stem)
        for key in keys:
            found = self.images_by_stem.get(key)
            if found:
                exact = [f for f in found if filename and f.endswith("/" + posixpath.basename(filename))]
                return (exact or found)[0]
        return None


def _under(path: str, folder: str) -> bool:
    head, sep, _ = path.partition("/")
    return bool(sep) and head.lower() == folder


def _read_splits(
    root: Path, layout: _Layout, issues: list[Issue]
) -> tuple[dict[str, str], list[tuple[str, str, int]]]:
    """Image id -> split from ImageSets/Main; `trainval.txt` is used only when there is no train/val list."""
    lists = layout.split_lists
    if any(split != _TRAINVAL for _, split in lists):
        lists = [(path, split) for path, split in lists if split != _TRAINVAL]
    lists = sorted(lists, key=lambda item: split_order(item[1]))
    assigned: dict[str, str] = {}
    entries: list[tuple[str, str, int]] = []
    for path, split in lists:
        try:
            rows = parse_split_list(read_file(root, path), path)
        except LabelParseError as error:
            issues.append(error_issue(error, "file.unreadable"))
            continue
        for image_id, line in rows:
            entries.append((image_id, path, line))
            previous = assigned.setdefault(image_id, split)
            if previous != split:
                issues.append(
                    Issue(
                        Severity.WARNING,
                        "voc.split_conflict",
                        path,
                        f"{image_id} is also listed in {previous}; kept in {previous}",
                        line,
                    )
                )
    if lists and all(split == _TRAINVAL for _, split in lists):
        issues.append(
            Issue(
                Severity.INFO,
                "voc.trainval_only",
                lists[0][0],
                "only trainval.txt is given; its images get no split and are split by the pipeline",
            )
        )
        assigned = {}
    return assigned, entries


def parse(root: Path, *, pixel_origin: VocPixelOrigin = DEFAULT_VOC_PIXEL_ORIGIN) -> ParsedDataset:
    """Parse a Pascal VOC dataset rooted at `root`, devkit or side-by-side, reading `<bndbox>` with
    `pixel_origin`. Per-file problems become issues; nothing here raises."""
    files = list_files(root)
    layout = _Layout(files)
    if not layout.annotations and not layout.images_by_stem and _side_by_side_xml(files):
        return _parse_side_by_side(root, files, pixel_origin)
    issues: list[Issue] = []
    declared = _read_labelmap(root, layout.labelmap, issues)
    splits, split_entries = _read_splits(root, layout, issues)

    parsed: list[_Parsed] = []
    images: dict[str, SourceImage] = {}
    for xml_path in layout.annotations:
        stem = posixpath.splitext(xml_path.split("/", 1)[1])[0]
        try:
            annotation = parse_annotation(read_file(root, xml_path), xml_path, pixel_origin=pixel_origin)
        except LabelParseError as error:
            image = layout.image_for(None, stem)
            issues.append(error_issue(error, "voc.xml_malformed", image=image))
            if image is not None and image not in images:
                images[image] = SourceImage(
                    image, splits.get(stem), LabelState.UNLABELLED, label_file=xml_path
                )
            continue
        image = layout.image_for(annotation.filename, stem)
        if image is None:
            expected = "JPEGImages/" + (annotation.filename or stem + ".jpg")
            issues.append(_image_missing(xml_path, expected))
            continue
        if _claim(images, image, xml_path, splits.get(stem), issues):
            parsed.append(_Parsed(xml_path, image, stem, annotation))

    class_names = _attach_boxes(parsed, images, declared, issues)
    for stem, paths in layout.images_by_stem.items():
        for path in paths:
            if path not in images:
                images[path] = SourceImage(path, splits.get(stem), LabelState.UNLABELLED)
    known = set(layout.images_by_stem) | {
        posixpath.splitext(x.split("/", 1)[1])[0] for x in layout.annotations
    }
    for image_id, path, line in split_entries:
        if image_id not in known:
            issues.append(
                Issue(
                    Severity.WARNING,
                    "voc.split_entry_missing",
                    path,
                    f"lists {image_id[:100]}, which has neither an annotation nor an image",
                    line,
                )
            )
    return ParsedDataset(DatasetFormat.VOC, "voc", class_names, [images[p] for p in sorted(images)], issues)


@dataclass(slots=True)
class _Parsed:
    """An annotation XML that was read, with the image it belongs to and the id it gives that image."""

    xml_path: str
    image: str
    source_id: str
    annotation: VocAnnotation


def _read_labelmap(root: Path, labelmap: str | None, issues: list[Issue]) -> list[str] | None:
    if labelmap is None:
        return None
    try:
        declared, map_issues = parse_labelmap(read_file(root, labelmap), labelmap)
    except LabelParseError as error:
        issues.append(error_issue(error, "file.unreadable"))
        return None
    issues.extend(map_issues)
    return declared


def _image_missing(xml_path: str, expected: str) -> Issue:
    return Issue(
        Severity.ERROR,
        "voc.image_missing",
        xml_path,
        f"annotates {expected}, which is not in the upload; add the image or drop the annotation",
    )


def _claim(
    images: dict[str, SourceImage], image: str, xml_path: str, split: str | None, issues: list[Issue]
) -> bool:
    """Record `image` as annotated by `xml_path`; False (and an error) when another XML claimed it first."""
    if image in images:
        issues.append(
            Issue(
                Severity.ERROR,
                "voc.image_annotated_twice",
                xml_path,
                f"annotates {image}, which {images[image].label_file} annotates already; keep one",
                image=image,
            )
        )
        return False
    images[image] = SourceImage(image, split, LabelState.UNLABELLED, label_file=xml_path)
    return True


def _attach_boxes(
    parsed: list[_Parsed], images: dict[str, SourceImage], declared: list[str] | None, issues: list[Issue]
) -> list[str]:
    """Give each annotated image its boxes and label state; returns the class names, labelmap.txt's when
    there is one, else every name met, sorted (VOC has no other class list)."""
    class_names = (
        declared if declared is not None else sorted({o.name for p in parsed for o in p.annotation.objects})
    )
    class_index = {name: i for i, name in enumerate(class_names)}
    for item in parsed:
        issues.extend(with_image(item.annotation.issues, item.image))
        boxes: list[SourceBox] = []
        for obj in item.annotation.objects:
            if obj.name not in class_index:
                issues.append(
                    Issue(
                        Severity.ERROR,
                        "voc.unknown_class",
                        item.xml_path,
                        f"object {obj.number} has class {obj.name[:50]!r}, which labelmap.txt lacks; "
                        "add it to labelmap.txt or fix the name",
                        obj.line,
                        str(obj.number),
                        item.image,
                    )
                )
                continue
            boxes.append(
                SourceBox(
                    class_index[obj.name],
                    obj.coords,
                    BoxFormat.XYXY_PIXELS,
                    item.xml_path,
                    obj.line,
                    str(obj.number),
                    obj.attributes,
                )
            )
        entry = images[item.image]
        entry.boxes = boxes
        entry.label_state = LabelState.LABELLED if item.annotation.object_count else LabelState.BACKGROUND
        entry.declared_width, entry.declared_height = item.annotation.width, item.annotation.height
        entry.source_id = item.source_id
    return class_names


# --- XML beside its image (Roboflow's "Pascal VOC" export) -------------------------------------------------

_SNIFF_BYTES = 4096
_SNIFF_FILES = 5


def _folder_stem(path: str) -> tuple[str, str]:
    return posixpath.dirname(path), posixpath.splitext(posixpath.basename(path))[0]


def _side_by_side_xml(files: list[str]) -> list[str]:
    """XML files outside `Annotations/` that have an image of the same stem in their own folder."""
    beside = {_folder_stem(f) for f in files if is_image_path(f)}
    return [
        f
        for f in files
        if f.lower().endswith(".xml") and not _under(f, "annotations") and _folder_stem(f) in beside
    ]


def looks_side_by_side(root: Path, files: list[str]) -> bool:
    """True when `files` (relative to `root`) hold VOC XMLs beside their images, at the top or in split
    folders (`train/a.jpg` + `train/a.xml`); reads the start of a few XMLs to be sure they are
    `<annotation>`s. Any other folder is left to the caller's unwrapping, so its labelmap.txt is found."""
    shallow = [
        f
        for f in _side_by_side_xml(files)
        if "/" not in f or (f.count("/") == 1 and normalize_split(f.split("/", 1)[0]) is not None)
    ]
    for xml_path in shallow[:_SNIFF_FILES]:
        try:
            with (root / xml_path).open("rb") as handle:
                if b"<annotation" in handle.read(_SNIFF_BYTES):
                    return True
        except OSError:
            continue
    return False


def _parse_side_by_side(root: Path, files: list[str], pixel_origin: VocPixelOrigin) -> ParsedDataset:
    """Each XML annotates the image of its folder named by its `<filename>` or, failing that, its stem; the
    split is the top folder's name (`train`, `valid`, `test`), none in a flat folder."""
    issues: list[Issue] = []
    labelmap = next((f for f in files if f.lower() == "labelmap.txt"), None)
    declared = _read_labelmap(root, labelmap, issues)
    by_folder_stem: dict[tuple[str, str], list[str]] = {}
    for path in files:
        if is_image_path(path):
            by_folder_stem.setdefault(_folder_stem(path), []).append(path)
    image_set = {p for paths in by_folder_stem.values() for p in paths}

    def split_of(path: str) -> str | None:
        return normalize_split(path.split("/", 1)[0]) if "/" in path else None

    def image_for(xml_path: str, filename: str | None) -> str | None:
        folder, stem = _folder_stem(xml_path)
        named = posixpath.join(folder, posixpath.basename(filename.replace("\\", "/"))) if filename else None
        if named in image_set:
            return named
        found = by_folder_stem.get((folder, stem)) or (
            by_folder_stem.get(_folder_stem(named)) if named else None
        )
        return found[0] if found else None

    parsed: list[_Parsed] = []
    images: dict[str, SourceImage] = {}
    for xml_path in (f for f in files if f.lower().endswith(".xml")):
        stem = _folder_stem(xml_path)[1]
        try:
            annotation = parse_annotation(read_file(root, xml_path), xml_path, pixel_origin=pixel_origin)
        except LabelParseError as error:
            image = image_for(xml_path, None)
            issues.append(error_issue(error, "voc.xml_malformed", image=image))
            if image is not None and image not in images:
                images[image] = SourceImage(
                    image, split_of(image), LabelState.UNLABELLED, label_file=xml_path
                )
            continue
        image = image_for(xml_path, annotation.filename)
        if image is None:
            expected = posixpath.join(
                _folder_stem(xml_path)[0], posixpath.basename(annotation.filename or stem + ".jpg")
            )
            issues.append(_image_missing(xml_path, expected))
            continue
        if _claim(images, image, xml_path, split_of(image), issues):
            parsed.append(_Parsed(xml_path, image, stem, annotation))

    class_names = _attach_boxes(parsed, images, declared, issues)
    for path in sorted(image_set - images.keys()):
        images[path] = SourceImage(path, split_of(path), LabelState.UNLABELLED)
    ordered = [images[p] for p in sorted(images)]
    return ParsedDataset(DatasetFormat.VOC, "voc_side_by_side", class_names, ordered, issues)


def voc_color(index: int) -> tuple[int, int, int]:
    """The standard Pascal VOC palette colour for a label index (bit-interleaved, index 0 is black)."""
    red = green = blue = 0
    for shift in range(8):
        red |= ((index >> (3 * shift)) & 1) << (7 - shift)
        green |= ((index >> (3 * shift + 1)) & 1) << (7 - shift)
        blue |= ((index >> (3 * shift + 2)) & 1) << (7 - shift)
    return red, green, blue


def _number_text(value: float) -> str:
    """An integer when the value is one, else at most 3 decimals: readers that call int() or parse
    `59.999680000000005` badly get what a person would have written, within 0.0005 px."""
    rounded = round(float(value), 3)
    if rounded.is_integer() and abs(rounded) < 1e15:
        return str(int(rounded))
    return f"{rounded:.3f}".rstrip("0").rstrip(".")


def _text(value: object) -> str:
    """XML character data escaped as ElementTree escapes it."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _element(tag: str, value: object) -> str:
    text = str(value)
    return f"<{tag}>{_text(text)}</{tag}>" if text else f"<{tag} />"


def _object_xml(name: str, pose: object, flags: tuple[int, int, int], coords: tuple[str, ...]) -> str:
    """One `<object>` as ElementTree's indent() lays it out, written as text: 20x faster than building the
    tree (the export renders one per box)."""
    truncated, occluded, difficult = flags
    xmin, ymin, xmax, ymax = coords
    return (
        f"  <object>\n    <name>{_text(name)}</name>\n    {_element('pose', pose)}\n"
        f"    <truncated>{truncated}</truncated>\n    <occluded>{occluded}</occluded>\n"
        f"    <difficult>{difficult}</difficult>\n    <bndbox>\n      <xmin>{xmin}</xmin>\n"
        f"      <ymin>{ymin}</ymin>\n      <xmax>{xmax}</xmax>\n      <ymax>{ymax}</ymax>\n"
        "    </bndbox>\n  </object>\n"
    )


def _annotation_xml(image_name: str, width: int, height: int, objects: list[str]) -> bytes:
    """The annotation file, byte for byte what ElementTree would write (a test compares the two)."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<annotation>\n  <folder>JPEGImages</folder>\n'
        f"  <filename>{_text(image_name)}</filename>\n  <size>\n    <width>{width}</width>\n"
        f"    <height>{height}</height>\n    <depth>3</depth>\n  </size>\n  <segmented>0</segmented>\n"
        + "".join(objects)
        + "</annotation>\n"
    ).encode()


def render(
    dataset: CanonicalDataset, *, pixel_origin: VocPixelOrigin = DEFAULT_VOC_PIXEL_ORIGIN
) -> RenderedDataset:
    """Write `Annotations/<stem>.xml`, `JPEGImages/<file>`, `ImageSets/Main/<split>.txt` and `labelmap.txt`.

    Unlabelled images get no XML (VOC's way of saying nobody looked); backgrounds get one with no object.
    `pixel_origin` 0 writes the box's pixel edges, 1 the devkit's 1-based pixels (xmin + 1, ymin + 1).
    """
    check_export_names(dataset, "VOC export", unique_stems_per_split=False)
    for name in dataset.class_names:
        if not name or ":" in name or name.strip() != name or any(ord(c) < 32 for c in name):
            raise ValueError(f"VOC export: class name {name!r} cannot be written to labelmap.txt")
    label_files: dict[str, bytes] = {}
    image_paths: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    for image in sorted(dataset.images, key=lambda im: im.file_name):
        stem = posixpath.splitext(image.file_name)[0]
        image_paths[image.file_name] = f"JPEGImages/{image.file_name}"
        members.setdefault(image.split, []).append(stem)
        if image.label_state is LabelState.UNLABELLED and not image.boxes:
            continue
        objects = []
        for box in image.boxes:
            attributes = box.attributes
            flags = tuple(
                int(bool(attributes.get(flag, 0))) for flag in ("truncated", "occluded", "difficult")
            )
            voc = (box.x_min + pixel_origin, box.y_min + pixel_origin, box.x_max, box.y_max)
            objects.append(
                _object_xml(
                    dataset.class_names[box.class_index],
                    attributes.get("pose", "Unspecified"),
                    flags,  # type: ignore[arg-type]
                    tuple(_number_text(value) for value in voc),
                )
            )
        label_files[f"Annotations/{stem}.xml"] = _annotation_xml(
            image.file_name, image.width, image.height, objects
        )
    for split in sorted(members, key=split_order):
        label_files[f"ImageSets/Main/{split}.txt"] = "".join(f"{stem}\n" for stem in members[split]).encode()
    lines = ["# label:color_rgb:parts:actions\n"]
    for index, name in enumerate(dataset.class_names, start=1):
        red, green, blue = voc_color(index)
        lines.append(f"{name}:{red},{green},{blue}::\n")
    label_files["labelmap.txt"] = "".join(lines).encode()
    return RenderedDataset(dict(sorted(label_files.items())), image_paths)
