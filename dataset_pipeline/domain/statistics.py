"""Class distribution of a detection dataset: what a user checks before trusting a training run.

Everything is computed on flat numpy arrays (one row per box) so a million boxes take about a second; the
per-class table is a pandas DataFrame because that is what the UI and the database writer consume.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from dataset_pipeline.domain.model import SPLITS, Box

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: COCO's size buckets, by box area in pixels.
SMALL_MAX_AREA = 32.0**2
MEDIUM_MAX_AREA = 96.0**2

#: The split name under which the whole dataset is reported, and the one for images without a split.
ALL = "all"
UNASSIGNED = "unassigned"

PER_CLASS_COLUMNS = (
    "split",
    "class_index",
    "class_name",
    "boxes",
    "images",
    "share",
    "small",
    "medium",
    "large",
    "aspect_median",
)


class ImageBoxes(NamedTuple):
    """One image's contribution: its split (None when the source had none), boxes and upright size."""

    split: str | None
    boxes: Sequence[Box]
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Spread:
    """Median and 5th/95th percentiles; NaN when there is nothing to measure."""

    median: float
    p5: float
    p95: float


@dataclass(frozen=True, slots=True)
class ObjectsPerImage:
    mean: float
    median: float
    max: int


@dataclass(slots=True)
class BoxArrays:
    """The flat form every statistic is computed from: one row per box, one entry per image."""

    image_splits: list[str | None]  # per image
    image_sizes: np.ndarray  # (images, 2) width, height
    box_image: np.ndarray  # (boxes,) index into the images
    box_class: np.ndarray  # (boxes,)
    box_xyxy: np.ndarray  # (boxes, 4) pixels

    @classmethod
    def from_images(
        cls, images: Sequence[ImageBoxes | tuple[str | None, Sequence[Box], int, int]]
    ) -> BoxArrays:
        counts = np.fromiter((len(image[1]) for image in images), dtype=np.int64, count=len(images))
        flat = [(b.class_index, b.x_min, b.y_min, b.x_max, b.y_max) for image in images for b in image[1]]
        table = np.array(flat, dtype=np.float64).reshape(-1, 5)
        return cls(
            image_splits=[image[0] for image in images],
            image_sizes=np.array([(image[2], image[3]) for image in images], dtype=np.float64).reshape(-1, 2),
            box_image=np.repeat(np.arange(len(images)), counts),
            box_class=table[:, 0].astype(np.int64),
            box_xyxy=table[:, 1:],
        )


@dataclass(slots=True)
class DistributionReport:
    """Per-class table (one row per split and class; split "all" always) and dataset-wide figures."""

    class_names: list[str]
    per_class: pd.DataFrame  # columns: PER_CLASS_COLUMNS
    per_split: pd.DataFrame  # columns: split, images, boxes, images_without_boxes
    images: int
    boxes: int
    size_buckets: dict[str, int]  # small / medium / large, COCO definition
    aspect_ratio: Spread  # width / height
    relative_size: Spread  # sqrt(box area / image area)
    objects_per_image: ObjectsPerImage
    imbalance_ratio: float | None  # most / fewest boxes over classes with at least one; None without boxes
    empty_classes: list[str]
    box_areas: np.ndarray  # pixel area of every box, for the size histogram
    box_classes: np.ndarray  # class of every box, aligned with box_areas


def _spread(values: np.ndarray) -> Spread:
    if values.size == 0:
        return Spread(float("nan"), float("nan"), float("nan"))
    p5, median, p95 = np.percentile(values, [5, 50, 95])
    return Spread(float(median), float(p5), float(p95))


def _class_medians(classes: np.ndarray, values: np.ndarray, n_classes: int) -> np.ndarray:
    """Median of `values` per class in one sort instead of a loop over classes; NaN for empty classes."""
    order = np.lexsort((values, classes))
    sorted_values = values[order]
    counts = np.bincount(classes, minlength=n_classes)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    result = np.full(n_classes, np.nan)
    has = counts > 0
    upper = starts[has] + counts[has] // 2
    lower = starts[has] + (counts[has] - 1) // 2
    result[has] = (sorted_values[upper] + sorted_values[lower]) / 2
    return result


def _split_order(splits: Sequence[str | None]) -> list[str]:
    """Known splits in pipeline order, then any others alphabetically, then images without a split."""
    present = {s for s in splits if s is not None}
    ordered = [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))
    if present and any(s is None for s in splits):
        ordered.append(UNASSIGNED)
    return ordered


def class_distribution(
    class_names: Sequence[str], images: Sequence[ImageBoxes | tuple[str | None, Sequence[Box], int, int]]
) -> DistributionReport:
    """Class distribution of images given as (split, boxes, width, height)."""
    return class_distribution_from_arrays(class_names, BoxArrays.from_images(images))


def class_distribution_from_arrays(class_names: Sequence[str], arrays: BoxArrays) -> DistributionReport:
    """Class distribution from flat arrays, for callers whose boxes are already columnar (e.g. from SQL)."""
    n_classes = len(class_names)
    cls = np.asarray(arrays.box_class, dtype=np.int64)
    if cls.size and (cls.min() < 0 or cls.max() >= n_classes):
        raise ValueError(f"box class indices must lie in 0..{n_classes - 1} for {n_classes} class names")
    xyxy = np.asarray(arrays.box_xyxy, dtype=np.float64).reshape(-1, 4)
    box_image = np.asarray(arrays.box_image, dtype=np.int64)
    n_images = len(arrays.image_splits)

    widths = xyxy[:, 2] - xyxy[:, 0]
    heights = xyxy[:, 3] - xyxy[:, 1]
    areas = np.clip(widths, 0, None) * np.clip(heights, 0, None)
    bucket = np.where(areas < SMALL_MAX_AREA, 0, np.where(areas < MEDIUM_MAX_AREA, 1, 2))
    measurable = (widths > 0) & (heights > 0)
    aspect = np.divide(widths, heights, out=np.full_like(widths, np.nan), where=measurable)

    split_names = _split_order(arrays.image_splits)
    code_of = {name: code for code, name in enumerate(split_names)}
    image_code = np.array(
        [code_of.get(UNASSIGNED if s is None else s, -1) for s in arrays.image_splits], dtype=int
    )
    box_code = image_code[box_image]

    frames = []
    split_rows = []
    for code, split in enumerate([ALL, *split_names], start=-1):
        in_split = np.ones(cls.size, dtype=bool) if split == ALL else box_code == code
        images_in_split = n_images if split == ALL else int((image_code == code).sum())
        frames.append(
            _per_class_rows(
                split,
                class_names,
                cls[in_split],
                box_image[in_split],
                bucket[in_split],
                aspect[in_split],
                measurable[in_split],
            )
        )
        with_boxes = np.unique(box_image[in_split]).size
        split_rows.append((split, images_in_split, int(in_split.sum()), images_in_split - with_boxes))
    per_class = pd.concat(frames, ignore_index=True)
    per_split = pd.DataFrame(split_rows, columns=["split", "images", "boxes", "images_without_boxes"])

    class_boxes = np.bincount(cls, minlength=n_classes)
    nonzero = class_boxes[class_boxes > 0]
    per_image = np.bincount(box_image, minlength=n_images) if n_images else np.zeros(0, dtype=np.int64)
    sizes = np.asarray(arrays.image_sizes, dtype=np.float64).reshape(-1, 2)
    image_area = sizes[box_image, 0] * sizes[box_image, 1] if box_image.size else np.zeros(0)
    relative = np.sqrt(areas[image_area > 0] / image_area[image_area > 0])

    return DistributionReport(
        class_names=list(class_names),
        per_class=per_class,
        per_split=per_split,
        images=n_images,
        boxes=int(cls.size),
        size_buckets=dict(
            zip(("small", "medium", "large"), np.bincount(bucket, minlength=3).tolist(), strict=True)
        ),
        aspect_ratio=_spread(aspect[measurable]),
        relative_size=_spread(relative),
        objects_per_image=ObjectsPerImage(
            mean=float(per_image.mean()) if n_images else 0.0,
            median=float(np.median(per_image)) if n_images else 0.0,
            max=int(per_image.max()) if n_images else 0,
        ),
        imbalance_ratio=float(nonzero.max() / nonzero.min()) if nonzero.size else None,
        empty_classes=[name for name, count in zip(class_names, class_boxes, strict=True) if count == 0],
        box_areas=areas,
        box_classes=cls,
    )


def _per_class_rows(
    split: str,
    class_names: Sequence[str],
    cls: np.ndarray,
    box_image: np.ndarray,
    bucket: np.ndarray,
    aspect: np.ndarray,
    measurable: np.ndarray,
) -> pd.DataFrame:
    n_classes = len(class_names)
    boxes = np.bincount(cls, minlength=n_classes)
    image_class = np.unique(box_image * max(n_classes, 1) + cls)
    images = (
        np.bincount(image_class % max(n_classes, 1), minlength=n_classes) if image_class.size else boxes * 0
    )
    buckets = np.bincount(cls * 3 + bucket, minlength=3 * n_classes).reshape(n_classes, 3)
    total = boxes.sum()
    return pd.DataFrame(
        {
            "split": split,
            "class_index": np.arange(n_classes, dtype=np.int64),
            "class_name": list(class_names),
            "boxes": boxes,
            "images": images,
            "share": boxes / total if total else np.zeros(n_classes),
            "small": buckets[:, 0],
            "medium": buckets[:, 1],
            "large": buckets[:, 2],
            "aspect_median": _class_medians(cls[measurable], aspect[measurable], n_classes),
        },
        columns=list(PER_CLASS_COLUMNS),
    )


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    # No "Software" entry: the bytes depend on the data only, so an unchanged chart is an unchanged asset.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


#: Width of a chart file; previews shown inline in the UI are drawn narrower (CHART_PREVIEW_WIDTH_PX).
CHART_WIDTH_PX = 800
CHART_PREVIEW_WIDTH_PX = 360


def _figure(width_px: int = CHART_WIDTH_PX) -> tuple[Figure, Axes]:
    """A figure detached from pyplot's global state, rendered with Agg: 800x400 px, or narrower laid out as
    a smaller page (5.6 x 3.2 in) so its text stays readable instead of shrinking with it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    inches = (8.0, 4.0) if width_px >= CHART_WIDTH_PX else (5.6, 3.2)
    figure = Figure(figsize=inches, dpi=width_px / inches[0], layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def class_bars_markdown(report: DistributionReport, max_chars: int = 990, width: int = 16) -> str:
    """Boxes per class as a markdown table with text bars, most boxes first, cut to `max_chars` (the UI
    shows markdown inline only below 1,000 characters) with a last row saying how many classes are left out."""
    overall = report.per_class[report.per_class["split"] == ALL]
    rows = sorted(
        zip(overall["class_name"], overall["boxes"].astype(int), overall["share"].astype(float), strict=True),
        key=lambda row: (-row[1], row[0]),
    )
    most = max((boxes for _, boxes, _ in rows), default=0)
    lines = ["| class | boxes | share |", "|:--|--:|:--|"]
    for shown, (name, boxes, share) in enumerate(rows):
        bar = "█" * round(width * boxes / most) if most else ""
        line = f"| {name.replace('|', '¦')} | {boxes:,} | {bar} {share:.1%} |"
        left = len(rows) - shown - 1
        rest = f"| … {left} more {'class' if left == 1 else 'classes'} | | |" if left else ""
        if len("\n".join([*lines, line, rest])) >= max_chars:
            lines.append(f"| … {len(rows) - shown} more classes | | |")
            break
        lines.append(line)
    return "\n".join(lines)


def plot_class_bars(report: DistributionReport, width_px: int = CHART_WIDTH_PX) -> bytes:
    """Boxes per class as a PNG, stacked by split when the dataset has splits."""
    from matplotlib.ticker import MaxNLocator

    figure, axes = _figure(width_px)
    table = report.per_class
    splits = [s for s in dict.fromkeys(table["split"]) if s != ALL] or [ALL]
    positions = np.arange(len(report.class_names))
    bottom = np.zeros(len(report.class_names))
    for split in splits:
        counts = table.loc[table["split"] == split, "boxes"].to_numpy(dtype=float)
        axes.bar(positions, counts, bottom=bottom, label=split, width=0.8)
        bottom += counts
    many = len(report.class_names) > 20
    axes.set_xticks(
        positions,
        report.class_names,
        rotation=90 if many else 30,
        ha="center" if many else "right",
        rotation_mode="anchor" if not many else "default",
        fontsize=6 if len(report.class_names) > 40 else 8,
    )
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("boxes")
    axes.set_title(f"Boxes per class ({report.boxes:,} boxes, {report.images:,} images)")
    if len(splits) > 1:
        axes.legend(fontsize=8)
    return _png(figure)


def plot_box_size_histogram(
    report_or_areas: DistributionReport | np.ndarray, width_px: int = CHART_WIDTH_PX
) -> bytes:
    """Histogram of box size (square root of the area, px, log scale) with COCO's small/medium/large cuts."""
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    areas = report_or_areas.box_areas if isinstance(report_or_areas, DistributionReport) else report_or_areas
    sides = np.sqrt(np.asarray(areas, dtype=np.float64))
    sides = sides[np.isfinite(sides) & (sides > 0)]
    figure, axes = _figure(width_px)
    low = min(float(sides.min()), 8.0) if sides.size else 8.0
    high = max(float(sides.max()), 128.0) if sides.size else 128.0
    axes.hist(sides, bins=np.geomspace(low, high * 1.001, 50), color="#4c72b0")
    axes.set_xscale("log")
    axes.set_xlim(low, high * 1.001)
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    buckets = np.bincount(np.searchsorted([32.0, 96.0], sides, side="right"), minlength=3)
    for cut in (32.0, 96.0):
        axes.axvline(cut, color="#c44e52", linestyle="--", linewidth=1)
    for x, (name, count) in zip(
        (low, 32.0, 96.0), zip(("small", "medium", "large"), buckets, strict=True), strict=True
    ):
        axes.annotate(
            f" {name}: {count:,}",
            (x, 0.97),
            xycoords=("data", "axes fraction"),
            va="top",
            ha="left",
            fontsize=8,
        )
    axes.set_xlabel("box size: sqrt(area) in pixels (COCO buckets at 32 and 96)")
    axes.set_ylabel("boxes")
    axes.set_title(f"Box sizes ({sides.size:,} boxes)")
    return _png(figure)
