"""dataset_splits: stratified, leakage-free train/val/test assignment of a version and its newest augmentation.

Every run adds a split (a report and one assignment row per image placed); export reads the newest.
"""

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import dagster as dg
from pydantic import Field

from dataset_pipeline.assets.augmentation import augmented_dataset
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
from dataset_pipeline.db import repository
from dataset_pipeline.db.models import Dataset
from dataset_pipeline.domain.splitting import SplitItem, SplitMetrics, SplitResult, assign_splits
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


def image_keys(images: Sequence[repository.StoredImage]) -> dict[int, str]:
    """A name per image id that cannot collide: augmented paths live in their own folder."""
    return {
        image.id: image.relative_path if not image.is_augmented else f"@aug/{image.relative_path}"
        for image in images
    }


def split_items(images: Sequence[repository.StoredImage], key_of: dict[int, str]) -> list[SplitItem]:
    """What the splitter needs of each image; an augmented copy is grouped with its source."""
    return [
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


def duplicate_groups(
    images: Sequence[repository.StoredImage], key_of: dict[int, str], near_duplicate_distance: int
) -> list[list[str]]:
    """Originals that must share a split so none leaks into evaluation: equal bytes, or close dHashes."""
    originals = [image for image in images if not image.is_augmented]
    by_sha: dict[str, list[str]] = defaultdict(list)
    for image in originals:
        by_sha[image.sha256].append(key_of[image.id])
    groups = [members for members in by_sha.values() if len(members) > 1]
    groups += near_duplicate_groups(
        {key_of[image.id]: image.dhash for image in originals if image.dhash is not None},
        near_duplicate_distance,
    )
    return groups


def _metrics(metrics: SplitMetrics) -> dict[str, Any]:
    return {
        "label_distribution": metrics.label_distribution,
        "examples_distribution": metrics.examples_distribution,
        "zero_folds": metrics.zero_folds,
    }


def split_report(result: SplitResult, config: SplitConfig, run_id: str) -> dict[str, Any]:
    """The `split_reports` row: how the split was made, its counts and its quality beside a random split."""
    return {
        "run_id": run_id,
        "config": config.model_dump(),
        "counts": {
            "images": result.images_per_split,
            "boxes": result.boxes_per_split,
            "augmented": result.augmented_per_split,
            "dropped_augmented": len(result.dropped_augmented),
            "groups": result.groups,
        },
        "metrics": _metrics(result.metrics),
        "random_baseline_metrics": _metrics(result.random_baseline_metrics),
    }


def split_metadata(result: SplitResult, report: dict[str, Any]) -> dict[str, Any]:
    """Counts per split, the quality beside a random split, and the class shares per split."""
    metrics, baseline = report["metrics"], report["random_baseline_metrics"]
    table = frame_table(
        result.class_shares,
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
    return {
        **{f"images_{split}": count for split, count in result.images_per_split.items()},
        **{f"boxes_{split}": count for split, count in result.boxes_per_split.items()},
        "label_distribution": rounded(metrics["label_distribution"], 4),
        "random_label_distribution": rounded(baseline["label_distribution"], 4),
        "zero_folds": int(metrics["zero_folds"]),
        "dropped_augmented": len(result.dropped_augmented),
        "quality": dg.MetadataValue.md(comparison),
        "class_shares": table,
    }


@dg.asset(
    partitions_def=dataset_partitions,
    deps=[augmented_dataset],
    group_name=ASSET_GROUP,
    kinds={"python", "postgres"},
    retry_policy=TRANSIENT_ERROR_RETRY,
    automation_condition=RERUN_WHEN_UPSTREAM_CHANGES,
    description="Iterative stratification (Sechidis et al. 2011) over duplicate- and augmentation-aware groups.",
)
@retry_transient_errors_only
def dataset_splits(
    context: dg.AssetExecutionContext, config: SplitConfig, database: DatabaseResource
) -> dg.MaterializeResult:
    with database.session() as session:
        dataset, version, verdict = validated_version(session, context.partition_key)
        augmentation = repository.latest_augmentation(session, version.id)
        augmentation_id = augmentation.id if augmentation else None
        images = repository.load_images(session, version.id, augmentation_id=augmentation_id)

    key_of = image_keys(images)
    result = assign_splits(
        split_items(images, key_of),
        duplicate_groups=duplicate_groups(images, key_of, config.near_duplicate_distance),
        ratios=(config.train, config.val, config.test),
        class_names=list(verdict.class_names),
        seed=config.seed,
        keep_source_splits=config.keep_source_splits,
        originals_only_in_eval=config.originals_only_in_eval,
    )
    assignment = {image.id: result.assignment.get(key_of[image.id]) for image in images}
    report = split_report(result, config, context.run.run_id)
    with database.session() as session:
        repository.add_split(session, version, augmentation_id, assignment, report)
        repository.set_status(session, session.get(Dataset, dataset.id), "split")

    return dg.MaterializeResult(
        metadata={
            **version_metadata(dataset, version),
            "augmentation_id": augmentation_id,
            **split_metadata(result, report),
        }
    )
