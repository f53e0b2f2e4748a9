"""validated_dataset: parse every label, decode every image, apply the rules, store the report in bulk."""

from collections import Counter
from typing import Literal

import dagster as dg
from pydantic import Field

from dataset_pipeline.assets.common import TRANSIENT_ERROR_RETRY, dataset_row, progress_logger, source_root
from dataset_pipeline.assets.ingest import raw_upload
from dataset_pipeline.db import repository
from dataset_pipeline.db.models import Dataset
from dataset_pipeline.domain.image_checks import check_images
from dataset_pipeline.domain.label_edits import ImageLabels, LabelEdit, LabelEditError, LabelSet, apply_edit
from dataset_pipeline.domain.model import Issue, Severity
from dataset_pipeline.domain.revalidation import FILE_MISSING, changes_since
from dataset_pipeline.domain.validation import ValidatedImage, ValidationOutcome, summarize_markdown, validate
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
    skip_if_unchanged: bool = Field(
        default=False,
        description="Record the new report but do not materialise when nothing changed (the nightly "
        "re-validation sets this, so an unchanged dataset does not re-run everything downstream)",
    )


@dg.asset(
    partitions_def=dataset_partitions,
    deps=[raw_upload],
    group_name="validate",
    kinds={"python", "postgres"},
    output_required=False,
    check_specs=[
        dg.AssetCheckSpec(
            USABLE_CHECK,
            asset="validated_dataset",
            blocking=True,
            description="Stops the graph when nothing usable is left or too many images were quarantined.",
        )
    ],
    retry_policy=TRANSIENT_ERROR_RETRY,
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
        previous_hashes = repository.image_hashes(session, dataset_id)
        # Only the nightly re-validation asks whether anything changed; hashing every label costs a query.
        wants_comparison = config.skip_if_unchanged and previous_hashes
        previous_version = repository.content_version(session, dataset_id) if wants_comparison else None
        recorded_edits = repository.recorded_label_edits(session, dataset_id)

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
    checked = [image for image in outcome.images if image.facts is not None]
    drift = changes_since(previous_hashes, {image.path: image.facts.sha256 for image in checked})
    labels, replay_issues = replay_label_edits(outcome, checked, recorded_edits)
    outcome.issues.extend([*drift, *replay_issues])  # so the summary and the report show them too
    issues = outcome.issues
    rows = [_image_row(image, labels.images[image.path]) for image in checked]

    usable = len(outcome.usable_images)
    missing = sum(issue.code == FILE_MISSING for issue in drift)
    error_share = (len(outcome.quarantined) + missing) / max(1, len(outcome.images) + missing)
    counts = Counter(str(issue.severity) for issue in issues)
    failed = (
        outcome.failed
        or usable == 0
        or error_share > config.max_error_share
        or (config.policy == "strict" and missing > 0)
    )
    summary = {
        "images": len(outcome.images),
        "usable_images": usable,
        "quarantined": len(outcome.quarantined),
        "missing_since_last_validation": missing,
        "error_share": round(error_share, 4),
        "by_severity": {str(severity): counts.get(str(severity), 0) for severity in Severity},
        "by_code": dict(sorted(Counter(issue.code for issue in issues).items())),
        "policy": config.policy,
        "label_edits_replayed": len(recorded_edits) - len(replay_issues),
    }
    reason = None
    if failed:
        reason = (
            f"{usable} usable images, {len(outcome.quarantined)} quarantined, {missing} missing "
            f"(share {error_share:.0%}, limit {config.max_error_share:.0%}, policy {config.policy})"
        )
    with database.session() as session:
        repository.replace_validation(session, dataset_id, rows, issues, context.run.run_id)
        dataset = session.get(Dataset, dataset_id)
        dataset.class_names = list(labels.class_names)
        dataset.validation_summary = summary
        was_invalid = dataset.status == "invalid"
        session.flush()
        version = repository.content_version(session, dataset_id)
        skip = config.skip_if_unchanged and version == previous_version and failed == was_invalid
        if not skip:
            repository.set_status(session, dataset, "invalid" if failed else "validated", reason)

    check_result = dg.AssetCheckResult(
        check_name=USABLE_CHECK,
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"usable_images": usable, "error_share": float(error_share)},
        description=None if not failed else f"dataset {context.partition_key} is not usable: {reason}",
    )
    if skip:
        context.log.info(f"re-validated {context.partition_key}: nothing changed (data version {version})")
        yield dg.AssetObservation(
            asset_key=context.asset_key,
            partition=context.partition_key,
            metadata={"revalidated": "unchanged", "data_version": version, "warnings": len(issues)},
        )
        yield check_result
        return

    markdown = summarize_markdown(outcome)
    yield dg.MaterializeResult(
        metadata={
            "images": len(outcome.images),
            "usable_images": usable,
            "quarantined": len(outcome.quarantined),
            "errors": counts.get(str(Severity.ERROR), 0),
            "warnings": counts.get(str(Severity.WARNING), 0),
            "missing_since_last_validation": missing,
            "classes": len(labels.class_names),
            "boxes": sum(len(labels.images[image.path].boxes) for image in outcome.usable_images),
            "label_edits_replayed": summary["label_edits_replayed"],
            "summary": dg.MetadataValue.md(markdown),
            "report": issues_table(issues),
        },
        data_version=dg.DataVersion(version),
    )
    yield check_result


def replay_label_edits(
    outcome: ValidationOutcome, checked: list[ValidatedImage], edits: list[LabelEdit]
) -> tuple[LabelSet, list[Issue]]:
    """The boxes as validated, with every recorded label edit applied again in order.

    An edit that no longer applies (its image or class is gone from the new files) is skipped with a warning.
    """
    labels = LabelSet(
        list(outcome.class_names),
        {
            image.path: ImageLabels(
                image.facts.width, image.facts.height, list(image.boxes), image.label_state
            )
            for image in checked
        },
    )
    issues = []
    for number, edit in enumerate(edits, start=1):
        try:
            labels, _ = apply_edit(labels, edit)
        except LabelEditError as error:
            issues.append(
                Issue(Severity.WARNING, "label-edit-not-replayed", "label_edits", f"edit {number}: {error}")
            )
    return labels, issues


def _image_row(image: ValidatedImage, labels: ImageLabels) -> repository.ImageRow:
    facts = image.facts
    return repository.ImageRow(
        relative_path=image.path,
        sha256=facts.sha256,
        size_bytes=facts.size_bytes,
        format=facts.format,
        mode=facts.mode,
        width=facts.width,
        height=facts.height,
        exif_orientation=facts.exif_orientation,
        dhash=facts.dhash,
        label_state=str(labels.label_state),
        source_split=image.split,
        quarantined=image.quarantined,
        boxes=labels.boxes,
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
