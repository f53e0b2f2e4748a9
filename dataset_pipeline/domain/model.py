"""The canonical, format-independent description of a detection dataset.

Parsers in `formats/` turn YOLO, COCO, Pascal VOC, CreateML and KITTI into these objects; validation,
statistics, splitting, augmentation and export only ever see these, so a rule is written once for every
format. No Dagster here.

Coordinates are named by their format, as supervision and albumentations do:
- `xyxy` in pixels: 0-based, continuous (a box covering pixel columns 0..9 is x_min=0, x_max=10);
- `cxcywh_normalized`: YOLO's centre/size divided by the image size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Literal

#: Attribute values kept on a box (VOC difficult/truncated/occluded/pose, COCO iscrowd/area, KITTI
#: truncation/occlusion/alpha, ...). COCO's `segmentation` (polygons or RLE) is kept under the key
#: SEGMENTATION as the JSON the source had; it belongs to the original pixels, so augmented copies drop it.
AttributeValue = bool | int | float | str | list | dict
SEGMENTATION = "segmentation"
#: Attributes measured on the original pixels; a geometric augmentation makes them wrong, so copies drop them.
GEOMETRY_ATTRIBUTES = frozenset({SEGMENTATION, "area"})

#: How VOC `<bndbox>` numbers are read and written. 0: as written, the box's pixel edges (CVAT, Datumaro,
#: torchvision, Roboflow); 1: the devkit's 1-based inclusive pixels, `(xmin - 1, ymin - 1, xmax, ymax)`.
VocPixelOrigin = Literal[0, 1]
DEFAULT_VOC_PIXEL_ORIGIN: VocPixelOrigin = 0

#: The split names the pipeline knows; sources may use others (e.g. "valid"), parsers map them onto these.
SPLITS: tuple[str, ...] = ("train", "val", "test")


class DatasetFormat(StrEnum):
    YOLO = "yolo"
    COCO = "coco"
    VOC = "voc"
    CREATEML = "createml"  # read only: no renderer
    KITTI = "kitti"  # read only: no renderer


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class BoxFormat(StrEnum):
    """How the four numbers of a `SourceBox` are to be read."""

    XYXY_PIXELS = "xyxy"
    CXCYWH_NORMALIZED = "cxcywh_normalized"


class LabelState(StrEnum):
    """YOLO's distinction, applied to every format: a missing label is not the same as an empty one."""

    LABELLED = "labelled"  # has at least one box
    BACKGROUND = "background"  # a label file / entry exists and is empty: the image holds no object
    UNLABELLED = "unlabelled"  # no label file / entry at all: nobody looked at it


@dataclass(frozen=True, slots=True)
class Issue:
    """One finding about the upload, recorded as a `dataset_validations` row.

    `file` is a path relative to the dataset root; `line` (1-based) or `annotation_id` pins it down;
    `image` is the relative path of the image the finding is charged to, so quarantine can exclude it.
    """

    severity: Severity
    code: str
    file: str
    message: str
    line: int | None = None
    annotation_id: str | None = None
    image: str | None = None

    def location(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        if self.annotation_id is not None:
            where += f" (annotation {self.annotation_id})"
        return where


class DatasetError(Exception):
    """An upload that cannot be processed at all (unsafe archive, unknown format). Not retried."""


class FormatDetectionError(DatasetError):
    """No known layout was found; the message says what was looked for."""


class LabelParseError(ValueError):
    """The only exception a label parser may raise on bad input; it names the file and line."""

    def __init__(self, file: str, message: str, line: int | None = None) -> None:
        self.file = file
        self.line = line
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {message}")


@dataclass(slots=True)
class SourceBox:
    """A box as the source wrote it, before the image size is known (YOLO is normalised)."""

    class_index: int  # index into ParsedDataset.class_names
    coords: tuple[float, float, float, float]
    coords_format: BoxFormat
    source_file: str
    line: int | None = None
    annotation_id: str | None = None
    attributes: dict[str, AttributeValue] = field(default_factory=dict)


@dataclass(slots=True)
class SourceImage:
    """An image found in the upload with the labels that refer to it."""

    path: str  # posix path of the image file relative to the dataset root
    split: str | None  # one of SPLITS when the source declared one, else None
    label_state: LabelState
    boxes: list[SourceBox] = field(default_factory=list)
    label_file: str | None = None  # relative path of the file holding its labels
    declared_width: int | None = None  # COCO image width / VOC <size>
    declared_height: int | None = None
    source_id: str | None = None  # COCO image id, VOC annotation file stem


@dataclass(frozen=True, slots=True)
class ClassInfo:
    """What a source says about a class besides its name, kept so exports can give it back."""

    coco_id: int | None = None  # COCO's category id (they have gaps: COCO-2017 uses 1..90 for 80 classes)
    supercategory: str = ""


@dataclass(slots=True)
class ParsedDataset:
    """What a parser read from one upload: classes, images with their boxes, and every problem met."""

    format: DatasetFormat
    layout: str  # e.g. "ultralytics", "darknet", "coco", "voc"
    class_names: list[str]
    images: list[SourceImage]
    issues: list[Issue] = field(default_factory=list)
    #: Aligned with class_names when the source declares more than names (COCO); empty otherwise.
    class_info: list[ClassInfo] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Box:
    """A validated box in pixels of the upright (EXIF-applied) image."""

    class_index: int
    x_min: float
    y_min: float
    x_max: float
    y_max: float
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)

    @property
    def width(self) -> float:
        return self.x_max - self.x_min

    @property
    def height(self) -> float:
        return self.y_max - self.y_min


@dataclass(slots=True)
class CanonicalImage:
    """A validated image ready for splitting, augmentation and export.

    `file_name` is the unique name it gets inside an export (no folders); `source_path` is where its bytes
    are on disk. Width and height are of the upright image; exported bytes are upright with no EXIF rotation.
    `source_id` is the id the upload gave it (a COCO image id), kept by writers that have ids.
    """

    file_name: str
    source_path: Path
    width: int
    height: int
    split: str
    boxes: list[Box]
    label_state: LabelState = LabelState.LABELLED
    source_id: str | None = None


@dataclass(slots=True)
class CanonicalDataset:
    class_names: list[str]
    images: list[CanonicalImage]
    #: Aligned with class_names when the upload declared COCO category ids; empty: ids 1..K in class order.
    class_info: list[ClassInfo] = field(default_factory=list)


@dataclass(slots=True)
class RenderedDataset:
    """A format writer's output: label/annotation files as bytes, and where each image goes in the archive.

    Writers do no I/O so exports can stream images straight into a zip and tests can inspect the text.
    """

    label_files: dict[str, bytes]  # archive path -> content (data.yaml, instances_train.json, xml, txt, ...)
    image_paths: dict[str, str]  # CanonicalImage.file_name -> archive path of the image


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What the image check learned from an image's bytes; computed in a process pool, stored in `images`."""

    path: str  # posix path relative to the dataset root
    sha256: str
    size_bytes: int
    format: str | None  # Pillow's format name ("JPEG", "PNG", ...), None when it does not decode at all
    width: int  # upright, after EXIF orientation; 0 when unknown
    height: int
    mode: str | None  # Pillow mode of the file ("RGB", "L", "CMYK", "I;16", "P", "RGBA", ...)
    exif_orientation: int  # 1 when absent
    dhash: int | None  # 64-bit difference hash as a signed int64 (fits PostgreSQL bigint)
    issues: tuple[Issue, ...] = ()

    @property
    def usable(self) -> bool:
        return not any(issue.severity is Severity.ERROR for issue in self.issues)
