"""A deterministic synthetic detection dataset for tests, the demo and benchmarks.

Images are real JPEGs (gradient and blotchy-noise backgrounds with filled shapes inside their boxes) and the
labels are written by the same `render()` functions exports use, so a generated upload exercises the real
parsers. Class frequencies follow a Zipf-like long tail, as real datasets do. The same arguments always give the
same bytes: structure comes from one seeded generator, each image from its own `(seed, index)` generator.
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from dataset_pipeline.domain.model import (
    SPLITS,
    Box,
    CanonicalDataset,
    CanonicalImage,
    DatasetFormat,
    LabelState,
)
from dataset_pipeline.formats import RENDERERS

#: Readable names for the first classes; later ones are `class_NN`.
BASE_CLASS_NAMES: tuple[str, ...] = (
    "person",
    "car",
    "bicycle",
    "dog",
    "cat",
    "traffic_light",
    "truck",
    "bus",
    "bird",
    "horse",
    "boat",
    "chair",
)

#: Zipf exponent of the class frequencies: class 0 is the most common, the last ones are rare.
ZIPF_EXPONENT = 1.2
MAX_BOXES = 10
JPEG_QUALITY = 85
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def class_names(n_classes: int) -> list[str]:
    """`person`, `car`, ... then `class_12`, `class_13`, ... for as many classes as asked."""
    return [BASE_CLASS_NAMES[i] if i < len(BASE_CLASS_NAMES) else f"class_{i:02d}" for i in range(n_classes)]


def class_weights(n_classes: int) -> np.ndarray:
    """Zipf-like probabilities of each class, summing to 1."""
    weights = 1.0 / np.arange(1, n_classes + 1, dtype=np.float64) ** ZIPF_EXPONENT
    return weights / weights.sum()


def _split_counts(n_images: int, ratios: tuple[float, float, float]) -> list[int]:
    """Exact counts per split by largest remainder, so 10 images at 0.8/0.1/0.1 give 8/1/1."""
    if len(ratios) != len(SPLITS) or any(r < 0 or not math.isfinite(r) for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"split_ratios must be three non-negative numbers with a positive sum, got {ratios}")
    shares = [n_images * r / sum(ratios) for r in ratios]
    counts = [math.floor(s) for s in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: (counts[i] - shares[i], i))
    for i in by_remainder[: n_images - sum(counts)]:
        counts[i] += 1
    return counts


def make_canonical_dataset(
    n_images: int,
    *,
    seed: int = 0,
    image_size: tuple[int, int] = (640, 480),
    n_classes: int = 5,
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    image_dir: Path = Path("images"),
) -> CanonicalDataset:
    """The labels of a synthetic dataset: 1-10 integer-pixel boxes per image, classes drawn Zipf-like.

    No pixels are made here; `source_path` is `image_dir / file_name`, where `draw_image` output may be put.
    """
    width, height = image_size
    if n_images < 0 or n_classes < 1 or width < 16 or height < 16:
        raise ValueError("need n_images >= 0, n_classes >= 1 and an image of at least 16x16 pixels")
    rng = np.random.default_rng(seed)
    splits = np.repeat(np.array(SPLITS), _split_counts(n_images, split_ratios))
    splits = splits[rng.permutation(n_images)]
    counts = rng.integers(1, MAX_BOXES + 1, size=n_images)
    total = int(counts.sum())
    classes = rng.choice(n_classes, size=total, p=class_weights(n_classes))
    # Box sizes are log-uniform between 4% and 50% of the image side, with a jittered aspect ratio.
    scale = np.exp(rng.uniform(math.log(0.04), math.log(0.5), size=total))
    aspect = np.exp(rng.uniform(-0.7, 0.7, size=total))
    box_w = np.clip(np.round(scale * np.sqrt(aspect) * width), 2, width).astype(np.int64)
    box_h = np.clip(np.round(scale / np.sqrt(aspect) * height), 2, height).astype(np.int64)
    x0 = np.floor(rng.uniform(0, 1, size=total) * (width - box_w + 1)).astype(np.int64)
    y0 = np.floor(rng.uniform(0, 1, size=total) * (height - box_h + 1)).astype(np.int64)
    rows = np.stack([classes, x0, y0, x0 + box_w, y0 + box_h], axis=1).tolist()

    images: list[CanonicalImage] = []
    start = 0
    for index in range(n_images):
        end = start + int(counts[index])
        boxes = [Box(c, float(a), float(b), float(x), float(y)) for c, a, b, x, y in rows[start:end]]
        start = end
        file_name = f"img_{index:06d}.jpg"
        images.append(
            CanonicalImage(
                file_name,
                image_dir / file_name,
                width,
                height,
                str(splits[index]),
                boxes,
                LabelState.LABELLED,
            )
        )
    return CanonicalDataset(class_names(n_classes), images)


def _palette(n_classes: int) -> np.ndarray:
    """A fixed, well-spread colour per class (golden-angle hues), so a class looks alike across images."""
    hues = (np.arange(n_classes) * 0.618033988749895) % 1.0
    k = (np.array([5.0, 3.0, 1.0])[None, :] + hues[:, None] * 6.0) % 6.0
    rgb = 1.0 - 0.75 * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return (rgb * 255).astype(np.uint8)


class _Painter:
    """Draws images of one size; the coordinate ramps are computed once and shared by every image."""

    def __init__(self, width: int, height: int, n_classes: int) -> None:
        self.width, self.height = width, height
        xs = np.linspace(0.0, 255.0, width, dtype=np.float32)[None, :]
        ys = np.linspace(0.0, 255.0, height, dtype=np.float32)[:, None]
        ramps = [xs + 0 * ys, ys + 0 * xs, (xs + ys) / 2, (xs + 255 - ys) / 2]
        self.ramps = [Image.fromarray(ramp.astype(np.uint8), mode="L") for ramp in ramps]
        self.palette = _palette(n_classes)

    def draw(self, image: CanonicalImage, seed: int, index: int) -> bytes:
        # All per-pixel work is done by Pillow's C code: a two-colour gradient blended with blotchy noise
        # (a coarse random grid scaled up smoothly), cheap to make and to JPEG-encode.
        rng = np.random.default_rng([seed, index])
        low, high = (tuple(int(v) for v in colour) for colour in rng.integers(0, 256, size=(2, 3)))
        ramp = self.ramps[int(rng.integers(len(self.ramps)))]
        gradient = ImageOps.colorize(ramp, black=low, white=high)
        grid = (max(self.height // 24, 2), max(self.width // 24, 2), 3)
        coarse = Image.fromarray(rng.integers(0, 256, size=grid, dtype=np.uint8))
        blotches = coarse.resize((self.width, self.height), Image.Resampling.BILINEAR)
        canvas = Image.blend(gradient, blotches, 0.25)
        pen = ImageDraw.Draw(canvas)
        jitter = rng.integers(-30, 31, size=(max(len(image.boxes), 1), 3))
        for box, shift in zip(image.boxes, jitter, strict=False):
            colour = tuple(int(v) for v in np.clip(self.palette[box.class_index].astype(int) + shift, 0, 255))
            outline = tuple(255 - v for v in colour)
            corners = (box.x_min, box.y_min, box.x_max - 1, box.y_max - 1)
            shape = box.class_index % 3
            if shape == 0:
                pen.rectangle(corners, fill=colour, outline=outline)
            elif shape == 1:
                pen.ellipse(corners, fill=colour, outline=outline)
            else:
                x0, y0, x1, y1 = corners
                pen.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=colour, outline=outline)
        out = io.BytesIO()
        canvas.save(out, format="JPEG", quality=JPEG_QUALITY)
        return out.getvalue()


def draw_image(image: CanonicalImage, *, n_classes: int, seed: int = 0, index: int = 0) -> bytes:
    """JPEG bytes of one synthetic image with its boxes drawn as filled shapes (deterministic)."""
    return _Painter(image.width, image.height, n_classes).draw(image, seed, index)


def _entries(dataset: CanonicalDataset, fmt: DatasetFormat, seed: int) -> Iterator[tuple[str, bytes]]:
    """Every file of the rendered dataset as (archive path, bytes), sorted by path."""
    rendered = RENDERERS[fmt](dataset)
    painters: dict[tuple[int, int], _Painter] = {}
    by_path: dict[str, tuple[int, CanonicalImage] | bytes] = dict(rendered.label_files.items())
    for index, image in enumerate(dataset.images):
        by_path[rendered.image_paths[image.file_name]] = (index, image)
    for path in sorted(by_path):
        item = by_path[path]
        if isinstance(item, bytes):
            yield path, item
            continue
        index, image = item
        size = (image.width, image.height)
        painter = painters.get(size) or painters.setdefault(size, _Painter(*size, len(dataset.class_names)))
        yield path, painter.draw(image, seed, index)


def generate_dataset(
    out: Path,
    *,
    n_images: int,
    fmt: DatasetFormat,
    seed: int = 0,
    image_size: tuple[int, int] = (640, 480),
    n_classes: int = 5,
    zipped: bool = False,
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> Path:
    """Write a synthetic dataset in `fmt` and return where it is.

    Unzipped, the dataset root is the folder `out`. Zipped, the archive is `out` when it ends in `.zip`, else
    `out.zip` beside it; its entries are at the archive root, sorted, with fixed timestamps, so the same
    arguments always give a byte-identical zip.
    """
    dataset = make_canonical_dataset(
        n_images, seed=seed, image_size=image_size, n_classes=n_classes, split_ratios=split_ratios
    )
    entries = _entries(dataset, DatasetFormat(fmt), seed)
    if not zipped:
        for path, data in entries:
            target = out / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return out
    archive = out if out.suffix.lower() == ".zip" else out.with_name(out.name + ".zip")
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".part")
    with zipfile.ZipFile(partial, "w") as bundle:
        for path, data in entries:
            info = zipfile.ZipInfo(path, date_time=_FIXED_ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_STORED if path.lower().endswith(".jpg") else zipfile.ZIP_DEFLATED
            bundle.writestr(info, data)
    os.replace(partial, archive)
    return archive
