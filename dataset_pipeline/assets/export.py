"""dataset_export: one deterministic zip per format, never visible half-written (old GET /download)."""

import dataclasses
import os
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import dagster as dg
from pydantic import Field

from dataset_pipeline.assets.augmentation import AUGMENTED_FOLDER
from dataset_pipeline.assets.common import (
    RERUN_WHEN_UPSTREAM_CHANGES,
    TRANSIENT_ERROR_RETRY,
    clean_up_interrupted_writes,
    dataset_row,
    failing_clearly_when_disk_full,
    source_root,
)
from dataset_pipeline.assets.splits import dataset_splits
from dataset_pipeline.db import repository
from dataset_pipeline.db.models import Dataset, SplitReport
from dataset_pipeline.domain.export_zip import ZipWriteReport, export_dataset_zip, fsync_directory
from dataset_pipeline.domain.image_checks import upright_jpeg_bytes
from dataset_pipeline.domain.model import CanonicalDataset, CanonicalImage, DatasetFormat, LabelState
from dataset_pipeline.formats import RENDERERS
from dataset_pipeline.partitions import dataset_partitions
from dataset_pipeline.resources.database import DatabaseResource


def pipeline_version() -> str:
    try:
        return version("dataset_pipeline")
    except PackageNotFoundError:
        return "0+unknown"


class ExportConfig(dg.Config):
    formats: list[str] = Field(
        default=["yolo", "coco", "voc"], description="Which zips to write: yolo, coco, voc"
    )


def export_file_name(relative_path: str, is_augmented: bool) -> str:
    """A flat, unique, stable name: folders become '__' so images from several folders cannot collide."""
    name = Path(relative_path).as_posix().replace("/", "__")
    return f"aug__{name}" if is_augmented else name


@dg.asset(
    partitions_def=dataset_partitions,
    deps=[dataset_splits],
    group_name="export",
    kinds={"python", "postgres"},
    retry_policy=TRANSIENT_ERROR_RETRY,
    automation_condition=RERUN_WHEN_UPSTREAM_CHANGES,
    description="Zipped YOLO / COCO / VOC exports with a manifest, under storage/{user}/{project}/{dataset}/exports.",
)
def dataset_export(
    context: dg.AssetExecutionContext, config: ExportConfig, database: DatabaseResource
) -> dg.MaterializeResult:
    unknown = sorted(set(config.formats) - {str(f) for f in DatasetFormat})
    if unknown:
        raise dg.Failure(
            f"unknown export format(s) {unknown}; choose from yolo, coco, voc", allow_retries=False
        )
    with database.session() as session:
        dataset = dataset_row(session, context.partition_key)
        dataset_id, class_names = dataset.id, list(dataset.class_names)
        files, dataset_dir = source_root(dataset), Path(dataset.storage_path or "")
        user, project = repository.owner_of(session, dataset)
        validation_summary = dict(dataset.validation_summary)
        report = session.get(SplitReport, dataset_id)
        split_counts = dict(report.counts) if report else {}
        split_metrics = dict(report.metrics) if report else {}
        stored = [image for image in repository.load_usable_images(session, dataset_id) if image.split]

    images: list[CanonicalImage] = []
    payloads: dict[str, Path | bytes] = {}
    for image in stored:
        path = (dataset_dir / AUGMENTED_FOLDER if image.is_augmented else files) / image.relative_path
        name = export_file_name(image.relative_path, image.is_augmented)
        upright = None if image.is_augmented else upright_jpeg_bytes(path)
        if upright is not None:
            name = str(Path(name).with_suffix(".jpg"))
        payloads[name] = upright if upright is not None else path
        images.append(
            CanonicalImage(
                name,
                path,
                image.width,
                image.height,
                image.split or "train",
                image.boxes,
                LabelState(image.label_state),
            )
        )
    if not images:
        raise dg.Failure(f"dataset {context.partition_key} has no images in any split; nothing to export")
    canonical = CanonicalDataset(class_names=class_names, images=images)

    exports_dir = dataset_dir / "exports"
    exports_dir.mkdir(exist_ok=True)
    clean_up_interrupted_writes(context, dataset_dir)
    manifest_fields = {
        "owner": user,
        "project": project,
        "class_names": class_names,
        "split_counts": split_counts,
        "split_metrics": split_metrics,
        "validation_summary": validation_summary,
        "run_id": context.run.run_id,
        "pipeline_version": pipeline_version(),
    }
    with failing_clearly_when_disk_full(exports_dir, f"exporting {context.partition_key}"):
        written = write_exports(
            exports_dir, context.partition_key, canonical, payloads, config.formats, manifest_fields
        )
    metadata: dict[str, object] = {"images": len(images), "boxes": sum(len(i.boxes) for i in images)}
    with database.session() as session:  # one transaction: the rows describe all new zips or none
        for fmt, report in written.items():
            repository.upsert_export(
                session, dataset_id, fmt, report.path, report.size_bytes, report.sha256, context.run.run_id
            )
            context.log.info(f"{fmt}: {report.path} ({report.size_bytes:,} bytes)")
            metadata[f"{fmt}_zip"] = dg.MetadataValue.path(str(report.path))
            metadata[f"{fmt}_bytes"] = report.size_bytes
        repository.set_status(session, session.get(Dataset, dataset_id), "exported")
    return dg.MaterializeResult(metadata=metadata)


def write_exports(
    exports_dir: Path,
    partition_key: str,
    canonical: CanonicalDataset,
    payloads: dict[str, Path | bytes],
    formats: list[str],
    manifest_fields: dict[str, object],
) -> dict[str, ZipWriteReport]:
    """Write every format's zip into a hidden staging folder, then move them all into place.

    A failure while writing (a full disk, a crash) leaves every previous zip untouched: nothing is renamed until
    all zips are complete, and the staging folder is removed (or swept by the next run when the process died).
    """
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=exports_dir))
    try:
        staged = {
            fmt: export_dataset_zip(
                staging / f"{partition_key}-{fmt}.zip",
                RENDERERS[DatasetFormat(fmt)](canonical),
                payloads,
                {**manifest_fields, "dataset": partition_key, "dataset_format": fmt},
            )
            for fmt in formats
        }
        published = {}
        for fmt, report in staged.items():
            target = exports_dir / report.path.name
            os.replace(report.path, target)
            published[fmt] = dataclasses.replace(report, path=target)
        fsync_directory(exports_dir)
        return published
    finally:
        shutil.rmtree(staging, ignore_errors=True)
