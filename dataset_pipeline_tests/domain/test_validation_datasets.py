"""Tiny hostile datasets in each format, built here with Pillow, taken through the real chain: detect and parse,
decode every image, validate. Each test plants one problem and checks its code, the file and line (or
annotation) it names, the image it is charged to, and what the policy does with that image."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dataset_pipeline.domain.image_checks import DEFAULT_MAX_PIXELS, check_images, load_upright_rgb
from dataset_pipeline.domain.model import Issue, ParsedDataset, Severity
from dataset_pipeline.domain.validation import ValidationOutcome, validate
from dataset_pipeline.formats import parse_dataset

W, H = 100, 50
DATA_YAML = "names: [cat, dog]\ntrain: images/train\n"
#: Findings about the dataset as a whole rather than one file.
DATASET_WIDE = frozenset({"stats.few_samples", "stats.imbalance", "box.clipped"})
#: Findings about one box: they must name its line, or its annotation where the format has no lines.
BOX_LEVEL = frozenset(
    {"box.out_of_bounds", "box.degenerate", "box.duplicate", "box.unknown_class", "box.not_finite"}
)


def picture(seed: int, size: tuple[int, int] = (W, H)) -> Image.Image:
    """Coarse random blocks: distinct seeds give distinct perceptual hashes, so no accidental near duplicate."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 256, (8, 9, 3), dtype=np.uint8)
    return Image.fromarray(grid).resize(size, Image.Resampling.NEAREST)


def jpeg(seed: int, size: tuple[int, int] = (W, H), **options: Any) -> bytes:
    buffer = io.BytesIO()
    picture(seed, size).save(buffer, "JPEG", quality=95, **options)
    return buffer.getvalue()


def write(root: Path, files: dict[str, bytes | str]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def run(
    root: Path, max_pixels: int = DEFAULT_MAX_PIXELS, voc_pixel_origin: int = 0, **options: Any
) -> tuple[ParsedDataset, ValidationOutcome]:
    """Parse, decode and validate; every finding of every dataset here must say where it is."""
    parsed = parse_dataset(root, voc_pixel_origin=voc_pixel_origin)
    facts = check_images(root, [image.path for image in parsed.images], workers=1, max_pixels=max_pixels)
    outcome = validate(parsed, {fact.path: fact for fact in facts}, **options)
    assert_located(outcome)
    return parsed, outcome


def only(outcome: ValidationOutcome, code: str) -> Issue:
    found = [issue for issue in outcome.issues if issue.code == code]
    assert len(found) == 1, [(i.code, i.location()) for i in outcome.issues]
    return found[0]


def usable(outcome: ValidationOutcome) -> list[str]:
    return [image.path for image in outcome.usable_images]


def assert_located(outcome: ValidationOutcome) -> None:
    """Every finding has severity, code and message; all but dataset-wide ones name a file; box findings name
    the line or annotation too."""
    for issue in outcome.issues:
        assert isinstance(issue.severity, Severity) and issue.code and issue.message, issue
        if issue.code not in DATASET_WIDE:
            assert issue.file, issue
        if issue.code in BOX_LEVEL:
            assert issue.line is not None or issue.annotation_id is not None, issue


def yolo(root: Path, labels: dict[str, str], images: dict[str, bytes] | None = None) -> Path:
    """`labels` maps an image stem to its label text; every stem gets a distinct 100x50 JPEG."""
    files: dict[str, bytes | str] = {"data.yaml": DATA_YAML}
    for n, stem in enumerate(labels):
        files[f"images/train/{stem}.jpg"] = jpeg(n)
        files[f"labels/train/{stem}.txt"] = labels[stem]
    files.update({f"images/train/{name}": data for name, data in (images or {}).items()})
    return write(root, files)


# --- YOLO ---------------------------------------------------------------------------------------------------


def test_yolo_bad_line_quarantines_the_image_with_its_good_boxes(tmp_path: Path) -> None:
    yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0x1\n", "b": "1 0.5 0.5 0.2 0.2\n"})
    _, outcome = run(tmp_path)
    issue = only(outcome, "yolo.not_numeric")
    assert (issue.severity, issue.file, issue.line, issue.image) == (
        Severity.ERROR,
        "labels/train/a.txt",
        2,
        "images/train/a.jpg",
    )
    assert outcome.quarantined == ["images/train/a.jpg"]
    assert usable(outcome) == ["images/train/b.jpg"]  # the good box of a.jpg left with its image


def test_strict_policy_fails_the_upload_on_one_bad_line(tmp_path: Path) -> None:
    yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n", "b": "1 0.5 0.5 0.2 0.2\n"})
    _, strict = run(tmp_path, policy="strict")
    issue = only(strict, "yolo.class_out_of_range")
    assert (issue.file, issue.line) == ("labels/train/a.txt", 2)
    assert strict.failed and usable(strict) == []


def test_yolo_box_past_the_edge_beyond_tolerance_is_an_error(tmp_path: Path) -> None:
    yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n0 0.95 0.5 0.3 0.2\n"})  # right edge at 110 px of 100
    _, outcome = run(tmp_path)
    issue = only(outcome, "box.out_of_bounds")
    assert (issue.severity, issue.file, issue.line, issue.image) == (
        Severity.ERROR,
        "labels/train/a.txt",
        2,
        "images/train/a.jpg",
    )
    assert "10.0 px outside" in issue.message
    assert outcome.quarantined == ["images/train/a.jpg"]


def test_yolo_box_past_the_edge_within_tolerance_is_clipped(tmp_path: Path) -> None:
    yolo(tmp_path, {"a": "0 0.9 0.5 0.21 0.2\n"})  # right edge at 100.5 px of 100
    _, outcome = run(tmp_path)
    info = only(outcome, "box.clipped")
    assert info.severity is Severity.INFO and "labels/train/a.txt:1" in info.message
    (box,) = outcome.images[0].boxes
    assert box.x_max == W
    assert outcome.quarantined == []


def test_yolo_box_under_one_pixel_is_degenerate(tmp_path: Path) -> None:
    yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.005 0.2\n"})  # 0.5 px wide
    _, outcome = run(tmp_path)
    issue = only(outcome, "box.degenerate")
    assert (issue.severity, issue.file, issue.line) == (Severity.ERROR, "labels/train/a.txt", 2)
    assert outcome.quarantined == ["images/train/a.jpg"]


def test_yolo_repeated_line_is_a_duplicate_box(tmp_path: Path) -> None:
    yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n0 0.5 0.5 0.2 0.2\n"})
    _, outcome = run(tmp_path)
    issue = only(outcome, "box.duplicate")
    assert (issue.severity, issue.file, issue.line) == (Severity.WARNING, "labels/train/a.txt", 3)
    assert [b.class_index for b in outcome.images[0].boxes] == [0, 1]
    assert outcome.quarantined == []


def test_yolo_missing_label_is_unlabelled_and_empty_is_background(tmp_path: Path) -> None:
    yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n", "bg": ""}, images={"nolabel.jpg": jpeg(9)})
    _, outcome = run(tmp_path)
    issue = only(outcome, "image.unlabelled")
    assert (issue.severity, issue.file, issue.image) == (
        Severity.WARNING,
        "images/train/nolabel.jpg",
        "images/train/nolabel.jpg",
    )
    assert usable(outcome) == ["images/train/a.jpg", "images/train/bg.jpg"]
    assert outcome.quarantined == []


def test_yolo_orphan_label_names_its_file(tmp_path: Path) -> None:
    yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"})
    write(tmp_path, {"labels/train/ghost.txt": "0 0.5 0.5 0.2 0.2\n"})
    _, outcome = run(tmp_path)
    issue = only(outcome, "yolo.orphan_label")
    assert (issue.severity, issue.file, issue.image) == (Severity.WARNING, "labels/train/ghost.txt", None)
    assert usable(outcome) == ["images/train/a.jpg"]


# --- image bytes ----------------------------------------------------------------------------------------------


def _truncated() -> bytes:
    data = jpeg(5)
    return data[: len(data) // 2]


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    picture(6).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (_truncated, "image.truncated"),
        (lambda: b"", "image.empty"),
        (_png_bytes, "image.format_mismatch"),
        (lambda: b"GIF89a not really", "image.undecodable"),
    ],
)
def test_bad_image_bytes_quarantine_the_image_and_its_boxes(
    tmp_path: Path, make: Callable[[], bytes], code: str
) -> None:
    yolo(tmp_path, {"good": "0 0.5 0.5 0.2 0.2\n"})
    write(tmp_path, {"images/train/bad.jpg": make(), "labels/train/bad.txt": "1 0.5 0.5 0.2 0.2\n"})
    _, outcome = run(tmp_path)
    issue = only(outcome, code)
    assert (issue.severity, issue.file, issue.image) == (
        Severity.ERROR,
        "images/train/bad.jpg",
        "images/train/bad.jpg",
    )
    assert outcome.quarantined == ["images/train/bad.jpg"]
    assert usable(outcome) == ["images/train/good.jpg"]


def test_decompression_bomb_is_quarantined(tmp_path: Path) -> None:
    yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"})
    _, outcome = run(tmp_path, max_pixels=W * H // 4)
    issue = only(outcome, "image.decompression_bomb")
    assert (issue.severity, issue.file) == (Severity.ERROR, "images/train/a.jpg")
    assert outcome.quarantined == ["images/train/a.jpg"]


def test_exact_and_near_duplicate_images_are_grouped_from_real_bytes(tmp_path: Path) -> None:
    yolo(
        tmp_path,
        {"a": "0 0.5 0.5 0.2 0.2\n", "other": "1 0.5 0.5 0.2 0.2\n"},
        images={"copy.jpg": jpeg(0), "smaller.jpg": jpeg(0, (50, 25))},  # a.jpg is jpeg(0)
    )
    _, outcome = run(tmp_path)
    exact = only(outcome, "image.duplicate")
    assert (exact.severity, exact.file) == (Severity.WARNING, "images/train/a.jpg")
    assert outcome.exact_duplicate_groups == [["images/train/a.jpg", "images/train/copy.jpg"]]
    near = only(outcome, "image.near_duplicate")
    assert near.severity is Severity.WARNING and "images/train/smaller.jpg" in near.message
    assert outcome.near_duplicate_groups == [
        ["images/train/a.jpg", "images/train/copy.jpg", "images/train/smaller.jpg"]
    ]
    assert outcome.quarantined == []


def test_boxes_follow_exif_orientation_like_the_pixels(tmp_path: Path) -> None:
    upright = Image.new("RGB", (40, 80), (0, 0, 255))
    upright.paste((255, 0, 0), (20, 50, 30, 70))  # the object, in upright pixels
    exif = Image.Exif()
    exif[274] = 6  # stored turned on its side: 80x40 on disk
    buffer = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buffer, "JPEG", quality=95, exif=exif)
    write(
        tmp_path,
        {
            "data.yaml": DATA_YAML,
            "images/train/a.jpg": buffer.getvalue(),
            "labels/train/a.txt": "0 0.625 0.75 0.25 0.25\n",  # drawn on the upright image, as tools show it
        },
    )
    _, outcome = run(tmp_path)
    assert [i.code for i in outcome.issues if i.severity is Severity.ERROR] == []
    (image,) = outcome.images
    assert (image.width, image.height) == (40, 80)
    (box,) = image.boxes
    assert (box.x_min, box.y_min, box.x_max, box.y_max) == pytest.approx((20, 50, 30, 70))
    pixels = load_upright_rgb(tmp_path / image.path)
    inside = pixels[int(box.y_min) + 2 : int(box.y_max) - 2, int(box.x_min) + 2 : int(box.x_max) - 2]
    assert inside[..., 0].mean() > 200 and inside[..., 2].mean() < 60  # the box is on the object


# --- VOC ------------------------------------------------------------------------------------------------------


def voc_xml(*objects: tuple[Any, ...], size: tuple[int, int] | None = (W, H), filename: str = "a.jpg") -> str:
    """Objects start on line 4 (line 3 without a size), one per line."""
    lines = ["<annotation>", f"<filename>{filename}</filename>"]
    if size is not None:
        lines.append(f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    for name, xmin, ymin, xmax, ymax in objects:
        lines.append(
            f"<object><name>{name}</name><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
        )
    return "\n".join([*lines, "</annotation>"]) + "\n"


def voc(root: Path, xml: str, **extra: bytes | str) -> Path:
    files: dict[str, bytes | str] = {"Annotations/a.xml": xml, "JPEGImages/a.jpg": jpeg(0)}
    files["Annotations/b.xml"] = voc_xml(("cat", 1, 1, 10, 10), filename="b.jpg")
    files["JPEGImages/b.jpg"] = jpeg(1)
    files.update(extra)
    return write(root, files)


@pytest.mark.parametrize("origin", [0, 1])
def test_voc_box_over_the_whole_image_is_in_bounds_in_either_origin(tmp_path: Path, origin: int) -> None:
    voc(tmp_path, voc_xml(("cat", origin, origin, W, H)))
    _, outcome = run(tmp_path, voc_pixel_origin=origin)
    assert [i.code for i in outcome.issues if i.severity is not Severity.WARNING] == []
    (box,) = outcome.images[0].boxes
    assert (box.x_min, box.y_min, box.x_max, box.y_max) == (0, 0, W, H)


def test_voc_zero_read_as_one_based_is_clipped_not_rejected(tmp_path: Path) -> None:
    voc(tmp_path, voc_xml(("cat", 0, 0, 10, 10)))  # 0 is no pixel in 1-based VOC: one pixel past the edge
    _, outcome = run(tmp_path, voc_pixel_origin=1)
    assert "Annotations/a.xml:4" in only(outcome, "box.clipped").message
    assert outcome.quarantined == []


def test_voc_size_element_disagreeing_with_the_image_is_an_error(tmp_path: Path) -> None:
    voc(tmp_path, voc_xml(("cat", 1, 1, 10, 10), size=(640, 480)))
    _, outcome = run(tmp_path)
    issue = only(outcome, "image.size_mismatch")
    assert (issue.severity, issue.file, issue.image) == (
        Severity.ERROR,
        "Annotations/a.xml",
        "JPEGImages/a.jpg",
    )
    assert "640x480" in issue.message and f"{W}x{H}" in issue.message
    assert outcome.quarantined == ["JPEGImages/a.jpg"]


def test_voc_size_before_exif_rotation_is_explained(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[274] = 8
    voc(tmp_path, voc_xml(("cat", 1, 1, 10, 10), size=(W, H)), **{"JPEGImages/a.jpg": jpeg(0, exif=exif)})
    _, outcome = run(tmp_path)
    issue = only(outcome, "image.size_mismatch")
    assert issue.file == "Annotations/a.xml" and "EXIF orientation 8" in issue.message


def test_voc_unknown_class_quarantines_the_image(tmp_path: Path) -> None:
    voc(tmp_path, voc_xml(("cat", 1, 1, 10, 10), ("zebra", 2, 2, 9, 9)), **{"labelmap.txt": "cat:0,0,0::\n"})
    _, outcome = run(tmp_path)
    issue = only(outcome, "voc.unknown_class")
    assert (issue.file, issue.line, issue.annotation_id) == ("Annotations/a.xml", 5, "2")
    assert outcome.quarantined == ["JPEGImages/a.jpg"]
    assert usable(outcome) == ["JPEGImages/b.jpg"]


@pytest.mark.parametrize(
    ("box", "code"),
    [(("ten", 1, 10, 10), "voc.coordinate_not_numeric"), ((10, 1, 5, 10), "voc.coordinate_inverted")],
)
def test_voc_bad_coordinates_quarantine_the_image(tmp_path: Path, box: tuple[Any, ...], code: str) -> None:
    voc(tmp_path, voc_xml(("cat", 1, 1, 10, 10), ("cat", *box)))
    _, outcome = run(tmp_path)
    issue = only(outcome, code)
    assert (issue.severity, issue.file, issue.line, issue.annotation_id, issue.image) == (
        Severity.ERROR,
        "Annotations/a.xml",
        5,
        "2",
        "JPEGImages/a.jpg",
    )
    assert outcome.quarantined == ["JPEGImages/a.jpg"]


def test_voc_entity_bomb_quarantines_only_its_image(tmp_path: Path) -> None:
    bomb = '<!DOCTYPE a [<!ENTITY x "xx"><!ENTITY y "&x;&x;&x;&x;">]><annotation>&y;</annotation>'
    voc(tmp_path, bomb)
    _, outcome = run(tmp_path)
    issue = only(outcome, "voc.xml_unsafe")
    assert (issue.file, issue.image) == ("Annotations/a.xml", "JPEGImages/a.jpg")
    assert outcome.quarantined == ["JPEGImages/a.jpg"]
    assert usable(outcome) == ["JPEGImages/b.jpg"]


# --- COCO -----------------------------------------------------------------------------------------------------

COCO_FILE = "annotations/instances_train.json"


def coco(root: Path, **overrides: Any) -> Path:
    document: dict[str, Any] = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": W, "height": H},
            {"id": 2, "file_name": "b.jpg", "width": W, "height": H},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
            {"id": 20, "image_id": 2, "category_id": 2, "bbox": [10, 10, 20, 20]},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    document.update(overrides)
    return write(
        root,
        {COCO_FILE: json.dumps(document), "images/train/a.jpg": jpeg(0), "images/train/b.jpg": jpeg(1)},
    )


def test_coco_box_beyond_the_image_names_its_annotation(tmp_path: Path) -> None:
    coco(
        tmp_path,
        annotations=[
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [90, 10, 30, 20]},
            {"id": 20, "image_id": 2, "category_id": 2, "bbox": [10, 10, 20, 20]},
        ],
    )
    _, outcome = run(tmp_path)
    issue = only(outcome, "box.out_of_bounds")
    assert (issue.file, issue.annotation_id, issue.image) == (COCO_FILE, "10", "images/train/a.jpg")
    assert outcome.quarantined == ["images/train/a.jpg"]


def test_coco_declared_size_disagreeing_with_the_image_is_an_error(tmp_path: Path) -> None:
    coco(
        tmp_path,
        images=[
            {"id": 1, "file_name": "a.jpg", "width": 640, "height": 480},
            {"id": 2, "file_name": "b.jpg", "width": W, "height": H},
        ],
    )
    _, outcome = run(tmp_path)
    issue = only(outcome, "image.size_mismatch")
    assert (issue.file, issue.image) == (COCO_FILE, "images/train/a.jpg")
    assert outcome.quarantined == ["images/train/a.jpg"]


def test_coco_nan_bbox_quarantines_the_image(tmp_path: Path) -> None:
    coco(tmp_path)
    path = tmp_path / COCO_FILE
    path.write_text(path.read_text().replace("[10, 10, 20, 20]", "[10, NaN, 20, 20]", 1))
    _, outcome = run(tmp_path)
    issue = only(outcome, "coco.not_finite")
    assert (issue.file, issue.annotation_id, issue.image) == (COCO_FILE, "10", "images/train/a.jpg")
    assert outcome.quarantined == ["images/train/a.jpg"]


def test_coco_duplicate_image_id_quarantines_the_image_keeping_it(tmp_path: Path) -> None:
    coco(
        tmp_path,
        images=[
            {"id": 1, "file_name": "a.jpg", "width": W, "height": H},
            {"id": 1, "file_name": "b.jpg", "width": W, "height": H},
        ],
        annotations=[{"id": 10, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]}],
    )
    _, outcome = run(tmp_path)
    issue = only(outcome, "coco.duplicate_image_id")
    assert (issue.severity, issue.file, issue.image) == (Severity.ERROR, COCO_FILE, "images/train/a.jpg")
    assert outcome.quarantined == ["images/train/a.jpg"]


def test_coco_dangling_ids_are_errors_charged_where_they_can_be(tmp_path: Path) -> None:
    coco(
        tmp_path,
        annotations=[
            {"id": 10, "image_id": 1, "category_id": 9, "bbox": [10, 10, 20, 20]},
            {"id": 20, "image_id": 99, "category_id": 2, "bbox": [10, 10, 20, 20]},
            {"id": 30, "image_id": 2, "category_id": 2, "bbox": [10, 10, 20, 20]},
        ],
    )
    _, outcome = run(tmp_path)
    category = only(outcome, "coco.dangling_category_id")
    assert (category.file, category.annotation_id, category.image) == (COCO_FILE, "10", "images/train/a.jpg")
    image = only(outcome, "coco.dangling_image_id")
    assert (image.file, image.annotation_id, image.image) == (COCO_FILE, "20", None)
    assert outcome.quarantined == ["images/train/a.jpg"]  # the dangling image_id has no image to charge
    _, strict = run(tmp_path, policy="strict")
    assert strict.failed


def test_coco_crowd_boxes_keep_their_flag_through_validation(tmp_path: Path) -> None:
    coco(
        tmp_path,
        annotations=[{"id": 10, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "iscrowd": 1}],
    )
    _, outcome = run(tmp_path)
    (box,) = outcome.images[0].boxes
    assert box.attributes["iscrowd"] == 1
