"""COCO parsing and writing: layouts, and one test per malformed-annotation rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dataset_pipeline.domain.model import (
    SEGMENTATION,
    Box,
    BoxFormat,
    CanonicalDataset,
    CanonicalImage,
    ClassInfo,
    DatasetError,
    LabelParseError,
    LabelState,
    Severity,
)
from dataset_pipeline.formats import coco


def write(root: Path, files: dict[str, bytes | str]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def doc(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 50}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 5, 20, 10], "iscrowd": 0}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    base.update(overrides)
    return base


def parse_doc(document: dict[str, Any] | str) -> coco.CocoInstances:
    text = document if isinstance(document, str) else json.dumps(document)
    return coco.parse_instances(text.encode(), FILE)


FILE = "annotations/instances_train.json"
#: Codes about one annotation: the issue must name it, since a JSON file has no useful line numbers.
ANNOTATION_CODES = frozenset(
    {
        "coco.annotation_id_invalid",
        "coco.duplicate_annotation_id",
        "coco.dangling_image_id",
        "coco.dangling_category_id",
        "coco.bbox_not_list",
        "coco.bbox_length",
        "coco.not_finite",
        "coco.bbox_not_numeric",
        "coco.bbox_non_positive",
        "coco.iscrowd_invalid",
        "coco.segmentation_invalid",
        "coco.area_invalid",
    }
)


def all_codes(instances: coco.CocoInstances) -> list[str]:
    """Every issue's code; each issue must name the file, and the annotation when it is about one."""
    issues = instances.issues + [i for e in instances.images for i in e.issues]
    for issue in issues:
        assert issue.file == FILE and issue.message
        if issue.code in ANNOTATION_CODES:
            assert issue.annotation_id is not None, issue
    return [i.code for i in issues]


def test_valid_instances_give_xyxy_boxes() -> None:
    parsed = parse_doc(doc())
    assert all_codes(parsed) == []
    assert parsed.class_names == ["cat", "dog"]
    (image,) = parsed.images
    assert (image.file_name, image.width, image.height) == ("a.jpg", 100, 50)
    (box,) = image.boxes
    assert box.coords == (10.0, 5.0, 30.0, 15.0)
    assert box.coords_format is BoxFormat.XYXY_PIXELS
    assert box.attributes == {"iscrowd": 0}
    assert box.annotation_id == "1"


def test_class_names_follow_category_id_order_with_gap_warning() -> None:
    parsed = parse_doc(
        doc(categories=[{"id": 5, "name": "z"}, {"id": 1, "name": "cat"}, {"id": 3, "name": "m"}])
    )
    assert parsed.class_names == ["cat", "m", "z"]
    assert parsed.category_ids == [1, 3, 5]
    assert parsed.images[0].boxes[0].class_index == 0
    assert [i.code for i in parsed.issues] == ["coco.category_id_gap"]
    assert parsed.issues[0].severity is Severity.WARNING


def test_category_id_zero_warns() -> None:
    parsed = parse_doc(doc(categories=[{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}]))
    assert [(i.code, i.severity) for i in parsed.issues] == [("coco.category_id_zero", Severity.WARNING)]


def test_duplicate_category_id_is_an_error() -> None:
    parsed = parse_doc(doc(categories=[{"id": 1, "name": "cat"}, {"id": 1, "name": "dog"}]))
    assert all_codes(parsed) == ["coco.duplicate_category_id"]
    assert parsed.issues[0].severity is Severity.ERROR
    assert parsed.class_names == ["cat"]


def test_duplicate_image_id_is_an_error() -> None:
    images = [{"id": 1, "file_name": "a.jpg", "width": 1, "height": 1}, {"id": 1, "file_name": "b.jpg"}]
    parsed = parse_doc(doc(images=images))
    assert all_codes(parsed) == ["coco.duplicate_image_id"]
    (issue,) = parsed.images[0].issues  # charged to the image that keeps the id, so quarantine can find it
    assert issue.severity is Severity.ERROR and "a.jpg" in issue.message and "b.jpg" in issue.message
    assert [e.file_name for e in parsed.images] == ["a.jpg"]


def test_duplicate_annotation_id_is_an_error() -> None:
    ann = {"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]}
    parsed = parse_doc(doc(annotations=[ann, dict(ann, bbox=[5, 5, 2, 2])]))
    assert all_codes(parsed) == ["coco.duplicate_annotation_id"]
    (issue,) = parsed.images[0].issues
    assert (issue.code, issue.annotation_id) == ("coco.duplicate_annotation_id", "7")


def test_dangling_image_id_is_an_error() -> None:
    parsed = parse_doc(doc(annotations=[{"id": 1, "image_id": 99, "category_id": 1, "bbox": [1, 1, 2, 2]}]))
    assert all_codes(parsed) == ["coco.dangling_image_id"]
    assert [(i.code, i.annotation_id) for i in parsed.issues] == [("coco.dangling_image_id", "1")]
    assert parsed.images[0].boxes == []


def test_dangling_category_id_is_an_error() -> None:
    parsed = parse_doc(doc(annotations=[{"id": 1, "image_id": 1, "category_id": 9, "bbox": [1, 1, 2, 2]}]))
    assert all_codes(parsed) == ["coco.dangling_category_id"]
    (issue,) = parsed.images[0].issues
    assert (issue.severity, issue.annotation_id) == (Severity.ERROR, "1")
    assert parsed.images[0].boxes == []


@pytest.mark.parametrize("bbox", [[1, 1, 0, 5], [1, 1, 5, -2]])
def test_non_positive_bbox_size_is_an_error(bbox: list[float]) -> None:
    parsed = parse_doc(doc(annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": bbox}]))
    assert all_codes(parsed) == ["coco.bbox_non_positive"]


@pytest.mark.parametrize(("width", "height"), [(0, 50), (100, -5), ("100", 50), (10.5, 50)])
def test_invalid_image_size_is_an_error(width: object, height: object) -> None:
    parsed = parse_doc(doc(images=[{"id": 1, "file_name": "a.jpg", "width": width, "height": height}]))
    assert all_codes(parsed) == ["coco.image_size_invalid"]
    assert parsed.images[0].width is None


def test_nan_and_infinity_literals_are_detected() -> None:
    text = json.dumps(doc()).replace("[10, 5, 20, 10]", "[NaN, 5, Infinity, 10]")
    assert all_codes(parse_doc(text)) == ["coco.not_finite"]
    text = json.dumps(doc()).replace('"width": 100', '"width": -Infinity')
    assert all_codes(parse_doc(text)) == ["coco.image_size_invalid"]


@pytest.mark.parametrize(
    ("needle", "replacement", "code"),
    [
        ('"bbox": [10, 5, 20, 10]', '"bbox": [10, 5, 20, NaN]', "coco.not_finite"),
        ('"height": 50', '"height": NaN', "coco.image_size_invalid"),
        ('"images": [{"id": 1,', '"images": [{"id": NaN,', "coco.image_invalid"),
        ('{"id": 2, "name": "dog"}', '{"id": NaN, "name": "dog"}', "coco.category_invalid"),
        ('"annotations": [{"id": 1,', '"annotations": [{"id": NaN,', "coco.annotation_id_invalid"),
        ('"image_id": 1', '"image_id": NaN', "coco.dangling_image_id"),
        ('"category_id": 1', '"category_id": NaN', "coco.dangling_category_id"),
        ('"iscrowd": 0', '"iscrowd": NaN', "coco.iscrowd_invalid"),
    ],
)
def test_nan_in_any_field_is_reported_not_used(needle: str, replacement: str, code: str) -> None:
    text = json.dumps(doc())
    assert needle in text
    assert code in all_codes(parse_doc(text.replace(needle, replacement)))


@pytest.mark.parametrize("crowd", [True, 1])
def test_iscrowd_true_and_one_mark_the_box_as_a_crowd(crowd: object) -> None:
    parsed = parse_doc(
        doc(annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], "iscrowd": crowd}])
    )
    assert all_codes(parsed) == []
    assert parsed.images[0].boxes[0].attributes["iscrowd"] == 1


def test_overflowing_number_is_not_finite() -> None:
    text = json.dumps(doc()).replace("[10, 5, 20, 10]", "[1e400, 5, 20, 10]")
    assert all_codes(parse_doc(text)) == ["coco.not_finite"]


def test_non_numeric_bbox_is_an_error() -> None:
    parsed = parse_doc(doc(annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": ["1", 1, 2, 2]}]))
    assert all_codes(parsed) == ["coco.bbox_not_numeric"]
    parsed = parse_doc(doc(annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": [True, 1, 2, 2]}]))
    assert all_codes(parsed) == ["coco.bbox_not_numeric"]


def test_bbox_of_wrong_length_or_type_is_an_error() -> None:
    parsed = parse_doc(doc(annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2]}]))
    assert all_codes(parsed) == ["coco.bbox_length"]
    parsed = parse_doc(doc(annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": "1 1 2 2"}]))
    assert all_codes(parsed) == ["coco.bbox_not_list"]


def test_iscrowd_is_kept_as_attribute() -> None:
    parsed = parse_doc(
        doc(annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], "iscrowd": 1}])
    )
    assert parsed.images[0].boxes[0].attributes["iscrowd"] == 1
    parsed = parse_doc(
        doc(annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], "iscrowd": 3}])
    )
    assert all_codes(parsed) == ["coco.iscrowd_invalid"]
    assert parsed.images[0].boxes[0].attributes["iscrowd"] == 0


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '{"images": [], "categories": []}',
        '{"images": {}, "annotations": [], "categories": []}',
        '{"images": [',
        "",
        "[" * 100_000,
    ],
)
def test_not_an_instances_file_raises_label_parse_error(text: str) -> None:
    with pytest.raises(LabelParseError):
        parse_doc(text)


def test_invalid_json_reports_line() -> None:
    with pytest.raises(LabelParseError) as caught:
        parse_doc('{\n"images": [\n}')
    assert caught.value.line == 3


# --- layouts ----------------------------------------------------------------------------------------------


def test_standard_layout(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "annotations/instances_train2017.json": json.dumps(
                doc(
                    images=[
                        {"id": 1, "file_name": "a.jpg", "width": 100, "height": 50},
                        {"id": 2, "file_name": "b.jpg"},
                    ]
                )
            ),
            "annotations/instances_val2017.json": json.dumps(doc(images=[], annotations=[])),
            "train2017/a.jpg": b"x",
            "train2017/b.jpg": b"x",
            "val2017/c.jpg": b"x",
        },
    )
    parsed = coco.parse(tmp_path)
    assert parsed.class_names == ["cat", "dog"]
    summary = [(i.path, i.split, i.label_state, i.declared_width, i.source_id) for i in parsed.images]
    assert summary == [
        ("train2017/a.jpg", "train", LabelState.LABELLED, 100, "1"),
        ("train2017/b.jpg", "train", LabelState.BACKGROUND, None, "2"),
        ("val2017/c.jpg", "val", LabelState.UNLABELLED, None, None),
    ]
    assert parsed.images[0].label_file == "annotations/instances_train2017.json"
    assert {i.code for i in parsed.issues} == {"coco.image_size_missing", "coco.images_not_listed"}


def test_roboflow_layout_takes_split_from_folder(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "train/_annotations.coco.json": json.dumps(doc()),
            "train/a.jpg": b"x",
            "valid/_annotations.coco.json": json.dumps(
                doc(images=[{"id": 3, "file_name": "v.jpg"}], annotations=[])
            ),
            "valid/v.jpg": b"x",
        },
    )
    parsed = coco.parse(tmp_path)
    assert [(i.path, i.split) for i in parsed.images] == [("train/a.jpg", "train"), ("valid/v.jpg", "val")]


def test_listed_image_without_file_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, {"annotations/instances_train.json": json.dumps(doc())})
    parsed = coco.parse(tmp_path)
    assert parsed.images == []
    (issue,) = parsed.issues
    assert (issue.code, issue.severity) == ("coco.image_missing", Severity.ERROR)
    assert "a.jpg" in issue.message


def test_issues_are_charged_to_the_image(tmp_path: Path) -> None:
    bad = {"id": 4, "image_id": 1, "category_id": 1, "bbox": [1, 1, 0, 2]}
    write(
        tmp_path,
        {"annotations/instances_train.json": json.dumps(doc(annotations=[bad])), "images/train/a.jpg": b"x"},
    )
    (issue,) = coco.parse(tmp_path).issues
    assert (issue.image, issue.annotation_id, issue.file) == (
        "images/train/a.jpg",
        "4",
        "annotations/instances_train.json",
    )


def test_unreadable_only_json_is_a_dataset_error(tmp_path: Path) -> None:
    write(tmp_path, {"instances_train.json": '{"images": [], "annotations": [], "categories": [}'})
    with pytest.raises(DatasetError, match=r"instances_train\.json"):
        coco.parse(tmp_path)


def test_other_json_files_are_skipped_when_instances_exist(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "annotations/instances_train.json": json.dumps(doc()),
            "annotations/person_keypoints_train.json": json.dumps(doc()),
            "images/train/a.jpg": b"x",
        },
    )
    parsed = coco.parse(tmp_path)
    assert [i.code for i in parsed.issues] == ["coco.json_skipped"]
    assert len(parsed.images[0].boxes) == 1


def test_files_with_different_categories_are_matched_by_name(tmp_path: Path) -> None:
    val = doc(
        images=[{"id": 1, "file_name": "b.jpg", "width": 9, "height": 9}],
        annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]}],
        categories=[{"id": 1, "name": "dog"}],
    )
    write(
        tmp_path,
        {
            "annotations/instances_train.json": json.dumps(doc()),
            "annotations/instances_val.json": json.dumps(val),
            "images/train/a.jpg": b"x",
            "images/val/b.jpg": b"x",
        },
    )
    parsed = coco.parse(tmp_path)
    assert parsed.class_names == ["cat", "dog"]
    assert parsed.images[1].boxes[0].class_index == 1
    assert [(i.code, i.severity, i.file) for i in parsed.issues] == [
        ("coco.categories_differ", Severity.WARNING, "annotations/instances_val.json")
    ]
    # val.json calls dog 1; the class keeps the id the first file gave it.
    assert parsed.class_info == [ClassInfo(1, ""), ClassInfo(2, "")]


def test_category_ids_and_supercategories_are_kept(tmp_path: Path) -> None:
    categories = [
        {"id": 18, "name": "dog", "supercategory": "animal"},
        {"id": 3, "name": "car", "supercategory": " vehicle "},
        {"id": 7, "name": "thing"},
        {"id": 9, "name": "odd", "supercategory": 5},
    ]
    annotations = [{"id": 1, "image_id": 42, "category_id": 18, "bbox": [1, 1, 2, 2]}]
    images = [{"id": 42, "file_name": "a.jpg", "width": 9, "height": 9}]
    document = doc(images=images, annotations=annotations, categories=categories)
    write(tmp_path, {"annotations/instances_train.json": json.dumps(document), "images/train/a.jpg": b"x"})
    parsed = coco.parse(tmp_path)
    assert parsed.class_names == ["car", "thing", "odd", "dog"]  # category-id order
    assert parsed.class_info == [
        ClassInfo(3, "vehicle"),
        ClassInfo(7, ""),
        ClassInfo(9, ""),
        ClassInfo(18, "animal"),
    ]
    (image,) = parsed.images
    assert (image.source_id, image.boxes[0].class_index) == ("42", 3)
    warnings = [(i.code, i.severity) for i in parsed.issues if i.code == "coco.supercategory_invalid"]
    assert warnings == [("coco.supercategory_invalid", Severity.WARNING)]


def test_area_is_kept_as_written() -> None:
    """A polygon's or a crowd's area is not its box's, so the source's is kept for the export to give back."""
    annotation = {"id": 3, "image_id": 1, "category_id": 1, "bbox": [1, 1, 20, 10], "area": 150}
    parsed = parse_doc(doc(annotations=[annotation]))
    assert all_codes(parsed) == []
    assert parsed.images[0].boxes[0].attributes == {"iscrowd": 0, "area": 150.0}


@pytest.mark.parametrize("area", [-1, "150", True, [150]])
def test_invalid_area_warns_and_is_dropped(area: object) -> None:
    annotation = {"id": 3, "image_id": 1, "category_id": 1, "bbox": [1, 1, 20, 10], "area": area}
    parsed = parse_doc(doc(annotations=[annotation]))
    (issue,) = parsed.images[0].issues
    assert (issue.code, issue.severity, issue.annotation_id) == ("coco.area_invalid", Severity.WARNING, "3")
    assert parsed.images[0].boxes[0].attributes == {"iscrowd": 0}


def _with_segmentation(segmentation: object) -> coco.CocoInstances:
    annotation = {
        "id": 7,
        "image_id": 1,
        "category_id": 1,
        "bbox": [1, 1, 2, 2],
        "segmentation": segmentation,
    }
    return parse_doc(doc(annotations=[annotation]))


@pytest.mark.parametrize(
    "segmentation",
    [
        [[1, 1, 3, 1, 3, 3]],
        [[1.5, 1, 3, 1, 3, 3, 1, 3], [0, 0, 1, 0, 1, 1]],
        {"counts": [0, 4, 96], "size": [10, 10]},
        {"counts": "PPb04", "size": [10, 10]},
    ],
)
def test_valid_segmentation_is_kept_as_written(segmentation: object) -> None:
    parsed = _with_segmentation(segmentation)
    assert all_codes(parsed) == []
    assert parsed.images[0].boxes[0].attributes == {"iscrowd": 0, SEGMENTATION: segmentation}


def test_empty_or_missing_segmentation_is_not_stored() -> None:
    assert _with_segmentation([]).images[0].boxes[0].attributes == {"iscrowd": 0}
    assert parse_doc(doc()).images[0].boxes[0].attributes == {"iscrowd": 0}


@pytest.mark.parametrize(
    ("segmentation", "needle"),
    [
        ([[1, 1, 3, 1]], "polygon 1 has 4 numbers"),
        ([[1, 1, 3, 1, 3, 3], [1, 1, 3, 1, 3, 3, 4]], "polygon 2 has 7 numbers"),
        ([[1, 1, "3", 1, 3, 3]], "polygon 1 must be a list of finite numbers"),
        ([[1, 1, True, 1, 3, 3]], "polygon 1 must be a list of finite numbers"),
        ([1, 1, 3, 1, 3, 3], "polygon 1 must be a list"),
        ({"counts": [0, 4], "size": [10]}, "RLE size"),
        ({"counts": [0, -4], "size": [10, 10]}, "RLE counts"),
        ({"size": [10, 10]}, "RLE counts"),
        ("polygon", "neither a list of polygons nor an RLE object"),
    ],
)
def test_invalid_segmentation_warns_and_is_dropped(segmentation: object, needle: str) -> None:
    parsed = _with_segmentation(segmentation)
    (issue,) = parsed.images[0].issues
    assert (issue.code, issue.severity, issue.file, issue.annotation_id) == (
        "coco.segmentation_invalid",
        Severity.WARNING,
        FILE,
        "7",
    )
    assert needle in issue.message
    (box,) = parsed.images[0].boxes  # the box itself is kept
    assert SEGMENTATION not in box.attributes


def test_nan_in_a_polygon_is_an_invalid_segmentation() -> None:
    text = json.dumps(doc(annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]}]))
    text = text.replace('"bbox"', '"segmentation": [[1, NaN, 3, 1, 3, 3]], "bbox"')
    parsed = parse_doc(text)
    assert all_codes(parsed) == ["coco.segmentation_invalid"]


def test_a_json_list_is_never_coco(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps([{"images": [], "annotations": [], "categories": []}]))
    (tmp_path / "b.json").write_bytes(b"\xef\xbb\xbf  \n" + json.dumps(doc()).encode())
    assert not coco.looks_like_coco(tmp_path / "a.json")
    assert coco.looks_like_coco(tmp_path / "b.json")


# --- render -----------------------------------------------------------------------------------------------


def _dataset() -> CanonicalDataset:
    crowd = Box(0, 1.5, 2.0, 11.5, 7.0, {"iscrowd": 1, "note": "x"})
    return CanonicalDataset(
        ["cat", "dog"],
        [
            CanonicalImage("z.jpg", Path("/s/z.jpg"), 40, 30, "train", [Box(1, 0, 0, 10, 10), crowd]),
            CanonicalImage("a.jpg", Path("/s/a.jpg"), 40, 30, "train", [], LabelState.BACKGROUND),
            CanonicalImage("u.jpg", Path("/s/u.jpg"), 40, 30, "val", [], LabelState.UNLABELLED),
        ],
    )


def test_render_writes_instances_per_split() -> None:
    rendered = coco.render(_dataset())
    assert sorted(rendered.label_files) == [
        "annotations/instances_train.json",
        "annotations/instances_val.json",
    ]
    train = json.loads(rendered.label_files["annotations/instances_train.json"])
    assert train["categories"] == [
        {"id": 1, "name": "cat", "supercategory": ""},
        {"id": 2, "name": "dog", "supercategory": ""},
    ]
    assert [(i["id"], i["file_name"]) for i in train["images"]] == [(1, "a.jpg"), (2, "z.jpg")]
    assert [
        (a["id"], a["image_id"], a["category_id"], a["bbox"], a["iscrowd"]) for a in train["annotations"]
    ] == [
        (1, 2, 2, [0, 0, 10, 10], 0),
        (2, 2, 1, [1.5, 2.0, 10.0, 5.0], 1),
    ]
    assert train["annotations"][1]["area"] == 50.0
    assert train["annotations"][1]["attributes"] == {"note": "x"}
    val = json.loads(rendered.label_files["annotations/instances_val.json"])
    assert val["images"] == []
    assert rendered.image_paths["u.jpg"] == "images/val/u.jpg"


def test_render_is_byte_identical() -> None:
    reordered = _dataset()
    reordered.images.reverse()
    assert coco.render(_dataset()) == coco.render(reordered)


def test_file_name_cannot_reach_outside_the_upload(tmp_path: Path) -> None:
    (tmp_path / "secret.jpg").write_bytes(b"outside")
    root = write(tmp_path / "upload", {"annotations/instances_train.json": json.dumps(doc())})
    document = doc(images=[{"id": 1, "file_name": "../../secret.jpg", "width": 1, "height": 1}])
    (root / "annotations/instances_train.json").write_text(json.dumps(document))
    parsed = coco.parse(root)
    assert parsed.images == []
    assert [i.code for i in parsed.issues] == ["coco.image_missing"]
