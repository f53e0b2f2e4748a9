"""class_distribution: what the usable boxes look like per class and split, as rows, a table and charts."""

import dagster as dg

from dataset_pipeline.assets.common import (
    RERUN_WHEN_UPSTREAM_CHANGES,
    TRANSIENT_ERROR_RETRY,
    dataset_row,
    frame_table,
    png_markdown,
)
from dataset_pipeline.assets.validation import validated_dataset
from dataset_pipeline.db import repository
from dataset_pipeline.db.models import Dataset
from dataset_pipeline.domain.statistics import (
    PER_CLASS_COLUMNS,
    ImageBoxes,
    plot_box_size_histogram,
    plot_class_bars,
)
from dataset_pipeline.domain.statistics import class_distribution as compute_distribution
from dataset_pipeline.partitions import dataset_partitions
from dataset_pipeline.resources.database import DatabaseResource


def _plain(value: object) -> object:
    """numpy scalars to Python ones (psycopg2 cannot adapt them); NaN to NULL."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and value != value else value


@dg.asset(
    partitions_def=dataset_partitions,
    deps=[validated_dataset],
    group_name="analyse",
    kinds={"python", "postgres"},
    retry_policy=TRANSIENT_ERROR_RETRY,
    automation_condition=RERUN_WHEN_UPSTREAM_CHANGES,
    description="Per class: boxes, images, share, COCO size buckets, aspect ratios; per source split when present.",
)
def class_distribution(context: dg.AssetExecutionContext, database: DatabaseResource) -> dg.MaterializeResult:
    with database.session() as session:
        dataset = dataset_row(session, context.partition_key)
        dataset_id, class_names = dataset.id, list(dataset.class_names)
        images = repository.load_usable_images(session, dataset_id, include_augmented=False)
    report = compute_distribution(
        class_names,
        [ImageBoxes(image.source_split, image.boxes, image.width, image.height) for image in images],
    )
    rows = [
        {column: _plain(value) for column, value in zip(PER_CLASS_COLUMNS, record, strict=True)}
        for record in report.per_class[list(PER_CLASS_COLUMNS)].itertuples(index=False, name=None)
    ]
    with database.session() as session:
        repository.replace_distribution(session, dataset_id, rows)
        dataset = session.get(Dataset, dataset_id)
        repository.set_status(session, dataset, "analysed")

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
    charts = "\n\n".join(
        [
            png_markdown(plot_class_bars(report), "boxes per class"),
            png_markdown(plot_box_size_histogram(report), "box sizes"),
        ]
    )
    return dg.MaterializeResult(
        metadata={
            "images": report.images,
            "boxes": report.boxes,
            "classes": len(class_names),
            "imbalance_ratio": float(report.imbalance_ratio or 0.0),
            "classes_without_boxes": ", ".join(report.empty_classes) or "none",
            "objects_per_image_mean": float(report.objects_per_image.mean),
            "size_buckets": dg.MetadataValue.json(report.size_buckets),
            "distribution": table,
            "charts": dg.MetadataValue.md(charts),
        }
    )
