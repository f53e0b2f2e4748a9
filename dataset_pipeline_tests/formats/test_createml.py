"""CreateML parsing: Roboflow's per-split layout, a single file at the top, label states, and one test per
malformed-entry rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from dataset_pipeline.domain.model import BoxFormat, DatasetError, DatasetFormat, LabelState, Severity
from dataset_pipeline.formats import coco, createml, detect_format, parse_dataset
from dataset_pipeline_tests.formats.test_roundtrip import assert_survives_every_writer

ANNOTATIONS = "_annotations.createml.json"


def box(label: str, x: float, y: float, width: float, height: float) -> dict[str, Any]:
    return {"label": label, "coordinates": {"x": x, "y": y, "width": width, "height": height}}


def write(root: Path, files: dict[str, Any]) -> Path:
    """`.jpg` entries are real images of the (width, height) given; lists and dicts are written as JSON."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".jpg"):
            Image.new("RGB", content, (40, 80, 120)).save(path)
        elif isinstance(content, list | dict):
            path.write_text(json.dumps(content))
        else:
            path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def roboflow_upload(root: Path) -> Path:
    return write(
        root,
        {
            f"train/{ANNOTATIONS}": [
                {"image": "a.jpg", "annotations": [box("dog", 30, 20, 20, 10), box("cat", 50.5, 25, 9, 7)]},
                {"image": "b.jpg", "annotations": []},
            ],
            "train/a.jpg": (100, 50),
            "train/b.jpg": (100, 50),
            "train/c.jpg": (100, 50),
            f"valid/{ANNOTATIONS}": [{"image": "d.jpg", "annotations": [box("cat", 10, 10, 4, 6)]}],
            "valid/d.jpg": (40, 30),
            "README.roboflow.txt": "exported from roboflow",
        },
    )


def test_roboflow_layout(tmp_path: Path) -> None:
    root = roboflow_upload(tmp_path)
    assert detect_format(root) is DatasetFormat.CREATEML
    parsed = parse_dataset(root)
    assert (parsed.format, parsed.layout) == (DatasetFormat.CREATEML, "createml")
    assert parsed.class_names == ["cat", "dog"]
    summary = [(i.path, i.split, i.label_state, i.label_file) for i in parsed.images]
    assert summary == [
        ("train/a.jpg", "train", LabelState.LABELLED, f"train/{ANNOTATIONS}"),
        ("train/b.jpg", "train", LabelState.BACKGROUND, f"train/{ANNOTATIONS}"),
        ("train/c.jpg", "train", LabelState.UNLABELLED, None),
        ("valid/d.jpg", "val", LabelState.LABELLED, f"valid/{ANNOTATIONS}"),
    ]
    dog, cat = parsed.images[0].boxes
    assert (dog.class_index, dog.coords, dog.coords_format) == (
        1,
        (20.0, 15.0, 40.0, 25.0),
        BoxFormat.XYXY_PIXELS,
    )
    assert (cat.class_index, cat.coords) == (0, (46.0, 21.5, 55.0, 28.5))
    assert (dog.source_file, dog.annotation_id, cat.annotation_id) == (
        f"train/{ANNOTATIONS}",
        "image a.jpg, annotation 1",
        "image a.jpg, annotation 2",
    )
    assert parsed.images[3].boxes[0].coords == (8.0, 7.0, 12.0, 13.0)
    assert [(i.code, i.severity) for i in parsed.issues] == [("createml.images_not_listed", Severity.INFO)]


def test_one_annotations_json_at_the_top(tmp_path: Path) -> None:
    """Not named `.createml.json`: known by its content, a list of images with annotations."""
    write(
        tmp_path,
        {
            "annotations.json": [{"image": "a.jpg", "annotations": [box("cat", 5, 5, 4, 4)]}],
            "images/a.jpg": (20, 20),
        },
    )
    assert detect_format(tmp_path) is DatasetFormat.CREATEML
    parsed = parse_dataset(tmp_path)
    assert [(i.path, i.split, i.label_state) for i in parsed.images] == [
        ("images/a.jpg", None, LabelState.LABELLED)
    ]


def test_split_from_a_top_level_file_name(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "val.createml.json": [{"image": "a.jpg", "annotations": []}],
            "a.jpg": (20, 20),
        },
    )
    parsed = parse_dataset(tmp_path)
    assert [(i.path, i.split, i.label_state) for i in parsed.images] == [
        ("a.jpg", "val", LabelState.BACKGROUND)
    ]


def test_createml_is_not_mistaken_for_coco(tmp_path: Path) -> None:
    """A list that happens to mention every COCO key is still no COCO file, and CreateML is checked first."""
    entries = [{"image": "images", "annotations": [box("categories", 5, 5, 4, 4)]}]
    write(tmp_path, {"data.json": entries, "images/x.jpg": (10, 10)})
    assert not coco.looks_like_coco(tmp_path / "data.json")
    assert createml.looks_like_createml(tmp_path / "data.json")
    assert detect_format(tmp_path) is DatasetFormat.CREATEML


def test_coco_json_is_not_createml(tmp_path: Path) -> None:
    document = {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [], "categories": []}
    write(tmp_path, {"instances.json": document, "a.jpg": (10, 10)})
    assert not createml.looks_like_createml(tmp_path / "instances.json")
    assert detect_format(tmp_path) is DatasetFormat.COCO


FILE = f"train/{ANNOTATIONS}"


def parse_entries(entries: Any, extra: dict[str, Any] | None = None, *, tmp_path: Path) -> Any:
    write(tmp_path, {FILE: entries, "train/a.jpg": (50, 50), "train/b.jpg": (50, 50), **(extra or {})})
    return createml.parse(tmp_path)


@pytest.mark.parametrize(
    ("annotation", "code", "needle"),
    [
        ("cat", "createml.annotation_invalid", "not an object"),
        ({"coordinates": {"x": 1, "y": 1, "width": 1, "height": 1}}, "createml.label_missing", "label"),
        ({"label": " ", "coordinates": {}}, "createml.label_missing", "label"),
        ({"label": "cat"}, "createml.coordinates_invalid", "coordinates null"),
        (box("cat", 1, 1, 0, 2), "createml.size_non_positive", "width 0.0"),
        (box("cat", 1, 1, 2, -2), "createml.size_non_positive", "height -2.0"),
        (box("cat", True, 1, 2, 2), "createml.coordinates_invalid", "x true"),
        (box("cat", "10", 1, 2, 2), "createml.coordinates_invalid", 'x "10"'),
        (
            {"label": "cat", "coordinates": {"x": 1, "y": 1, "width": 2}},
            "createml.coordinates_invalid",
            "height",
        ),
    ],
)
def test_bad_annotation_is_an_error_naming_file_and_entry(
    tmp_path: Path, annotation: Any, code: str, needle: str
) -> None:
    parsed = parse_entries(
        [{"image": "a.jpg", "annotations": [box("dog", 10, 10, 4, 4), annotation]}], tmp_path=tmp_path
    )
    errors = [i for i in parsed.issues if i.severity is Severity.ERROR]
    (issue,) = errors
    assert (issue.code, issue.file, issue.annotation_id, issue.image) == (
        code,
        FILE,
        "image a.jpg, annotation 2",
        "train/a.jpg",
    )
    assert needle in issue.message
    image = parsed.images[0]
    assert (image.label_state, len(image.boxes)) == (LabelState.LABELLED, 1)  # the good box is kept


def test_nan_literal_is_refused(tmp_path: Path) -> None:
    text = '[{"image": "a.jpg", "annotations": [{"label": "cat", "coordinates": {"x": NaN, "y": 1, "width": 2, "height": 2}}]}]'
    parsed = parse_entries(text, tmp_path=tmp_path)
    (issue,) = [i for i in parsed.issues if i.severity is Severity.ERROR]
    assert (issue.code, issue.annotation_id) == ("createml.coordinates_invalid", "image a.jpg, annotation 1")
    assert "x NaN" in issue.message
    assert parsed.images[0].boxes == []


def test_bad_entries_are_errors(tmp_path: Path) -> None:
    entries = [
        "a.jpg",
        {"annotations": []},
        {"image": "ghost.jpg", "annotations": []},
        {"image": "a.jpg", "annotations": {"label": "cat"}},
        {"image": "b.jpg", "annotations": []},
        {"image": "b.jpg", "annotations": [box("cat", 5, 5, 2, 2)]},
    ]
    parsed = parse_entries(entries, tmp_path=tmp_path)
    found = [(i.code, i.file, i.annotation_id, i.image) for i in parsed.issues]
    assert found == [
        ("createml.entry_invalid", FILE, "entry 1", None),
        ("createml.entry_invalid", FILE, "entry 2", None),
        ("createml.image_missing", FILE, "image ghost.jpg", None),
        ("createml.image_listed_twice", FILE, "image b.jpg", "train/b.jpg"),
        ("createml.annotations_invalid", FILE, "image a.jpg", "train/a.jpg"),
    ]
    states = {i.path: (i.label_state, len(i.boxes)) for i in parsed.images}
    assert states == {"train/a.jpg": (LabelState.LABELLED, 0), "train/b.jpg": (LabelState.BACKGROUND, 0)}


def test_invalid_json_gives_the_line(tmp_path: Path) -> None:
    write(tmp_path, {FILE: '[\n{"image": "a.jpg",\n "annotations": [}\n]', "train/a.jpg": (5, 5)})
    with pytest.raises(DatasetError, match=rf"{FILE}:3: is not valid JSON"):
        createml.parse(tmp_path)


def test_one_unreadable_file_of_two_is_an_issue(tmp_path: Path) -> None:
    parsed = parse_entries(
        [{"image": "a.jpg", "annotations": []}],
        {f"valid/{ANNOTATIONS}": {"not": "a list"}, "valid/c.jpg": (5, 5)},
        tmp_path=tmp_path,
    )
    errors = [(i.code, i.file) for i in parsed.issues if i.severity is Severity.ERROR]
    assert errors == [("createml.structure", f"valid/{ANNOTATIONS}")]
    assert [(i.path, i.label_state) for i in parsed.images] == [
        ("train/a.jpg", LabelState.BACKGROUND),
        ("train/b.jpg", LabelState.UNLABELLED),
        ("valid/c.jpg", LabelState.UNLABELLED),
    ]


def test_createml_survives_every_writer(tmp_path: Path) -> None:
    root = roboflow_upload(tmp_path / "upload")
    dataset = assert_survives_every_writer(parse_dataset(root), root, tmp_path / "out")
    a = next(i for i in dataset.images if i.file_name == "a.jpg")
    assert [(b.x_min, b.y_min, b.x_max, b.y_max) for b in a.boxes] == [(20, 15, 40, 25), (46, 21.5, 55, 28.5)]
