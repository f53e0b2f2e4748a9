"""Readers and writers for YOLO, COCO and Pascal VOC; everything else sees only the canonical model."""

from __future__ import annotations

from collections.abc import Callable

from dataset_pipeline.domain.model import CanonicalDataset, DatasetFormat, RenderedDataset
from dataset_pipeline.formats import coco, voc, yolo
from dataset_pipeline.formats.detect import PARSERS, detect_format, locate_dataset, parse_dataset

RENDERERS: dict[DatasetFormat, Callable[[CanonicalDataset], RenderedDataset]] = {
    DatasetFormat.YOLO: yolo.render,
    DatasetFormat.COCO: coco.render,
    DatasetFormat.VOC: voc.render,
}

__all__ = ["PARSERS", "RENDERERS", "detect_format", "locate_dataset", "parse_dataset"]
