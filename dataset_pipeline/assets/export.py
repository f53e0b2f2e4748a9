"""dataset_export: one deterministic zip per format of a version's newest split, never visible half-written.

Every run adds a folder `v{N}/exports/{run_id}/` and one `exports` row per zip; download takes the newest.
"""

import dataclasses
import importlib.metadata
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
from pydantic import Field
from sqlalchemy.orm import Session

from dataset_pipeline.assets.common import (
    ASSET_GROUP,
    CPU_POOL,
    RERUN_WHEN_UPSTREAM_CHANGES,
    TRANSIENT_ERROR_RETRY,
    clean_up_interrupted_writes,
    failing_clearly_when_disk_full,
    retry_transient_errors_only,
    validated_version,
    version_metadata,
)
from dataset_pipeline.assets.splits import dataset_splits
from dataset_pipeline.db import repository
from dataset_pipeline.db.models import Augmentation, Dataset, DatasetVersion, SplitReport
from dataset_pipeline.domain.export_names import AugmentedCopy, export_names
from dataset_pipeline.domain.export_zip import ZipWriteReport, export_dataset_zip, fsync_directory
from dataset_pipeline.domain.image_checks import upright_jpeg_bytes
from dataset_pipeline.domain.model import (
    CanonicalDataset,
    CanonicalImage,
    ClassInfo,
    DatasetFormat,
    LabelState,
)
from dataset_pipeline.formats import EXPORT_FORMATS, coco, render_export
from dataset_pipeline.partitions import dataset_partitions
from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import LocalDatasetStorage, replace_directory


def pipeline_version() -> str:
    try:
        return importlib.metadata.version("dataset_pipeline")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


class ExportConfig(dg.Config):
    formats: list[str] = Field(
        default=["yolo", "coco", "voc"], description="Which zips to write: yolo, coco, voc"
    )
    voc_pixel_origin: int | None = Field(
        default=None,
        ge=0,
        le=1,
        description="How the VOC zip writes <bndbox>: 0 = the box's pixel edges (CVAT, Datumaro, torchvision), "
        "1 = the devkit's 1-based pixels; empty = the project's default (`dataset-pipeline project`)",
    )


@dataclasses.dataclass(frozen=True, slots=True)
class ExportItem:
    """An image the split placed: its stored facts, its file and its split."""

    image: repository.StoredImage
    path: Path
    split: str


def split_to_export(
    session: Session, storage: LocalDatasetStorage, dataset: Dataset, version: DatasetVersion
) -> tuple[SplitReport, list[ExportItem]]:
    """The version's newest split and the images it placed; images it left out are not exported."""
    report = repository.latest_split(session, version.id)
    if report is None:
        raise dg.Failure(
            f"dataset {dataset.partition_key} version {version.number} has no split yet; materialise "
            "dataset_splits first",
            allow_retries=False,
        )
    assignments = repository.assignments_of(session, report.id)
    folders = {False: storage.resolve(version.files_path)}
    if report.augmentation_id is not None:
        folders[True] = storage.resolve(session.get(Augmentation, report.augmentation_id).folder)
    items = [
        ExportItem(image, folders[image.is_augmented] / image.relative_path, assignments[image.id])
        for image in repository.load_images(session, version.id, augmentation_id=report.augmentation_id)
        if image.id in assignments
    ]
    return report, items


def exported_names(items: list[ExportItem], suffixes: dict[str, str]) -> dict[str, str]:
    """Stored relative path -> file name in the export: the original's own name (see domain.export_names)."""
    by_id = {item.image.id: item.image for item in items}
    copies = [
        AugmentedCopy(
            key=item.image.relative_path,
            source_key=by_id[item.image.source_image_id].relative_path,
            copy_index=item.image.copy_index or 0,
        )
        for item in items
        if item.image.is_augmented and item.image.source_image_id in by_id
    ]
    originals = {
        item.image.relative_path: suffixes[item.image.relative_path]
        for item in items
        if not item.image.is_augmented
    }
    names = export_names(originals, copies)
    for item in items:  # a copy whose source the split left out keeps its stored name
        names.setdefault(item.image.relative_path, Path(item.image.relative_path).name)
    return names


def canonical_export(
    items: list[ExportItem], class_names: list[str], class_info: list[ClassInfo], *, keep_source_ids: bool
) -> tuple[CanonicalDataset, dict[str, Path | bytes], dict[str, dict[str, object]]]:
    """The split's images under their export names, the bytes (or file) of each, and where each came from.

    An original that is not an upright RGB/L JPEG or PNG is re-encoded upright as JPEG (its name then ends
    in .jpg), since the boxes are in upright pixels. `keep_source_ids` keeps the upload's COCO image ids.
    """
    upright = {
        item.image.relative_path: upright_jpeg_bytes(item.path)
        for item in items
        if not item.image.is_augmented
    }
    suffixes = {path: ".jpg" if data is not None else Path(path).suffix for path, data in upright.items()}
    names = exported_names(items, suffixes)
    by_id = {item.image.id: item.image for item in items}
    images: list[CanonicalImage] = []
    payloads: dict[str, Path | bytes] = {}
    origins: dict[str, dict[str, object]] = {}
    for item in items:
        image = item.image
        name = names[image.relative_path]
        reencoded = upright.get(image.relative_path)
        payloads[name] = reencoded if reencoded is not None else item.path
        if image.is_augmented:
            source = by_id.get(image.source_image_id)
            origins[name] = {
                "augmented_from": source.relative_path if source else None,
                "copy": image.copy_index,
            }
        else:
            origins[name] = {"original": image.relative_path}
        images.append(
            CanonicalImage(
                name,
                item.path,
                image.width,
                image.height,
                item.split,
                image.boxes,
                LabelState(image.label_state),
                source_id=image.source_id if keep_source_ids and not image.is_augmented else None,
            )
        )
    return CanonicalDataset(class_names, images, class_info), payloads, origins


def class_table(canonical: CanonicalDataset) -> list[dict[str, object]]:
    """Every class with its id in each export: the YOLO index and the COCO category id."""
    coco_ids = coco.category_ids(canonical)
    return [
        {"name": name, "yolo_index": index, "coco_id": coco_ids[index]}
        for index, name in enumerate(canonical.class_names)
    ]


@dg.asset(
    partitions_def=dataset_partitions,
    deps=[dataset_splits],
    group_name=ASSET_GROUP,
    pool=CPU_POOL,
    kinds={"python", "postgres"},
    retry_policy=TRANSIENT_ERROR_RETRY,
    automation_condition=RERUN_WHEN_UPSTREAM_CHANGES,
    description="Zipped YOLO / COCO / VOC exports with a manifest, under storage/{user}/{project}/{dataset}/v{N}/exports.",
)
@retry_transient_errors_only
def dataset_export(
    context: dg.AssetExecutionContext,
    config: ExportConfig,
    database: DatabaseResource,
    storage: LocalDatasetStorage,
) -> dg.MaterializeResult:
    unknown = sorted(set(config.formats) - {str(f) for f in EXPORT_FORMATS})
    if unknown:
        raise dg.Failure(
            f"unknown export format(s) {unknown}; choose from {', '.join(EXPORT_FORMATS)}",
            allow_retries=False,
        )
    with database.session() as session:
        dataset, version, verdict = validated_version(session, context.partition_key)
        user, project = repository.owner_of(session, dataset)
        split, items = split_to_export(session, storage, dataset, version)
        project_origin = repository.voc_pixel_origin_of(session, dataset)
    voc_pixel_origin = project_origin if config.voc_pixel_origin is None else config.voc_pixel_origin

    canonical, payloads, origins = canonical_export(
        items,
        list(verdict.class_names),
        repository.class_info_of(verdict),
        keep_source_ids=version.format == DatasetFormat.COCO,
    )
    if not canonical.images:
        raise dg.Failure(
            f"dataset {context.partition_key} version {version.number} has no images in any split; "
            "nothing to export",
            allow_retries=False,
        )

    run_id = context.run.run_id
    exports_dir = storage.version_dir(user, project, dataset.name, version.number) / "exports"
    exports_dir.mkdir(exist_ok=True)
    clean_up_interrupted_writes(context, exports_dir)
    manifest_fields = {
        "dataset": dataset.partition_key,
        "version": version.number,
        "owner": user,
        "project": project,
        "class_table": class_table(canonical),
        "voc_pixel_origin": voc_pixel_origin,
        "split_counts": dict(split.counts),
        "split_metrics": dict(split.metrics),
        "validation_summary": dict(verdict.summary),
        "run_id": run_id,
        "pipeline_version": pipeline_version(),
    }
    with failing_clearly_when_disk_full(exports_dir, f"exporting {context.partition_key}"):
        written = write_exports(
            exports_dir / run_id,
            f"{dataset.partition_key}-v{version.number}",
            canonical,
            payloads,
            origins,
            config.formats,
            manifest_fields,
        )
    renamed = sum(
        1
        for image in canonical.images
        if (original := origins[image.file_name].get("original"))
        and Path(str(original)).name != image.file_name
    )
    metadata: dict[str, object] = {
        **version_metadata(dataset, version),
        "images": len(canonical.images),
        "boxes": sum(len(i.boxes) for i in canonical.images),
        "renamed_originals": renamed,
        "voc_pixel_origin": voc_pixel_origin,
    }
    with database.session() as session:  # one transaction: the rows describe all new zips or none
        for fmt, report in written.items():
            repository.add_export(
                session,
                version,
                split.id,
                fmt,
                storage.relative(report.path),
                report.size_bytes,
                report.sha256,
                run_id,
            )
            context.log.info(f"{fmt}: {report.path} ({report.size_bytes:,} bytes)")
            metadata[f"{fmt}_zip"] = dg.MetadataValue.path(str(report.path))
            metadata[f"{fmt}_bytes"] = report.size_bytes
        repository.set_status(session, session.get(Dataset, dataset.id), "exported")
    return dg.MaterializeResult(metadata=metadata)


def write_exports(
    target: Path,
    zip_stem: str,
    canonical: CanonicalDataset,
    payloads: dict[str, Path | bytes],
    origins: dict[str, dict[str, object]],
    formats: list[str],
    manifest_fields: dict[str, object],
) -> dict[str, ZipWriteReport]:
    """Write every format's zip into a hidden staging folder beside `target`, then move the folder into place.

    A failure while writing (a full disk, a crash) leaves no partial export: nothing is renamed until all zips
    are complete, and the staging folder is removed (or swept by the next run when the process died). One
    rename publishes all zips together; `replace_directory` lets a step retried in the same run replace the
    folder its earlier attempt published.
    """
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))

    def write(fmt: str) -> ZipWriteReport:
        return export_dataset_zip(
            staging / f"{zip_stem}-{fmt}.zip",
            render_export(
                DatasetFormat(fmt), canonical, voc_pixel_origin=manifest_fields["voc_pixel_origin"]
            ),
            payloads,
            {**manifest_fields, "dataset_format": fmt},
            origins,
        )

    try:
        # One thread per format: copying, hashing and deflating release the GIL, so one format's rendering
        # overlaps the others' file work (the zips do not depend on each other).
        with ThreadPoolExecutor(max_workers=len(formats), thread_name_prefix="export") as threads:
            futures = {fmt: threads.submit(write, fmt) for fmt in formats}
            staged = {fmt: future.result() for fmt, future in futures.items()}
        os.chmod(staging, 0o755)  # mkdtemp creates 0700; an export is meant to be read by others
        replace_directory(staging, target)
        fsync_directory(target.parent)
        return {
            fmt: dataclasses.replace(report, path=target / report.path.name) for fmt, report in staged.items()
        }
    finally:
        shutil.rmtree(staging, ignore_errors=True)
