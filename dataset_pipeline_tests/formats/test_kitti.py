"""KITTI detection parsing: layouts, label states, kept attributes, and one test per malformed-line rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from dataset_pipeline.domain.model import BoxFormat, DatasetFormat, LabelState, Severity
from dataset_pipeline.formats import detect_format, kitti, parse_dataset
from dataset_pipeline_tests.formats.test_roundtrip import assert_survives_every_writer

CAR = "Car 0.00 1 -1.57 10.5 5.25 60.5 40.00 1.5 1.6 3.9 1.0 1.5 20.0 -1.6\n"
PEDESTRIAN = "Pedestrian 0.50 2 0.20 70 10 90 45 1.7 0.6 0.8 -2.0 1.6 15.0 0.1\n"
DONT_CARE = "DontCare -1 -1 -10 0 0 5 5 -1 -1 -1 -1000 -1000 -1000 -10\n"


def write(root: Path, files: dict[str, bytes | str]) -> Path:
    """Write label text as given; `.png` entries are real images of the size named by their content."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".png"):
            width, height = (int(v) for v in str(content).split("x"))
            Image.new("RGB", (width, height), (90, 120, 150)).save(path)
        else:
            path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def kitti_upload(root: Path) -> Path:
    return write(
        root,
        {
            "training/image_2/000000.png": "100x50",
            "training/label_2/000000.txt": CAR + PEDESTRIAN + DONT_CARE,
            "training/image_2/000001.png": "100x50",
            "training/label_2/000001.txt": "",
            "training/image_2/000002.png": "100x50",
            "testing/image_2/000010.png": "100x50",
            "training/calib/000000.txt": "P0: 1 0 0 0\n",
        },
    )


def test_training_and_testing_layout(tmp_path: Path) -> None:
    root = kitti_upload(tmp_path)
    assert detect_format(root) is DatasetFormat.KITTI
    parsed = parse_dataset(root)
    assert (parsed.format, parsed.layout) == (DatasetFormat.KITTI, "kitti")
    assert parsed.class_names == ["Car", "Pedestrian"]  # sorted; DontCare is not a class
    summary = [(i.path, i.split, i.label_state, i.label_file, i.source_id) for i in parsed.images]
    assert summary == [
        ("testing/image_2/000010.png", "test", LabelState.UNLABELLED, None, None),
        (
            "training/image_2/000000.png",
            "train",
            LabelState.LABELLED,
            "training/label_2/000000.txt",
            "000000",
        ),
        (
            "training/image_2/000001.png",
            "train",
            LabelState.BACKGROUND,
            "training/label_2/000001.txt",
            "000001",
        ),
        ("training/image_2/000002.png", "train", LabelState.UNLABELLED, None, None),
    ]
    car, pedestrian = parsed.images[1].boxes
    assert (car.class_index, car.coords, car.coords_format, car.line) == (
        0,
        (10.5, 5.25, 60.5, 40.0),
        BoxFormat.XYXY_PIXELS,
        1,
    )
    assert car.source_file == "training/label_2/000000.txt"
    assert car.attributes == {kitti.TRUNCATED: 0.0, kitti.OCCLUDED: 1, kitti.ALPHA: -1.57}
    assert (pedestrian.class_index, pedestrian.coords, pedestrian.line) == (1, (70.0, 10.0, 90.0, 45.0), 2)
    assert pedestrian.attributes == {kitti.TRUNCATED: 0.5, kitti.OCCLUDED: 2, kitti.ALPHA: 0.2}
    (info,) = parsed.issues
    assert (info.severity, info.code, info.file) == (
        Severity.INFO,
        "kitti.dont_care_skipped",
        "training/label_2/000000.txt",
    )
    assert "1 DontCare" in info.message


def test_attribute_keys_are_not_the_voc_flags() -> None:
    """A 0.5 truncation or occlusion 3 ("unknown") must not be read as VOC's truncated=1 / occluded=1."""
    assert {kitti.TRUNCATED, kitti.OCCLUDED, kitti.ALPHA}.isdisjoint({"truncated", "occluded", "difficult"})


def test_flat_layout_with_score_column(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "image_2/a.png": "64x48",
            "label_2/a.txt": "Cyclist 0 0 0 1 2 30 40 1 1 1 0 0 0 0 0.87\r\n",
            "label_2/orphan.txt": CAR,
        },
    )
    assert detect_format(tmp_path) is DatasetFormat.KITTI
    parsed = parse_dataset(tmp_path)
    (image,) = parsed.images
    assert (image.path, image.split, image.label_state) == ("image_2/a.png", None, LabelState.LABELLED)
    assert parsed.class_names == ["Cyclist"]
    assert image.boxes[0].coords == (1.0, 2.0, 30.0, 40.0)
    assert [(i.code, i.severity, i.file) for i in parsed.issues] == [
        ("kitti.label_without_image", Severity.WARNING, "label_2/orphan.txt")
    ]


def test_wrapped_kitti_is_found(tmp_path: Path) -> None:
    kitti_upload(tmp_path / "data_object")
    parsed = parse_dataset(tmp_path)
    assert parsed.format is DatasetFormat.KITTI
    assert parsed.images[1].path == "data_object/training/image_2/000000.png"
    assert parsed.issues[0].file == "data_object/training/label_2/000000.txt"


@pytest.mark.parametrize(
    ("line", "code", "needle"),
    [
        ("Car 0 0 0 1 2 3\n", "kitti.field_count", "has 7 fields"),
        ("Car 0 0 0 1 2 3 4 1 1 1 0 0 0 0 0.5 9\n", "kitti.field_count", "has 17 fields"),
        ("Car 0 0 0 1 two 3 4 1 1 1 0 0 0 0\n", "kitti.not_numeric", "top 'two'"),
        ("Car 0 0 nan 1 2 3 4 1 1 1 0 0 0 0\n", "kitti.not_numeric", "alpha 'nan'"),
        ("Car 0 0 0 1 2 3 1e999 1 1 1 0 0 0 0\n", "kitti.not_finite", "infinite"),
        ("Car 0 0 0 50 2 10 4 1 1 1 0 0 0 0\n", "kitti.coordinate_inverted", "right must not be below left"),
    ],
)
def test_bad_line_is_an_error_with_file_and_line(tmp_path: Path, line: str, code: str, needle: str) -> None:
    write(tmp_path, {"image_2/a.png": "64x48", "label_2/a.txt": "\n" + CAR + line})
    parsed = kitti.parse(tmp_path)
    (issue,) = parsed.issues
    assert (issue.severity, issue.code, issue.file, issue.line, issue.image) == (
        Severity.ERROR,
        code,
        "label_2/a.txt",
        3,
        "image_2/a.png",
    )
    assert needle in issue.message
    (image,) = parsed.images
    assert image.label_state is LabelState.LABELLED and len(image.boxes) == 1  # the good line is kept


def test_zero_size_box_is_left_to_validation(tmp_path: Path) -> None:
    write(tmp_path, {"image_2/a.png": "64x48", "label_2/a.txt": "Van 0 0 0 5 5 5 9 1 1 1 0 0 0 0\n"})
    parsed = kitti.parse(tmp_path)
    assert parsed.issues == [] and parsed.images[0].boxes[0].coords == (5.0, 5.0, 5.0, 9.0)


@pytest.mark.parametrize(
    ("truncated", "occluded", "kept"),
    [
        ("1.5", "1", {kitti.OCCLUDED: 1}),
        ("0.25", "4", {kitti.TRUNCATED: 0.25}),
        ("0.25", "1.5", {kitti.TRUNCATED: 0.25}),
    ],
)
def test_out_of_range_attributes_warn_and_are_dropped(
    tmp_path: Path, truncated: str, occluded: str, kept: dict[str, float]
) -> None:
    line = f"Car {truncated} {occluded} 0.5 1 2 3 4 1 1 1 0 0 0 0\n"
    write(tmp_path, {"image_2/a.png": "64x48", "label_2/a.txt": line})
    parsed = kitti.parse(tmp_path)
    assert [(i.code, i.severity, i.line) for i in parsed.issues] == [
        ("kitti.attribute_invalid", Severity.WARNING, 1)
    ]
    assert parsed.images[0].boxes[0].attributes == {kitti.ALPHA: 0.5, **kept}


def test_only_dont_care_is_labelled_without_boxes(tmp_path: Path) -> None:
    write(tmp_path, {"image_2/a.png": "64x48", "label_2/a.txt": DONT_CARE * 2})
    parsed = kitti.parse(tmp_path)
    assert parsed.class_names == []
    assert (parsed.images[0].label_state, parsed.images[0].boxes) == (LabelState.LABELLED, [])
    assert [(i.code, i.severity) for i in parsed.issues] == [("kitti.dont_care_skipped", Severity.INFO)]
    assert "2 DontCare regions in 1 label files" in parsed.issues[0].message


def test_label_that_is_not_utf8_is_an_error_and_the_image_unlabelled(tmp_path: Path) -> None:
    write(tmp_path, {"image_2/a.png": "64x48", "label_2/a.txt": b"Car \xff 0 0 1 2 3 4 1 1 1 0 0 0 0\n"})
    parsed = kitti.parse(tmp_path)
    (issue,) = parsed.issues
    assert (issue.code, issue.file, issue.line, issue.image) == (
        "text.not_utf8",
        "label_2/a.txt",
        1,
        "image_2/a.png",
    )
    assert parsed.images[0].label_state is LabelState.UNLABELLED


def test_same_stem_images_cannot_share_a_label(tmp_path: Path) -> None:
    write(tmp_path, {"image_2/a.png": "64x48", "label_2/a.txt": CAR})
    Image.new("RGB", (64, 48)).save(tmp_path / "image_2/a.jpg")
    parsed = kitti.parse(tmp_path)
    assert [(i.code, i.image) for i in parsed.issues] == [("kitti.label_shared", "image_2/a.png")]
    assert [(i.path, i.label_state) for i in parsed.images] == [
        ("image_2/a.jpg", LabelState.LABELLED),
        ("image_2/a.png", LabelState.UNLABELLED),
    ]


def test_not_kitti_without_both_folders(tmp_path: Path) -> None:
    assert not kitti.looks_like_kitti(["image_2/a.png", "labels/a.txt"])
    assert not kitti.looks_like_kitti(["training/image_2/a.png", "testing/label_2/a.txt"])
    assert kitti.looks_like_kitti(["training/image_2/a.png", "training/label_2/a.txt"])


def test_kitti_survives_every_writer(tmp_path: Path) -> None:
    root = kitti_upload(tmp_path / "upload")
    parsed = parse_dataset(root)
    parsed.images = [i for i in parsed.images if i.split == "train"]  # KITTI's test split has no labels
    dataset = assert_survives_every_writer(parsed, root, tmp_path / "out")
    labelled = next(i for i in dataset.images if i.boxes)
    assert [(b.x_min, b.y_min, b.x_max, b.y_max) for b in labelled.boxes] == [
        (10.5, 5.25, 60.5, 40.0),
        (70.0, 10.0, 90.0, 45.0),
    ]
    # COCO keeps the KITTI attributes under "attributes"; read back they are what KITTI said.
    coco_back = parse_dataset(tmp_path / "out/coco")
    boxes = next(i for i in coco_back.images if i.boxes).boxes
    assert boxes[1].attributes[kitti.TRUNCATED] == 0.5 and boxes[1].attributes[kitti.OCCLUDED] == 2
