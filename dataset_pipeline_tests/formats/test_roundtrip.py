"""render() then parse() gives back the same images, classes, boxes and attributes, for every format."""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dataset_pipeline.domain.model import (
    Box,
    BoxFormat,
    CanonicalDataset,
    CanonicalImage,
    DatasetFormat,
    LabelState,
    ParsedDataset,
    Severity,
    SourceBox,
)
from dataset_pipeline.formats import RENDERERS, parse_dataset

CLASSES = ["person", "car", "traffic light", "dog"]


def materialise(dataset: CanonicalDataset, fmt: DatasetFormat, root: Path) -> Path:
    """Write the rendered label files and copy each image where `image_paths` says, as an export would."""
    rendered = RENDERERS[fmt](dataset)
    for rel, data in rendered.label_files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    for image in dataset.images:
        target = root / rendered.image_paths[image.file_name]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image.source_path, target)
    return root


def pixel_xyxy(box: SourceBox, width: int, height: int) -> tuple[float, float, float, float]:
    if box.coords_format is BoxFormat.XYXY_PIXELS:
        return box.coords
    cx, cy, w, h = box.coords
    return ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)


def canonical_from(
    parsed: ParsedDataset, root: Path, originals: dict[str, CanonicalImage] | None = None
) -> CanonicalDataset:
    """What validation makes of a parse, for tests: pixel boxes, plain file names, a split for every image.
    Size, source and split come from `originals` (by file name) when given, else from the image file on disk
    under `root` and the parse (no split: train)."""
    images = []
    for source in parsed.images:
        name = Path(source.path).name
        original = originals[name] if originals is not None else None
        if original is not None:
            path, width, height, split = original.source_path, original.width, original.height, original.split
        else:
            path = root / source.path
            with Image.open(path) as picture:
                width, height = picture.size
            split = source.split or "train"
        boxes = [Box(b.class_index, *pixel_xyxy(b, width, height), dict(b.attributes)) for b in source.boxes]
        images.append(
            CanonicalImage(name, path, width, height, split, boxes, source.label_state, source.source_id)
        )
    return CanonicalDataset(list(parsed.class_names), images, list(parsed.class_info))


#: VOC is written with at most 3 decimals (what annotation tools write), so a box read back from it is within
#: half of 0.001 px of the truth; the other writers give back the same doubles.
VOC_DECIMALS_TOLERANCE_PX = 0.0005 + 1e-9


def close(a: float, b: float, fmt: DatasetFormat | None = None) -> bool:
    if fmt is DatasetFormat.VOC:
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=VOC_DECIMALS_TOLERANCE_PX)
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def assert_same(original: CanonicalDataset, parsed: ParsedDataset, fmt: DatasetFormat) -> None:
    assert parsed.class_names == original.class_names
    assert [i for i in parsed.issues if i.severity is not Severity.INFO] == []
    by_name = {Path(image.path).name: image for image in parsed.images}
    assert sorted(by_name) == sorted(image.file_name for image in original.images)
    for image in original.images:
        got = by_name[image.file_name]
        assert got.split == image.split
        expected_state = LabelState.LABELLED if image.boxes else image.label_state
        assert got.label_state is expected_state, image.file_name
        assert len(got.boxes) == len(image.boxes)
        for want, box in zip(image.boxes, got.boxes, strict=True):
            assert box.class_index == want.class_index
            coords = pixel_xyxy(box, image.width, image.height)
            wanted = (want.x_min, want.y_min, want.x_max, want.y_max)
            assert all(close(a, b, fmt) for a, b in zip(coords, wanted, strict=True)), (coords, wanted)
            kept = {k: v for k, v in want.attributes.items() if k in _KEPT[fmt]}
            assert {k: box.attributes[k] for k in kept} == kept
        if fmt is not DatasetFormat.YOLO and got.label_state is not LabelState.UNLABELLED:
            assert (got.declared_width, got.declared_height) == (image.width, image.height)


def assert_survives_every_writer(parsed: ParsedDataset, root: Path, scratch: Path) -> CanonicalDataset:
    """Turn a parse of the upload at `root` into the canonical model, write it in every export format and read
    each back: the same images, splits, states and boxes. Returns the canonical dataset for further checks."""
    dataset = canonical_from(parsed, root)
    for fmt in RENDERERS:
        again = parse_dataset(materialise(dataset, fmt, scratch / fmt.value))
        assert again.format is fmt
        assert_same(dataset, again, fmt)
    return dataset


_KEPT = {
    DatasetFormat.YOLO: set(),
    DatasetFormat.COCO: {"iscrowd"},
    DatasetFormat.VOC: {"difficult", "truncated", "occluded", "pose"},
}


def sample_dataset(source: Path) -> CanonicalDataset:
    source.mkdir(parents=True, exist_ok=True)
    images = [
        (
            "a.jpg",
            640,
            480,
            "train",
            [Box(0, 10.25, 20.5, 110.125, 220.75, {"difficult": 1, "truncated": 0, "iscrowd": 1})],
        ),
        (
            "b.png",
            333,
            217,
            "train",
            [Box(1, 0, 0, 333, 217), Box(3, 1 / 3, 2 / 7, 100.1, 50.05, {"pose": "Left"})],
        ),
        ("c.jpg", 640, 480, "val", [Box(2, 5, 5, 6, 6, {"occluded": 1, "iscrowd": 0})]),
        ("d.jpg", 100, 100, "test", []),
    ]
    canonical = []
    for name, width, height, split, boxes in images:
        (source / name).write_bytes(b"image bytes of " + name.encode())
        state = LabelState.LABELLED if boxes else LabelState.BACKGROUND
        canonical.append(CanonicalImage(name, source / name, width, height, split, boxes, state))
    canonical.append(CanonicalImage("e.jpg", source / "a.jpg", 640, 480, "val", [], LabelState.UNLABELLED))
    return CanonicalDataset(list(CLASSES), canonical)


@pytest.mark.parametrize("fmt", list(RENDERERS))
def test_round_trip(tmp_path: Path, fmt: DatasetFormat) -> None:
    dataset = sample_dataset(tmp_path / "source")
    parsed = parse_dataset(materialise(dataset, fmt, tmp_path / "export"))
    assert parsed.format is fmt
    assert_same(dataset, parsed, fmt)


@pytest.mark.parametrize("fmt", list(RENDERERS))
def test_render_parse_render_is_stable(tmp_path: Path, fmt: DatasetFormat) -> None:
    """A second export of what was read back is byte-identical to the first, label files included."""
    dataset = sample_dataset(tmp_path / "source")
    first = RENDERERS[fmt](dataset)
    export = materialise(dataset, fmt, tmp_path / "export")
    parsed = parse_dataset(export)
    originals = {image.file_name: image for image in dataset.images}
    second = RENDERERS[fmt](canonical_from(parsed, export, originals))
    assert second.image_paths == first.image_paths
    if fmt is not DatasetFormat.YOLO:  # YOLO floats pass through a division, so only equal within 1e-9
        assert second.label_files == first.label_files


def test_coco_render_loads_in_pycocotools(tmp_path: Path) -> None:
    coco_api = pytest.importorskip("pycocotools.coco")
    dataset = sample_dataset(tmp_path / "source")
    rendered = RENDERERS[DatasetFormat.COCO](dataset)
    path = tmp_path / "instances_train.json"
    path.write_bytes(rendered.label_files["annotations/instances_train.json"])
    api = coco_api.COCO(str(path))
    assert [c["name"] for c in api.loadCats(api.getCatIds())] == CLASSES
    expected = {
        (i.file_name, b.x_min, b.y_min, b.x_max, b.y_max)
        for i in dataset.images
        if i.split == "train"
        for b in i.boxes
    }
    found = set()
    for ann in api.loadAnns(api.getAnnIds()):
        image = api.loadImgs(ann["image_id"])[0]
        x, y, w, h = ann["bbox"]
        found.add((image["file_name"], x, y, x + w, y + h))
        assert dataset.class_names[ann["category_id"] - 1] in CLASSES
    assert len(found) == len(expected)
    for name, *coords in expected:
        assert any(
            f[0] == name and all(close(a, b) for a, b in zip(f[1:], coords, strict=True)) for f in found
        )


# --- property: random datasets survive every format ------------------------------------------------------


@st.composite
def datasets(draw: st.DrawFn) -> CanonicalDataset:
    n_classes = draw(st.integers(1, 4))
    images = []
    for index in range(draw(st.integers(1, 4))):
        width, height = draw(st.integers(2, 4000)), draw(st.integers(2, 4000))
        boxes = []
        for _ in range(draw(st.integers(0, 4))):
            x0 = draw(st.floats(0, width - 1, allow_nan=False))
            y0 = draw(st.floats(0, height - 1, allow_nan=False))
            x1 = draw(st.floats(x0 + 0.5, width, allow_nan=False))
            y1 = draw(st.floats(y0 + 0.5, height, allow_nan=False))
            flags = {"difficult": draw(st.integers(0, 1)), "iscrowd": draw(st.integers(0, 1))}
            boxes.append(Box(draw(st.integers(0, n_classes - 1)), x0, y0, x1, y1, flags))
        state = (
            LabelState.LABELLED
            if boxes
            else draw(st.sampled_from([LabelState.BACKGROUND, LabelState.UNLABELLED]))
        )
        split = draw(st.sampled_from(["train", "val", "test"]))
        images.append(CanonicalImage(f"im{index}.jpg", Path("unused"), width, height, split, boxes, state))
    return CanonicalDataset([f"class {i}" for i in range(n_classes)], images)


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(dataset=datasets(), fmt=st.sampled_from(list(RENDERERS)))
def test_random_datasets_round_trip(dataset: CanonicalDataset, fmt: DatasetFormat) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "unused").write_bytes(b"x")
        for image in dataset.images:
            image.source_path = root / "unused"
        parsed = parse_dataset(materialise(dataset, fmt, root / "export"))
        assert_same(dataset, parsed, fmt)
