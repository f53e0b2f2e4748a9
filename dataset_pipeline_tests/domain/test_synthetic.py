"""The synthetic generator: deterministic, realistic enough, and readable by our own parsers."""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from dataset_pipeline.domain.model import BoxFormat, DatasetFormat, LabelState, Severity
from dataset_pipeline.domain.synthetic import (
    class_names,
    draw_image,
    generate_dataset,
    make_canonical_dataset,
)
from dataset_pipeline.formats import EXPORT_FORMATS, parse_dataset


def test_labels_are_deterministic_and_seed_dependent() -> None:
    first = make_canonical_dataset(30, seed=3)
    assert first == make_canonical_dataset(30, seed=3)
    assert first != make_canonical_dataset(30, seed=4)


def test_boxes_counts_and_splits() -> None:
    dataset = make_canonical_dataset(200, seed=1, image_size=(320, 240), n_classes=8)
    assert Counter(image.split for image in dataset.images) == {"train": 160, "val": 20, "test": 20}
    for image in dataset.images:
        assert (image.width, image.height) == (320, 240)
        assert 1 <= len(image.boxes) <= 10
        assert image.label_state is LabelState.LABELLED
        for box in image.boxes:
            assert 0 <= box.x_min < box.x_max <= 320 and 0 <= box.y_min < box.y_max <= 240
            assert box.width >= 2 and box.height >= 2
            assert float(box.x_min).is_integer() and float(box.y_max).is_integer()


def test_class_frequencies_have_a_long_tail() -> None:
    dataset = make_canonical_dataset(400, seed=0, n_classes=8)
    counts = Counter(box.class_index for image in dataset.images for box in image.boxes)
    assert counts[0] > 3 * counts[7] > 0
    assert counts[0] == max(counts.values())


def test_class_names_are_readable_then_numbered() -> None:
    names = class_names(14)
    assert names[:6] == ["person", "car", "bicycle", "dog", "cat", "traffic_light"]
    assert names[12:] == ["class_12", "class_13"]
    assert len(set(names)) == 14


def test_split_ratios_are_honoured_exactly() -> None:
    dataset = make_canonical_dataset(10, split_ratios=(0.5, 0.5, 0.0))
    assert Counter(image.split for image in dataset.images) == {"train": 5, "val": 5}
    with pytest.raises(ValueError, match="split_ratios"):
        make_canonical_dataset(10, split_ratios=(0.0, 0.0, 0.0))


def test_drawn_image_is_a_decodable_jpeg_of_the_right_size() -> None:
    image = make_canonical_dataset(1, image_size=(96, 64)).images[0]
    data = draw_image(image, n_classes=5, seed=0, index=0)
    assert data == draw_image(image, n_classes=5, seed=0, index=0)
    with Image.open(io.BytesIO(data)) as decoded:
        assert (decoded.format, decoded.size, decoded.mode) == ("JPEG", (96, 64), "RGB")
        pixels = decoded.convert("L").getextrema()
    assert pixels[1] - pixels[0] > 20  # not a flat image


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_generated_folder_parses_back_to_the_same_boxes(tmp_path: Path, fmt: DatasetFormat) -> None:
    root = generate_dataset(tmp_path / "ds", n_images=12, fmt=fmt, seed=5, image_size=(64, 48), n_classes=3)
    expected = make_canonical_dataset(12, seed=5, image_size=(64, 48), n_classes=3)
    parsed = parse_dataset(root)
    assert parsed.format is fmt
    assert parsed.class_names == ["person", "car", "bicycle"]
    assert [i for i in parsed.issues if i.severity is not Severity.INFO] == []
    by_name = {Path(image.path).name: image for image in parsed.images}
    for image in expected.images:
        got = by_name[image.file_name]
        assert (got.split, len(got.boxes)) == (image.split, len(image.boxes))
        with Image.open(root / got.path) as decoded:
            assert decoded.size == (64, 48)
        for want, box in zip(image.boxes, got.boxes, strict=True):
            coords = box.coords
            if box.coords_format is BoxFormat.CXCYWH_NORMALIZED:
                cx, cy, w, h = coords
                coords = ((cx - w / 2) * 64, (cy - h / 2) * 48, (cx + w / 2) * 64, (cy + h / 2) * 48)
            assert coords == pytest.approx((want.x_min, want.y_min, want.x_max, want.y_max), abs=1e-9)


def test_zip_is_byte_identical_across_runs(tmp_path: Path) -> None:
    first = generate_dataset(
        tmp_path / "a", n_images=6, fmt=DatasetFormat.COCO, image_size=(48, 32), zipped=True
    )
    second = generate_dataset(
        tmp_path / "b.zip", n_images=6, fmt=DatasetFormat.COCO, image_size=(48, 32), zipped=True
    )
    assert (first.name, second.name) == ("a.zip", "b.zip")
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        names = archive.namelist()
        assert names == sorted(names)
        assert "annotations/instances_train.json" in names
        assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in archive.infolist())
