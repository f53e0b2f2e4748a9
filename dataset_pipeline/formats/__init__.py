"""Readers for YOLO, COCO, Pascal VOC, CreateML and KITTI, writers for the first three; everything else sees
only the canonical model."""

from __future__ import annotations

from collections.abc import Callable

from dataset_pipeline.domain.model import (
    DEFAULT_VOC_PIXEL_ORIGIN,
    CanonicalDataset,
    DatasetFormat,
    RenderedDataset,
    VocPixelOrigin,
)
from dataset_pipeline.formats import coco, voc, yolo
from dataset_pipeline.formats.detect import PARSERS, detect_format, locate_dataset, parse_dataset

RENDERERS: dict[DatasetFormat, Callable[[CanonicalDataset], RenderedDataset]] = {
    DatasetFormat.YOLO: yolo.render,
    DatasetFormat.COCO: coco.render,
    DatasetFormat.VOC: voc.render,
}

#: The formats an export can be written in; uploads are read in more (PARSERS).
EXPORT_FORMATS: tuple[DatasetFormat, ...] = tuple(RENDERERS)


def render_export(
    fmt: DatasetFormat,
    dataset: CanonicalDataset,
    *,
    voc_pixel_origin: VocPixelOrigin = DEFAULT_VOC_PIXEL_ORIGIN,
) -> RenderedDataset:
    """Render `dataset` in `fmt`; only VOC has a pixel-origin convention to choose."""
    if fmt is DatasetFormat.VOC:
        return voc.render(dataset, pixel_origin=voc_pixel_origin)
    return RENDERERS[fmt](dataset)


__all__ = [
    "EXPORT_FORMATS",
    "PARSERS",
    "RENDERERS",
    "detect_format",
    "locate_dataset",
    "parse_dataset",
    "render_export",
]
