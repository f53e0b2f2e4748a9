"""dataset_splits: stratified, leakage-free train/val/test assignment, stored per image with its quality."""

from collections import defaultdict

import dagster as dg
from pydantic import Field

from dataset_pipeline.assets.augmentation import augmented_dataset
from dataset_pipeline.assets.common import (
    RERUN_WHEN_UPSTREAM_CHANGES,
    TRANSIENT_ERROR_RETRY,
    dataset_row,
    frame_table,
)
from dataset_pipeline.db import repository
from dataset_pipeline.db.models import Dataset
from dataset_pipeline.domain.splitting import SplitItem, assign_splits
from dataset_pipeline.domain.validation import near_duplicate_groups
from dataset_pipeline.partitions import dataset_partitions
from dataset_pipeline.resources.database import DatabaseResource


class SplitConfig(dg.Config):
    train: float = Field(default=0.8, ge=0.0, le=1.0)
    val: float = Field(default=0.1, ge=0.0, le=1.0)
    test: float = Field(default=0.1, ge=0.0, le=1.0)
    seed: int = 0
    keep_source_splits: bool = Field(default=False, description="Keep the splits the upload already had")
    originals_only_in_eval: bool = Field(default=True, description="val/test hold only original images")
    near_duplicate_distance: int = Field(default=4, description="dHash distance grouping near-duplicates")


@dg.asset(
    partitions_def=dataset_partitions,
    deps=[augmented_dataset],
    group_name="split",
    kinds={"python", "postgres"},
    retry_policy=TRANSIENT_ERROR_RETRY,
    automation_condition=RERUN_WHEN_UPSTREAM_CHANGES,
    description="Iterative stratification (Sechidis et al. 2011) over duplicate- and augmentation-aware groups.",
)
def dataset_splits(
    context: dg.AssetExecutionContext, config: SplitConfig, database: DatabaseResource
) -> dg.MaterializeResult:
    with database.session() as session:
        dataset = dataset_row(session, context.partition_key)
        dataset_id, class_names = dataset.id, list(dataset.class_names)
        images = repository.load_usable_images(session, dataset_id)

    key_of = {
        image.id: image.relative_path if not image.is_augmented else f"@aug/{image.relative_path}"
        for image in images
    }
    items = [
        SplitItem(
            key=key_of[image.id],
            classes=frozenset(box.class_index for box in image.boxes),
            source_split=image.source_split,
            group_key=key_of.get(image.source_image_id) if image.source_image_id else None,
            is_augmented=image.is_augmented,
            boxes=len(image.boxes),
        )
        for image in images
    ]
    originals = [image for image in images if not image.is_augmented]
    by_sha: dict[str, list[str]] = defaultdict(list)
    for image in originals:
        by_sha[image.sha256].append(key_of[image.id])
    groups = [members for members in by_sha.values() if len(members) > 1]
    groups += near_duplicate_groups(
        {key_of[image.id]: image.dhash for image in originals if image.dhash is not None},
        config.near_duplicate_distance,
    )
    result = assign_splits(
        items,
        duplicate_groups=groups,
        ratios=(config.train, config.val, config.test),
        class_names=class_names,
        seed=config.seed,
        keep_source_splits=config.keep_source_splits,
        originals_only_in_eval=config.originals_only_in_eval,
    )
    assignment = {image.id: result.assignment.get(key_of[image.id]) for image in images}
    metrics = {
        "label_distribution": result.metrics.label_distribution,
        "examples_distribution": result.metrics.examples_distribution,
        "zero_folds": result.metrics.zero_folds,
    }
    baseline = {
        "label_distribution": result.random_baseline_metrics.label_distribution,
        "examples_distribution": result.random_baseline_metrics.examples_distribution,
        "zero_folds": result.random_baseline_metrics.zero_folds,
    }
    counts = {
        "images": result.images_per_split,
        "boxes": result.boxes_per_split,
        "augmented": result.augmented_per_split,
        "dropped_augmented": len(result.dropped_augmented),
        "groups": result.groups,
    }
    with database.session() as session:
        repository.store_splits(
            session,
            dataset_id,
            assignment,
            {
                "run_id": context.run.run_id,
                "config": config.model_dump(),
                "counts": counts,
                "metrics": metrics,
                "random_baseline_metrics": baseline,
            },
        )
        repository.set_status(session, session.get(Dataset, dataset_id), "split")

    shares = result.class_shares
    table = frame_table(
        shares,
        {
            "split": ("split", "string"),
            "class": ("class_name", "string"),
            "images": ("images", "int"),
            "share": ("share", "float"),
        },
    )
    comparison = "| metric | this split | random split |\n|---|---|---|\n" + "\n".join(
        f"| {name} | {metrics[name]:.4g} | {baseline[name]:.4g} |" for name in metrics
    )
    return dg.MaterializeResult(
        metadata={
            **{f"images_{split}": count for split, count in result.images_per_split.items()},
            **{f"boxes_{split}": count for split, count in result.boxes_per_split.items()},
            "label_distribution": float(metrics["label_distribution"]),
            "random_label_distribution": float(baseline["label_distribution"]),
            "zero_folds": int(metrics["zero_folds"]),
            "dropped_augmented": len(result.dropped_augmented),
            "quality": dg.MetadataValue.md(comparison),
            "class_shares": table,
        }
    )
