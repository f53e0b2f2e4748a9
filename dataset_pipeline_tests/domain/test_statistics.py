"""Class distribution against values computed by hand, the columnar entry point at scale, and the charts."""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import pytest

from dataset_pipeline.domain.model import Box
from dataset_pipeline.domain.statistics import (
    PER_CLASS_COLUMNS,
    BoxArrays,
    DistributionReport,
    ImageBoxes,
    class_bars_markdown,
    class_distribution,
    class_distribution_from_arrays,
    plot_box_size_histogram,
    plot_class_bars,
)

NAMES = ["cat", "dog", "bird"]


def small_dataset() -> list[ImageBoxes]:
    """Five boxes; areas, aspects and buckets are written next to each box."""
    return [
        ImageBoxes(
            "train",
            [
                Box(0, 0, 0, 10, 20),  # 200 px² small, aspect 0.5, relative sqrt(0.02)
                Box(0, 0, 0, 40, 40),  # 1600 medium, 1.0, 0.4
                Box(1, 0, 0, 100, 50),  # 5000 medium, 2.0, sqrt(0.5)
            ],
            100,
            100,
        ),
        ImageBoxes("train", [Box(0, 0, 0, 100, 100)], 200, 200),  # 10000 large, 1.0, 0.5
        ImageBoxes("val", [Box(1, 0, 0, 30, 10)], 100, 100),  # 300 small, 3.0, sqrt(0.03)
        ImageBoxes("val", [], 50, 50),  # background
    ]


def rows(report: DistributionReport, split: str) -> dict[str, dict[str, Any]]:
    table = report.per_class[report.per_class["split"] == split]
    return {row["class_name"]: row for row in table.to_dict("records")}


def test_per_class_counts_shares_buckets_and_aspect() -> None:
    report = class_distribution(NAMES, small_dataset())

    assert list(report.per_class.columns) == list(PER_CLASS_COLUMNS)
    assert list(dict.fromkeys(report.per_class["split"])) == ["all", "train", "val"]
    every = rows(report, "all")
    assert [(every[c]["boxes"], every[c]["images"]) for c in NAMES] == [(3, 2), (2, 2), (0, 0)]
    assert [every[c]["share"] for c in NAMES] == pytest.approx([0.6, 0.4, 0.0])
    assert [(every[c]["small"], every[c]["medium"], every[c]["large"]) for c in NAMES] == [
        (1, 1, 1),
        (1, 1, 0),
        (0, 0, 0),
    ]
    assert every["cat"]["aspect_median"] == pytest.approx(1.0)  # 0.5, 1, 1
    assert every["dog"]["aspect_median"] == pytest.approx(2.5)  # 2, 3
    assert math.isnan(every["bird"]["aspect_median"])

    train, val = rows(report, "train"), rows(report, "val")
    assert [(train[c]["boxes"], train[c]["images"]) for c in NAMES] == [(3, 2), (1, 1), (0, 0)]
    assert [train[c]["share"] for c in NAMES] == pytest.approx([0.75, 0.25, 0.0])
    assert [(val[c]["boxes"], val[c]["share"]) for c in NAMES] == [(0, 0.0), (1, 1.0), (0, 0.0)]
    assert val["dog"]["aspect_median"] == pytest.approx(3.0)


def test_dataset_wide_figures() -> None:
    report = class_distribution(NAMES, small_dataset())

    assert (report.images, report.boxes) == (4, 5)
    assert report.per_split.to_dict("records") == [
        {"split": "all", "images": 4, "boxes": 5, "images_without_boxes": 1},
        {"split": "train", "images": 2, "boxes": 4, "images_without_boxes": 0},
        {"split": "val", "images": 2, "boxes": 1, "images_without_boxes": 1},
    ]
    assert report.size_buckets == {"small": 2, "medium": 2, "large": 1}
    # Aspects sorted: 0.5, 1, 1, 2, 3; numpy's linear percentiles: p5 at 0.2 of the way, p95 at 3.8.
    assert (report.aspect_ratio.median, report.aspect_ratio.p5, report.aspect_ratio.p95) == pytest.approx(
        (1.0, 0.6, 2.8)
    )
    assert report.relative_size.median == pytest.approx(0.4)
    assert (report.objects_per_image.mean, report.objects_per_image.median, report.objects_per_image.max) == (
        1.25,
        1.0,
        3,
    )
    assert report.imbalance_ratio == pytest.approx(1.5)
    assert report.empty_classes == ["bird"]
    assert sorted(report.box_areas.tolist()) == [200, 300, 1600, 5000, 10000]


def test_coco_bucket_edges_are_lower_inclusive() -> None:
    boxes = [Box(0, 0, 0, 31.9, 32), Box(0, 0, 0, 32, 32), Box(0, 0, 0, 96, 95.9), Box(0, 0, 0, 96, 96)]
    report = class_distribution(["x"], [(None, boxes, 100, 100)])
    assert report.size_buckets == {"small": 1, "medium": 2, "large": 1}


def test_without_splits_only_all_is_reported_and_mixed_splits_get_unassigned() -> None:
    plain = class_distribution(NAMES, [(None, [Box(0, 0, 0, 5, 5)], 10, 10), (None, [], 10, 10)])
    assert set(plain.per_class["split"]) == {"all"}
    assert len(plain.per_class) == len(NAMES)

    mixed = class_distribution(
        NAMES, [("test", [Box(0, 0, 0, 5, 5)], 10, 10), (None, [Box(2, 0, 0, 5, 5)], 10, 10)]
    )
    assert list(dict.fromkeys(mixed.per_class["split"])) == ["all", "test", "unassigned"]
    assert rows(mixed, "unassigned")["bird"]["boxes"] == 1


def test_empty_dataset() -> None:
    report = class_distribution(NAMES, [])
    assert (report.images, report.boxes, report.imbalance_ratio) == (0, 0, None)
    assert report.empty_classes == NAMES
    assert report.per_class["boxes"].sum() == 0
    assert math.isnan(report.aspect_ratio.median)
    assert report.objects_per_image.max == 0


def test_unknown_class_index_is_rejected() -> None:
    with pytest.raises(ValueError, match="class indices"):
        class_distribution(NAMES, [(None, [Box(3, 0, 0, 5, 5)], 10, 10)])


def test_arrays_entry_point_matches_and_handles_a_million_boxes() -> None:
    small = class_distribution(NAMES, small_dataset())
    again = class_distribution_from_arrays(NAMES, BoxArrays.from_images(small_dataset()))
    assert again.per_class.equals(small.per_class)

    rng = np.random.default_rng(0)
    n_boxes, n_images = 1_000_000, 100_000
    corner = rng.uniform(0, 500, size=(n_boxes, 2))
    size = rng.uniform(1, 200, size=(n_boxes, 2))
    arrays = BoxArrays(
        image_splits=[("train", "val", "test")[i % 3] for i in range(n_images)],
        image_sizes=np.full((n_images, 2), 640.0),
        box_image=np.sort(rng.integers(0, n_images, size=n_boxes)),
        box_class=rng.integers(0, 80, size=n_boxes),
        box_xyxy=np.hstack([corner, corner + size]),
    )
    report = class_distribution_from_arrays([f"c{i}" for i in range(80)], arrays)

    assert report.boxes == n_boxes
    assert report.per_class.loc[report.per_class["split"] != "all", "boxes"].sum() == n_boxes
    # how fast is for `make bench` (stage class_distribution), not for a unit test on a shared machine


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_charts_are_small_deterministic_pngs() -> None:
    report = class_distribution(NAMES, small_dataset())
    bars = plot_class_bars(report)
    histogram = plot_box_size_histogram(report)

    assert _png_size(bars) == (800, 400) and _png_size(histogram) == (800, 400)
    assert bars == plot_class_bars(report)
    assert histogram == plot_box_size_histogram(report.box_areas)
    assert _png_size(plot_box_size_histogram(np.zeros(0))) == (800, 400)


def test_class_bars_fit_the_inline_limit_most_boxes_first() -> None:
    report = class_distribution(NAMES, small_dataset())
    text = class_bars_markdown(report)
    rows = [line.split(" | ") for line in text.splitlines()[2:]]
    counts = {name.lstrip("| "): int(boxes.replace(",", "")) for name, boxes, _ in rows}
    assert counts == dict(
        zip(report.class_names, report.per_class.query("split == 'all'")["boxes"], strict=True)
    )
    assert list(counts.values()) == sorted(counts.values(), reverse=True)
    assert "█" * 16 in rows[0][2]  # the most frequent class has the full bar


def test_class_bars_of_many_classes_say_how_many_are_left_out() -> None:
    names = [f"class_{i:02d}" for i in range(80)]
    images = [ImageBoxes("train", [Box(i, 0, 0, 10, 10)] * (i + 1), 100, 100) for i in range(80)]
    text = class_bars_markdown(class_distribution(names, images))
    assert len(text) < 1000
    lines = text.splitlines()
    shown = lines[2:-1]
    assert shown[0].startswith("| class_79 | 80 |") and shown[1].startswith("| class_78 | 79 |")
    assert lines[-1] == f"| … {80 - len(shown)} more classes | | |"
