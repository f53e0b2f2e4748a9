"""The independent readers read small hand-written exports the way the layouts' own tools do.

Every label file here is written by hand, so what the readers must return comes from this file and not from
our renderers; the images are real JPEGs, since Datumaro's YOLO importer needs their size.
"""

from __future__ import annotations

import json
import math
import subprocess
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from dataset_pipeline_tests import readers
from dataset_pipeline_tests.readers import ReadExport, read_with_datumaro, read_with_pycocotools

# (split, file, width, height); img_0002 is a background (labelled, no box), img_0004 is unlabelled.
IMAGES = [
    ("train", "img_0001.jpg", 64, 48),
    ("train", "img_0002.jpg", 32, 32),
    ("train", "img_0004.jpg", 20, 10),
    ("val", "img_0003.jpg", 40, 30),
]
# What every reader must see, in 0-based pixel edges (x_min, y_min, x_max, y_max).
BOXES: ReadExport = {
    ("train", "img_0001.jpg"): [("forklift", 8, 4, 40, 36), ("pallet", 32, 24, 64, 48)],
    ("train", "img_0002.jpg"): [],
    ("val", "img_0003.jpg"): [("pallet", 10, 5, 30, 25)],
}
UNLABELLED = ("train", "img_0004.jpg")
# Like our export zips, each export carries a manifest at its root, which no reader may mistake for labels.
MANIFEST = '{"format": "%s", "manifest_version": 2}\n'


def _jpeg(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (90, 140, 200)).save(path, "JPEG", quality=90)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def _yolo(root: Path) -> Path:
    """Ultralytics layout with no `path:` key; labels as `class cx cy w h`, normalised by hand."""
    for split, name, width, height in IMAGES:
        _jpeg(root / "images" / split / name, width, height)
    return _write(
        root,
        {
            "manifest.json": MANIFEST % "yolo",
            "data.yaml": "train: images/train\nval: images/val\nnc: 2\nnames:\n  0: forklift\n  1: pallet\n",
            # forklift (8,4)-(40,36) and pallet (32,24)-(64,48) on 64x48
            "labels/train/img_0001.txt": "0 0.375 0.4166666666666667 0.5 0.6666666666666666\n1 0.75 0.75 0.5 0.5\n",
            "labels/train/img_0002.txt": "",
            # pallet (10,5)-(30,25) on 40x30
            "labels/val/img_0003.txt": "1 0.5 0.5 0.5 0.6666666666666666\n",
        },
    )


def _coco(root: Path) -> Path:
    """Category ids 3 and 7 (not 0/1) so a reader that maps ids to names by position would be caught."""
    for split, name, width, height in IMAGES:
        _jpeg(root / "images" / split / name, width, height)
    categories = [
        {"id": 3, "name": "forklift", "supercategory": ""},
        {"id": 7, "name": "pallet", "supercategory": ""},
    ]

    def annotation(ann_id: int, image_id: int, category_id: int, bbox: list[float]) -> dict[str, object]:
        area = bbox[2] * bbox[3]
        return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "area": area}

    train = {
        "images": [
            {"id": 1, "file_name": "img_0001.jpg", "width": 64, "height": 48},
            {"id": 2, "file_name": "img_0002.jpg", "width": 32, "height": 32},
        ],
        "annotations": [
            annotation(1, 1, 3, [8.0, 4.0, 32.0, 32.0]),
            annotation(2, 1, 7, [32.0, 24.0, 32.0, 24.0]),
        ],
        "categories": categories,
    }
    val = {
        "images": [{"id": 1, "file_name": "img_0003.jpg", "width": 40, "height": 30}],
        "annotations": [annotation(1, 1, 7, [10.0, 5.0, 20.0, 20.0])],
        "categories": categories,
    }
    for document in (train, val):
        for ann in document["annotations"]:
            ann.update(iscrowd=0, segmentation=[])
    return _write(
        root,
        {
            "manifest.json": MANIFEST % "coco",
            "annotations/instances_train.json": json.dumps(train),
            "annotations/instances_val.json": json.dumps(val),
        },
    )


def _voc_xml(file_name: str, width: int, height: int, objects: list[tuple[str, int, int, int, int]]) -> str:
    parts = [
        f"<annotation><folder>JPEGImages</folder><filename>{file_name}</filename>",
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
    ]
    for name, xmin, ymin, xmax, ymax in objects:
        parts.append(
            f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<occluded>0</occluded><difficult>0</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
        )
    return "".join(parts) + "</annotation>\n"


def _voc(root: Path, origin: int) -> Path:
    """VOC with xmin/ymin written `origin`-based (1 is VOC's own convention); no `background` in the labelmap."""
    o = origin
    for _, name, width, height in IMAGES:
        _jpeg(root / "JPEGImages" / name, width, height)
    return _write(
        root,
        {
            "manifest.json": MANIFEST % "voc",
            "labelmap.txt": "# label:color_rgb:parts:actions\nforklift:128,0,0::\npallet:0,128,0::\n",
            "ImageSets/Main/train.txt": "img_0001\nimg_0002\nimg_0004\n",
            "ImageSets/Main/val.txt": "img_0003\n",
            "Annotations/img_0001.xml": _voc_xml(
                "img_0001.jpg",
                64,
                48,
                [("forklift", 8 + o, 4 + o, 40, 36), ("pallet", 32 + o, 24 + o, 64, 48)],
            ),
            "Annotations/img_0002.xml": _voc_xml("img_0002.jpg", 32, 32, []),
            "Annotations/img_0003.xml": _voc_xml("img_0003.jpg", 40, 30, [("pallet", 10 + o, 5 + o, 30, 25)]),
            # img_0004 is listed but has no XML: unlabelled, the way VOC says nobody looked
        },
    )


def _zip(folder: Path) -> Path:
    archive = folder.with_name(folder.name + ".zip")
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                bundle.write(path, path.relative_to(folder).as_posix())
    return archive


def assert_same_boxes(actual: ReadExport, expected: ReadExport) -> None:
    """Same images, and per image the same classes and coordinates up to Datumaro's rounding."""
    assert sorted(actual) == sorted(expected)
    for key, boxes in expected.items():
        got = actual[key]
        assert [box[0] for box in got] == [box[0] for box in boxes], key
        for got_box, want_box in zip(got, boxes, strict=True):
            assert all(
                math.isclose(g, w, abs_tol=readers.DATUMARO_TOLERANCE_PX)
                for g, w in zip(got_box[1:], want_box[1:], strict=True)
            ), (
                key,
                got_box,
                want_box,
            )


def test_datumaro_reads_yolo_without_path_key_and_skips_unlabelled_images(tmp_path: Path) -> None:
    read = read_with_datumaro(_yolo(tmp_path / "yolo"), "yolo")
    assert_same_boxes(read, BOXES)  # img_0004 has no label file, so Datumaro has no item for it


def test_datumaro_reads_a_zipped_export(tmp_path: Path) -> None:
    archive = _zip(_yolo(tmp_path / "yolo"))
    assert_same_boxes(read_with_datumaro(archive, "yolo"), BOXES)


def test_datumaro_reads_coco_by_category_name(tmp_path: Path) -> None:
    assert_same_boxes(read_with_datumaro(_coco(tmp_path / "coco"), "coco"), BOXES)


@pytest.mark.parametrize("origin", [0, 1])
def test_datumaro_reads_voc_in_either_pixel_origin(tmp_path: Path, origin: int) -> None:
    read = read_with_datumaro(_voc(tmp_path / "voc", origin), "voc", voc_pixel_origin=origin)
    # VOC lists every stem of ImageSets, so the unlabelled image is there, without boxes
    assert_same_boxes(read, {**BOXES, UNLABELLED: []})


def test_datumaro_takes_voc_coordinates_as_written(tmp_path: Path) -> None:
    """Reading a 1-based file as 0-based shifts x_min/y_min by one: the origin is the caller's to say."""
    read = read_with_datumaro(_voc(tmp_path / "voc", 1), "voc")
    assert read[("val", "img_0003.jpg")] == [("pallet", 11, 6, 30, 25)]


def test_datumaro_reader_script_reports_ids_media_and_sizes(tmp_path: Path) -> None:
    root = _yolo(tmp_path / "yolo")
    done = subprocess.run(
        [str(readers.datumaro_python()), "-I", str(readers.DATUMARO_SCRIPT), str(root), "yolo"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    output = json.loads(done.stdout)
    assert output["format"] == "yolo"
    items = {(item["subset"], item["id"]): item for item in output["items"]}
    assert sorted(items) == [("train", "img_0001"), ("train", "img_0002"), ("val", "img_0003")]
    first = items[("train", "img_0001")]
    assert (first["media"], first["width"], first["height"]) == ("images/train/img_0001.jpg", 64, 48)
    assert {ann["label"] for ann in first["annotations"]} == {"forklift", "pallet"}


def test_datumaro_drops_yolo_label_files_written_in_exponent_notation(tmp_path: Path) -> None:
    """A Datumaro 1.13 quirk worth knowing when comparing: it keeps a YOLO label file only if every field of
    its first line is digits and dots, so `repr` of a value under 1e-4 (`5e-05`) hides the whole image."""
    root = _yolo(tmp_path / "yolo")
    (root / "labels/val/img_0003.txt").write_text("1 0.5 0.5 5e-05 0.5\n", encoding="utf-8")
    assert ("val", "img_0003.jpg") not in read_with_datumaro(root, "yolo")


def test_datumaro_rounds_coordinates_to_two_decimals(tmp_path: Path) -> None:
    """Why comparisons with Datumaro need `DATUMARO_TOLERANCE_PX`; pycocotools gives the file's numbers."""
    root = _coco(tmp_path / "coco")
    document = root / "annotations/instances_val.json"
    val = json.loads(document.read_text(encoding="utf-8"))
    val["annotations"][0]["bbox"] = [10.0, 5.0, 20.0, 19.999]
    document.write_text(json.dumps(val), encoding="utf-8")
    assert read_with_datumaro(root, "coco")[("val", "img_0003.jpg")] == [("pallet", 10, 5, 30, 25)]
    assert read_with_pycocotools(root)[("val", "img_0003.jpg")] == [("pallet", 10, 5, 30, 24.999)]


def test_pycocotools_reads_coco_like_datumaro(tmp_path: Path) -> None:
    root = _coco(tmp_path / "coco")
    assert_same_boxes(read_with_pycocotools(root), BOXES)
    assert_same_boxes(read_with_pycocotools(_zip(root)), BOXES)


def test_pixel_origin_is_only_for_voc(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="voc_pixel_origin"):
        read_with_datumaro(tmp_path, "yolo", voc_pixel_origin=1)
    with pytest.raises(ValueError, match="unknown export format"):
        read_with_datumaro(tmp_path, "cvat")


def test_missing_reader_skips_unless_required(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(readers.DATUMARO_PYTHON_ENV, str(tmp_path / "no-such-python"))
    monkeypatch.delenv(readers.REQUIRE_READERS_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="does not exist"):
        readers.datumaro_python()
    monkeypatch.delenv(readers.DATUMARO_PYTHON_ENV)
    monkeypatch.setenv(readers.REQUIRE_READERS_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="make test"):
        readers.datumaro_python()
