"""validated_dataset: parse every label, decode every image, apply the rules, store the report in bulk."""

from typing import Literal

import dagster as dg
from pydantic import Field

from dataset_pipeline.assets.common import dataset_row, progress_logger, source_root
from dataset_pipeline.assets.ingest import raw_upload
from dataset_pipeline.db import repository
from dataset_pipeline.db.models import Dataset
from dataset_pipeline.domain.image_checks import check_images
from dataset_pipeline.domain.model import Severity
from dataset_pipeline.domain.validation import summarize_markdown, validate
from dataset_pipeline.formats import parse_dataset
from dataset_pipeline.partitions import dataset_partitions
from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import LocalDatasetStorage

USABLE_CHECK = "usable_images"


class ValidationConfig(dg.Config):
    policy: Literal["quarantine", "strict"] = Field(
        default="quarantine",
        description="quarantine: images with any error are excluded whole; strict: any error fails the dataset",
    )
    max_error_share: float = Field(
        default=0.5, description="Fail when more than this share of images is quarantined"
    )
    near_duplicate_distance: int = Field(
        default=4, description="dHash Hamming distance counted as a near-duplicate"
    )
    workers: int = Field(default=0, description="Image-check processes; 0 = one per CPU")


@dg.asset(
    partitions_def=dataset_partitions,
    deps=[raw_upload],
    group_name="validate",
    kinds={"python", "postgres"},
    check_specs=[
        dg.AssetCheckSpec(
            USABLE_CHECK,
            asset="validated_dataset",
            blocking=True,
            description="Stops the graph when nothing usable is left or too many images were quarantined.",
        )
    ],
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5),
    description="Every label parsed into the canonical model and every image decoded; problems recorded with "
    "file and line; bad images quarantined whole.",
)
def validated_dataset(
    context: dg.AssetExecutionContext,
    config: ValidationConfig,
    database: DatabaseResource,
    storage: LocalDatasetStorage,
):
    with database.session() as session:
        dataset = dataset_row(session, context.partition_key)
        dataset_id, root = dataset.id, source_root(dataset)

    parsed = parse_dataset(root)
    paths = [image.path for image in parsed.images]
    context.log.info(
        f"{parsed.format} ({parsed.layout}): {len(paths)} images, {len(parsed.class_names)} classes"
    )
    facts_list = check_images(
        root, paths, workers=config.workers or None, progress=progress_logger(context, "image checks")
    )
    facts = {fact.path: fact for fact in facts_list}
    outcome = validate(
        parsed, facts, policy=config.policy, near_duplicate_distance=config.near_duplicate_distance
    )

    rows = [
        repository.ImageRow(
            relative_path=image.path,
            sha256=image.facts.sha256 if image.facts else "",
            size_bytes=image.facts.size_bytes if image.facts else 0,
            format=image.facts.format if image.facts else None,
            mode=image.facts.mode if image.facts else None,
            width=image.facts.width if image.facts else 0,
            height=image.facts.height if image.facts else 0,
            exif_orientation=image.facts.exif_orientation if image.facts else 1,
            dhash=image.facts.dhash if image.facts else None,
            label_state=str(image.label_state),
            source_split=image.split,
            quarantined=image.quarantined,
            boxes=image.boxes,
        )
        for image in outcome.images
        if image.facts is not None
    ]
    usable = len(outcome.usable_images)
    counts = outcome.counts_by_severity()
    failed = outcome.failed or usable == 0 or outcome.error_share > config.max_error_share
    summary = {
        "images": len(outcome.images),
        "usable_images": usable,
        "quarantined": len(outcome.quarantined),
        "error_share": round(outcome.error_share, 4),
        "by_severity": counts,
        "by_code": outcome.counts_by_code(),
        "policy": config.policy,
    }
    with database.session() as session:
        repository.replace_validation(session, dataset_id, rows, outcome.issues, context.run.run_id)
        dataset = session.get(Dataset, dataset_id)
        dataset.class_names = list(parsed.class_names)
        dataset.validation_summary = summary
        reason = None
        if failed:
            reason = (
                f"{usable} usable images, {len(outcome.quarantined)} quarantined "
                f"(share {outcome.error_share:.0%}, limit {config.max_error_share:.0%}, policy {config.policy})"
            )
        repository.set_status(session, dataset, "invalid" if failed else "validated", reason)

    markdown = summarize_markdown(outcome)
    yield dg.MaterializeResult(
        metadata={
            "images": len(outcome.images),
            "usable_images": usable,
            "quarantined": len(outcome.quarantined),
            "errors": counts.get(str(Severity.ERROR), 0),
            "warnings": counts.get(str(Severity.WARNING), 0),
            "classes": len(parsed.class_names),
            "boxes": sum(len(image.boxes) for image in outcome.usable_images),
            "summary": dg.MetadataValue.md(markdown),
            "report": issues_table(outcome.issues),
        }
    )
    yield dg.AssetCheckResult(
        check_name=USABLE_CHECK,
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"usable_images": usable, "error_share": float(outcome.error_share)},
        description=None if not failed else f"dataset {context.partition_key} is not usable: {reason}",
    )


def issues_table(issues, limit: int = 200) -> dg.TableMetadataValue:
    """The first problems as a table the UI can sort; the full report is in `dataset_validations`."""
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn("severity", "string"),
            dg.TableColumn("code", "string"),
            dg.TableColumn("where", "string"),
            dg.TableColumn("message", "string"),
        ]
    )
    ordered = sorted(issues, key=lambda i: (i.severity != Severity.ERROR, i.severity != Severity.WARNING))
    records = [
        dg.TableRecord(
            {"severity": str(i.severity), "code": i.code, "where": i.location(), "message": i.message}
        )
        for i in ordered[:limit]
    ]
    return dg.MetadataValue.table(records, schema)
