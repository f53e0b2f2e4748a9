"""class_distribution: what the usable boxes of a version look like per class and split, as rows and charts."""

from typing import Any

import dagster as dg

from dataset_pipeline.assets.common import (
    ASSET_GROUP,
    RERUN_WHEN_UPSTREAM_CHANGES,
    TRANSIENT_ERROR_RETRY,
    frame_table,
    retry_transient_errors_only,
    rounded,
    validated_version,
    version_metadata,
)
from dataset_pipeline.assets.pictures import picture_metadata, preview_url
from dataset_pipeline.db import repository
from dataset_pipeline.db.models import Dataset
from dataset_pipeline.domain.statistics import (
    CHART_PREVIEW_WIDTH_PX,
    PER_CLASS_COLUMNS,
    DistributionReport,
    ImageBoxes,
    class_bars_markdown,
    plot_box_size_histogram,
    plot_class_bars,
)
from dataset_pipeline.domain.statistics import class_distribution as compute_distribution
from dataset_pipeline.partitions import dataset_partitions
from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import LocalDatasetStorage


def _plain(value: object) -> object:
    """numpy scalars to Python ones (psycopg2 cannot adapt them); NaN to NULL."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and value != value else value


def distribution_rows(report: DistributionReport) -> list[dict[str, Any]]:
    """The per-class table as `class_distributions` rows."""
    return [
        {column: _plain(value) for column, value in zip(PER_CLASS_COLUMNS, record, strict=True)}
        for record in report.per_class[list(PER_CLASS_COLUMNS)].itertuples(index=False, name=None)
    ]


def distribution_metadata(report: DistributionReport, class_names: list[str]) -> dict[str, Any]:
    """Counts and the overall per-class table (the asset puts the bars and charts before them)."""
    overall = report.per_class[report.per_class["split"] == "all"]
    table = frame_table(
        overall,
        {
            "class": ("class_name", "string"),
            "boxes": ("boxes", "int"),
            "images": ("images", "int"),
            "share": ("share", "float"),
        },
    )
    return {
        "images": report.images,
        "boxes": report.boxes,
        "classes": len(class_names),
        "imbalance_ratio": rounded(report.imbalance_ratio or 0.0),
        "classes_without_boxes": ", ".join(report.empty_classes) or "none",
        "objects_per_image_mean": rounded(report.objects_per_image.mean),
        "size_buckets": dg.MetadataValue.json(report.size_buckets),
        "distribution": table,
    }


@dg.asset(
    partitions_def=dataset_partitions,
    deps=[dg.AssetKey("labels")],
    group_name=ASSET_GROUP,
    kinds={"python", "postgres"},
    retry_policy=TRANSIENT_ERROR_RETRY,
    automation_condition=RERUN_WHEN_UPSTREAM_CHANGES,
    description="Per class: boxes, images, share, COCO size buckets, aspect ratios; per source split when present.",
)
@retry_transient_errors_only
def class_distribution(
    context: dg.AssetExecutionContext, database: DatabaseResource, storage: LocalDatasetStorage
) -> dg.MaterializeResult:
    with database.session() as session:
        dataset, version, verdict = validated_version(session, context.partition_key)
        user, project = repository.owner_of(session, dataset)
        class_names = list(verdict.class_names)
        images = repository.load_images(session, version.id)
    report = compute_distribution(
        class_names,
        [ImageBoxes(image.source_split, image.boxes, image.width, image.height) for image in images],
    )
    with database.session() as session:
        repository.add_distribution(session, version, distribution_rows(report))
        repository.set_status(session, session.get(Dataset, dataset.id), "analysed")
    charts = picture_metadata(
        storage,
        storage.version_dir(user, project, dataset.name, version.number),
        "class_distribution",
        context.run.run_id,
        {"class_chart": plot_class_bars(report), "box_size_chart": plot_box_size_histogram(report)},
        previews={
            "class_chart": plot_class_bars(report, CHART_PREVIEW_WIDTH_PX),
            "box_size_chart": plot_box_size_histogram(report, CHART_PREVIEW_WIDTH_PX),
        }
        if preview_url()
        else None,
    )
    # What shows without a click comes first: the UI lists metadata in this order
    return dg.MaterializeResult(
        metadata={
            "boxes_per_class": dg.MetadataValue.md(class_bars_markdown(report)),
            **charts,
            **version_metadata(dataset, version),
            **distribution_metadata(report, class_names),
        }
    )
