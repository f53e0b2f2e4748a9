"""Format detection: markers of each format, wrapping folders, archive junk, and a helpful failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataset_pipeline.domain.model import DatasetFormat, FormatDetectionError
from dataset_pipeline.formats import detect_format, locate_dataset, parse_dataset

COCO_JSON = json.dumps(
    {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2]}],
        "categories": [{"id": 1, "name": "cat"}],
    }
)
LAYOUTS: dict[DatasetFormat, dict[str, str]] = {
    DatasetFormat.YOLO: {
        "data.yaml": "names: [cat]\n",
        "images/a.jpg": "x",
        "labels/a.txt": "0 0.5 0.5 0.5 0.5\n",
    },
    DatasetFormat.COCO: {"annotations/instances_train.json": COCO_JSON, "images/train/a.jpg": "x"},
    DatasetFormat.VOC: {"Annotations/a.xml": "<annotation/>", "JPEGImages/a.jpg": "x"},
    DatasetFormat.CREATEML: {
        "train/_annotations.createml.json": json.dumps([{"image": "a.jpg", "annotations": []}]),
        "train/a.jpg": "x",
    },
    DatasetFormat.KITTI: {
        "training/image_2/000000.png": "x",
        "training/label_2/000000.txt": "Car 0 0 0 1 2 3 4 1 1 1 0 0 0 0\n",
    },
}


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


@pytest.mark.parametrize("fmt", list(DatasetFormat))
def test_each_format_is_detected(tmp_path: Path, fmt: DatasetFormat) -> None:
    assert detect_format(write(tmp_path, LAYOUTS[fmt])) is fmt


@pytest.mark.parametrize(
    "files",
    [
        {"obj.names": "cat\n", "obj_train_data/a.jpg": "x", "obj_train_data/a.txt": ""},
        {"classes.txt": "cat\n", "images/a.jpg": "x", "labels/a.txt": ""},
        {"obj.data": "names = obj.names\n", "obj.names": "cat\n", "x/a.jpg": "x", "x/a.txt": ""},
        {"coco8.yaml": "path: ../datasets/coco8\nnames:\n  0: person\n", "images/a.jpg": "x"},
    ],
)
def test_yolo_markers(tmp_path: Path, files: dict[str, str]) -> None:
    assert detect_format(write(tmp_path, files)) is DatasetFormat.YOLO


@pytest.mark.parametrize(
    ("files", "fmt"),
    [
        (  # Ultralytics with one images/ and labels/ folder per split
            {
                "data.yaml": "names: [cat]\ntrain: images/train\nval: images/val\n",
                "images/train/a.jpg": "x",
                "labels/train/a.txt": "0 0.5 0.5 0.5 0.5\n",
                "images/val/b.jpg": "x",
                "labels/val/b.txt": "",
            },
            DatasetFormat.YOLO,
        ),
        (  # COCO: one instances JSON per split
            {
                "annotations/instances_train.json": COCO_JSON,
                "annotations/instances_val.json": COCO_JSON,
                "images/train/a.jpg": "x",
                "images/val/a.jpg": "x",
            },
            DatasetFormat.COCO,
        ),
        (  # VOC known by its split lists, before any annotation is written
            {"ImageSets/Main/train.txt": "a\n", "JPEGImages/a.jpg": "x"},
            DatasetFormat.VOC,
        ),
        (  # VOC (Datumaro/CVAT) known by labelmap.txt
            {"labelmap.txt": "cat:0,0,0::\n", "JPEGImages/a.jpg": "x"},
            DatasetFormat.VOC,
        ),
        (  # VOC with each XML beside its image, per split (Roboflow)
            {"train/a.jpg": "x", "train/a.xml": "<annotation/>", "valid/b.jpg": "x"},
            DatasetFormat.VOC,
        ),
        (  # VOC with each XML beside its image, one flat folder
            {"a.jpg": "x", "a.xml": '<?xml version="1.0"?>\n<annotation/>'},
            DatasetFormat.VOC,
        ),
        (  # CreateML: one list at the top, not named .createml.json
            {"annotations.json": json.dumps([{"image": "a.jpg", "annotations": []}]), "a.jpg": "x"},
            DatasetFormat.CREATEML,
        ),
        (  # CreateML beside a COCO file: the list is not taken for COCO
            {"data.createml.json": "[]", "instances.json": COCO_JSON, "a.jpg": "x"},
            DatasetFormat.CREATEML,
        ),
        (  # KITTI without training/ and testing/
            {"image_2/a.png": "x", "label_2/a.txt": ""},
            DatasetFormat.KITTI,
        ),
    ],
)
def test_per_split_layouts(tmp_path: Path, files: dict[str, str], fmt: DatasetFormat) -> None:
    assert detect_format(write(tmp_path, files)) is fmt


def test_per_split_layouts_keep_their_splits(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "annotations/instances_train.json": COCO_JSON,
            "annotations/instances_val.json": COCO_JSON,
            "images/train/a.jpg": "x",
            "images/val/a.jpg": "x",
        },
    )
    assert [(i.path, i.split) for i in parse_dataset(tmp_path).images] == [
        ("images/train/a.jpg", "train"),
        ("images/val/a.jpg", "val"),
    ]


def test_roboflow_coco_json_one_level_down(tmp_path: Path) -> None:
    write(tmp_path, {"train/_annotations.coco.json": COCO_JSON, "train/a.jpg": "x"})
    assert detect_format(tmp_path) is DatasetFormat.COCO


def test_voc_without_images_is_still_voc(tmp_path: Path) -> None:
    write(tmp_path, {"Annotations/a.xml": "<annotation/>", "labelmap.txt": "cat:0,0,0::\n"})
    assert detect_format(tmp_path) is DatasetFormat.VOC


def test_names_file_without_labels_is_not_yolo(tmp_path: Path) -> None:
    write(tmp_path, {"obj.names": "cat\n", "a.jpg": "x"})
    with pytest.raises(FormatDetectionError):
        detect_format(tmp_path)


def test_dataset_wrapped_in_folders_is_found_and_paths_stay_relative_to_root(tmp_path: Path) -> None:
    write(
        tmp_path, {f"VOCdevkit/VOC2012/{rel}": content for rel, content in LAYOUTS[DatasetFormat.VOC].items()}
    )
    write(tmp_path, {"__MACOSX/VOCdevkit/._x": "junk", ".DS_Store": "junk", "._VOCdevkit": "junk"})
    folder, fmt = locate_dataset(tmp_path)
    assert (folder, fmt) == (tmp_path / "VOCdevkit/VOC2012", DatasetFormat.VOC)
    parsed = parse_dataset(tmp_path)
    (image,) = parsed.images
    assert image.path == "VOCdevkit/VOC2012/JPEGImages/a.jpg"
    assert image.label_file == "VOCdevkit/VOC2012/Annotations/a.xml"
    assert (tmp_path / image.path).is_file()


def test_issue_paths_are_rebased_too(tmp_path: Path) -> None:
    files = {"data.yaml": "names: [cat]\n", "images/a.jpg": "x", "labels/a.txt": "7 0.5 0.5 0.5 0.5\n"}
    write(tmp_path, {f"wrap/{rel}": content for rel, content in files.items()})
    (issue,) = parse_dataset(tmp_path).issues
    assert (issue.file, issue.image) == ("wrap/labels/a.txt", "wrap/images/a.jpg")


def test_apple_double_files_are_not_read_as_labels(tmp_path: Path) -> None:
    write(tmp_path, LAYOUTS[DatasetFormat.YOLO])
    (tmp_path / "labels/._a.txt").write_bytes(b"\x00\x05\x16\x07 binary")
    (tmp_path / "images/._a.jpg").write_bytes(b"\x00\x05\x16\x07")
    parsed = parse_dataset(tmp_path)
    assert [i.path for i in parsed.images] == ["images/a.jpg"]
    assert parsed.issues == []


def test_unknown_layout_says_what_was_looked_for(tmp_path: Path) -> None:
    write(tmp_path, {"wrapper/photos/a.jpg": "x", "wrapper/notes.txt": "hello"})
    with pytest.raises(FormatDetectionError) as caught:
        detect_format(tmp_path)
    message = str(caught.value)
    for needle in (
        "data.yaml",
        "obj.names",
        "obj.data",
        "classes.txt",
        '"images"',
        "Annotations/*.xml",
        "JPEGImages/",
        "train/a.xml",
        "_annotations.createml.json",
        "*.createml.json",
        "image_2/",
        "label_2/*.txt",
    ):
        assert needle in message
    assert "inside wrapper/" in message and "photos/" in message


def test_empty_folder_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FormatDetectionError, match="no files"):
        detect_format(tmp_path)


def test_missing_folder_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FormatDetectionError, match="not a folder"):
        detect_format(tmp_path / "nope")


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    outside = write(tmp_path / "outside", {"b.jpg": "x", "b.txt": "0 0.5 0.5 0.5 0.5\n"})
    root = write(tmp_path / "upload", LAYOUTS[DatasetFormat.YOLO])
    (root / "images/linked").symlink_to(outside, target_is_directory=True)
    (root / "images/c.jpg").symlink_to(outside / "b.jpg")
    assert [image.path for image in parse_dataset(root).images] == ["images/a.jpg"]
