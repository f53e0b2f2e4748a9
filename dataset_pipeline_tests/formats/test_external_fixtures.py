"""Datumaro's public test datasets, parsed by our code and checked against values read here independently
(json module, xml.etree, plain text splitting), never through the parsers under test."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from dataset_pipeline.domain.model import (
    SEGMENTATION,
    BoxFormat,
    ClassInfo,
    DatasetFormat,
    FormatDetectionError,
    LabelState,
    ParsedDataset,
    Severity,
)
from dataset_pipeline.formats import detect_format, parse_dataset

DATUMARO = Path(__file__).resolve().parents[2].parent / "shared/fixtures/external/datumaro"

pytestmark = pytest.mark.skipif(not DATUMARO.is_dir(), reason=f"external fixtures not present at {DATUMARO}")


def boxes_by_image(
    parsed: ParsedDataset,
) -> dict[str, list[tuple[str, tuple[float, ...], dict[str, object]]]]:
    return {
        image.path: [(parsed.class_names[b.class_index], b.coords, dict(b.attributes)) for b in image.boxes]
        for image in parsed.images
    }


def errors(parsed: ParsedDataset) -> list[str]:
    return [f"{i.code} {i.location()}" for i in parsed.issues if i.severity is Severity.ERROR]


# --- COCO -------------------------------------------------------------------------------------------------


def test_coco_instances() -> None:
    root = DATUMARO / "coco_dataset/coco_instances"
    assert detect_format(root) is DatasetFormat.COCO
    parsed = parse_dataset(root)
    assert errors(parsed) == []
    expected: dict[str, list[tuple[str, tuple[float, ...], dict[str, object]]]] = {}
    names: list[str] | None = None
    for json_path in sorted((root / "annotations").glob("instances_*.json")):
        split = json_path.stem.removeprefix("instances_")
        document = json.loads(json_path.read_text())
        categories = {c["id"]: c["name"] for c in document["categories"]}
        names = [categories[i] for i in sorted(categories)]
        files = {image["id"]: f"images/{split}/{image['file_name']}" for image in document["images"]}
        for image in document["images"]:
            expected.setdefault(files[image["id"]], [])
        for ann in document["annotations"]:
            x, y, w, h = ann["bbox"]
            attributes = {**ann.get("attributes", {}), "iscrowd": ann["iscrowd"], "area": ann["area"]}
            if ann.get("segmentation"):  # kept as the source wrote it; an empty list is not stored
                attributes[SEGMENTATION] = ann["segmentation"]
            expected[files[ann["image_id"]]].append(
                (categories[ann["category_id"]], (x, y, x + w, y + h), attributes)
            )
    assert parsed.class_names == names == ["a", "b", "c"]
    assert parsed.class_info == [ClassInfo(1, ""), ClassInfo(2, ""), ClassInfo(4, "")]
    assert boxes_by_image(parsed) == expected
    assert {image.path: image.source_id for image in parsed.images} == {
        "images/train/a.jpg": "5",
        "images/val/b.jpg": "40",
    }
    assert {image.path: image.split for image in parsed.images} == {
        "images/train/a.jpg": "train",
        "images/val/b.jpg": "val",
    }
    assert {(i.declared_width, i.declared_height) for i in parsed.images} == {(10, 5), (5, 10)}
    assert all(b.coords_format is BoxFormat.XYXY_PIXELS for i in parsed.images for b in i.boxes)
    # Category ids 1, 2, 4 have a gap: a warning, not an error.
    assert "coco.category_id_gap" in {i.code for i in parsed.issues}


# --- VOC --------------------------------------------------------------------------------------------------


def voc_expected(
    root: Path, pixel_origin: int = 1
) -> dict[str, list[tuple[str, tuple[float, ...], dict[str, object]]]]:
    expected = {}
    for xml_path in sorted((root / "Annotations").glob("*.xml")):
        tree = ET.parse(xml_path).getroot()
        objects = []
        for element in tree.findall("object"):
            box = element.find("bndbox")
            xmin, ymin, xmax, ymax = (float(box.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
            attributes: dict[str, object] = {
                flag: int(element.findtext(flag))
                for flag in ("difficult", "truncated", "occluded")
                if element.find(flag) is not None
            }
            if element.find("pose") is not None:
                attributes["pose"] = element.findtext("pose")
            corner = (xmin - pixel_origin, ymin - pixel_origin)
            objects.append((element.findtext("name"), (*corner, xmax, ymax), attributes))
        expected[f"JPEGImages/{tree.findtext('filename')}"] = objects
    return expected


def test_voc_dataset1() -> None:
    root = DATUMARO / "voc_dataset/voc_dataset1"
    assert detect_format(root) is DatasetFormat.VOC
    as_written = parse_dataset(root)  # origin 0, as Datumaro itself reads VOC: the numbers as written
    image = "JPEGImages/2007_000001.jpg"
    assert boxes_by_image(as_written)[image] == voc_expected(root, pixel_origin=0)[image]
    parsed = parse_dataset(root, voc_pixel_origin=1)
    assert errors(parsed) == []
    expected = voc_expected(root)
    # No labelmap.txt: classes are the names seen, sorted; the <part> head box is not an object.
    assert parsed.class_names == sorted({name for objects in expected.values() for name, *_ in objects})
    found = boxes_by_image(parsed)
    assert found["JPEGImages/2007_000001.jpg"] == expected["JPEGImages/2007_000001.jpg"]
    assert found["JPEGImages/2007_000001.jpg"][0][2] == {
        "difficult": 0,
        "truncated": 1,
        "pose": "Unspecified",
    }
    # ImageSets/Main/test.txt lists an image that has no annotation: unlabelled, in test.
    splits = {line.strip(): "train" for line in (root / "ImageSets/Main/train.txt").read_text().split()}
    splits |= {line.strip(): "test" for line in (root / "ImageSets/Main/test.txt").read_text().split()}
    states = {image.path: (image.split, image.label_state) for image in parsed.images}
    assert states == {
        "JPEGImages/2007_000001.jpg": (splits["2007_000001"], LabelState.LABELLED),
        "JPEGImages/2007_000002.jpg": (splits["2007_000002"], LabelState.UNLABELLED),
    }
    assert {(i.declared_width, i.declared_height) for i in parsed.images if i.label_file} == {(20, 10)}


def test_voc_dataset2_without_images() -> None:
    """Annotations and a labelmap but no JPEGImages/: still VOC, each annotation an image_missing error."""
    root = DATUMARO / "voc_dataset/voc_dataset2"
    assert detect_format(root) is DatasetFormat.VOC
    parsed = parse_dataset(root)
    labelmap = [
        line.split(":", 1)[0]
        for line in (root / "labelmap.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert parsed.class_names == labelmap
    assert parsed.images == []
    xml_files = sorted(p.name for p in (root / "Annotations").glob("*.xml"))
    assert "@.xml" in xml_files
    missing = sorted(Path(i.file).name for i in parsed.issues if i.code == "voc.image_missing")
    assert missing == xml_files
    # The only split list is trainval.txt, which holds no split of its own.
    assert "voc.trainval_only" in {i.code for i in parsed.issues}


def test_voc_dataset3_comment_in_split_list() -> None:
    root = DATUMARO / "voc_dataset/voc_dataset3"
    parsed = parse_dataset(root, voc_pixel_origin=1)
    assert errors(parsed) == [] and [i.code for i in parsed.issues] == []
    assert boxes_by_image(parsed) == voc_expected(root)
    assert [(i.path, i.split) for i in parsed.images] == [("JPEGImages/2007_000001.jpg", "train")]


# --- YOLO -------------------------------------------------------------------------------------------------


def yolo_expected(
    label_file: Path, names: list[str]
) -> list[tuple[str, tuple[float, ...], dict[str, object]]]:
    rows = [line.split() for line in label_file.read_text().splitlines() if line.strip()]
    return [(names[int(row[0])], tuple(float(v) for v in row[1:]), {}) for row in rows]


@pytest.mark.parametrize(
    ("sample", "pairs"),
    [
        ("strict", {"obj_train_data/1.jpg": ("obj_train_data/1.txt", "train")}),
        (
            "labels",
            {
                "images/train/1.jpg": ("labels/train/1.txt", "train"),
                "images/val/1.jpg": ("labels/val/1.txt", "val"),
            },
        ),
        ("annotations", {"Images/1.jpg": ("Annotations/1.txt", None)}),
    ],
)
def test_yolo_samples(sample: str, pairs: dict[str, tuple[str, str | None]]) -> None:
    root = DATUMARO / "yolo_dataset" / sample
    assert detect_format(root) is DatasetFormat.YOLO
    parsed = parse_dataset(root)
    names = [line.strip() for line in (root / "obj.names").read_text().splitlines() if line.strip()]
    assert parsed.class_names == names
    # README.txt beside the data is not mistaken for an orphan label.
    assert parsed.issues == []
    found = boxes_by_image(parsed)
    assert set(found) == set(pairs)
    for image in parsed.images:
        label, split = pairs[image.path]
        assert (image.label_file, image.split, image.label_state) == (label, split, LabelState.LABELLED)
        expected = yolo_expected(root / label, names)
        assert [(n, a) for n, _, a in found[image.path]] == [(n, a) for n, _, a in expected]
        for (_, got, _), (_, want, _) in zip(found[image.path], expected, strict=True):
            assert all(math.isclose(g, w) for g, w in zip(got, want, strict=True))
        assert all(b.coords_format is BoxFormat.CXCYWH_NORMALIZED for b in image.boxes)


def test_whole_fixture_tree_is_not_one_dataset() -> None:
    """Three formats side by side are not a dataset; the error says what was looked for."""
    with pytest.raises(FormatDetectionError, match="looked for"):
        detect_format(DATUMARO)
