"""labels: the boxes of a dataset's newest version, and the old POST /label as edits that make a new version.

Run by the pipeline, it reports the validated boxes. Launched with edits (the `edit_labels` job), it applies
them to the newest version in one transaction and records the result as a new version with an audit row per
edit; the stages after it then re-run by themselves. The edited version's parent keeps its labels as they were.
"""

from typing import Literal

import dagster as dg
from pydantic import Field

from dataset_pipeline.assets.common import (
    ASSET_GROUP,
    RERUN_WHEN_UPSTREAM_CHANGES,
    TRANSIENT_ERROR_RETRY,
    retry_transient_errors_only,
    validated_version,
    version_metadata,
)
from dataset_pipeline.assets.validation import validated_dataset
from dataset_pipeline.db import repository
from dataset_pipeline.db.models import Dataset, DatasetVersion, VersionValidation
from dataset_pipeline.db.version_content import load_version_content
from dataset_pipeline.domain.label_edits import LabelEdit, LabelEditError, apply_edits
from dataset_pipeline.domain.validation import decide_gate
from dataset_pipeline.domain.version_diff import VersionDiff, diff_versions
from dataset_pipeline.partitions import dataset_partitions, per_dataset_check
from dataset_pipeline.resources.database import DatabaseResource

USABLE_LABELS_CHECK = "usable_labels"


class BoxConfig(dg.Config):
    class_name: str
    x_min: float = Field(description="pixels of the upright image")
    y_min: float
    x_max: float
    y_max: float


class EditConfig(dg.Config):
    """One edit; which fields matter depends on `operation` (see the README's label-edit section)."""

    operation: Literal["rename_class", "merge_classes", "delete_class", "replace_boxes", "remap_class_ids"]
    class_name: str = Field(default="", description="rename_class, delete_class: the class to change")
    new_name: str = Field(default="", description="rename_class: its new name")
    sources: list[str] = Field(default_factory=list, description="merge_classes: the classes to merge")
    into: str = Field(default="", description="merge_classes: the class they become (existing or new)")
    image: str = Field(default="", description="replace_boxes: the image's path inside the dataset")
    boxes: list[BoxConfig] = Field(default_factory=list, description="replace_boxes: all boxes of the image")
    mapping: dict[str, int] = Field(
        default_factory=dict, description='remap_class_ids: old id -> new id, e.g. {"0": 1, "1": 0}'
    )

    def to_edit(self) -> LabelEdit:
        try:
            mapping = {int(old): new for old, new in self.mapping.items()}
        except ValueError as error:
            raise LabelEditError(f"remap_class_ids: ids must be integers ({error})") from error
        return LabelEdit(
            operation=self.operation,
            class_name=self.class_name,
            new_name=self.new_name,
            sources=tuple(self.sources),
            into=self.into,
            image=self.image,
            boxes=tuple((b.class_name, b.x_min, b.y_min, b.x_max, b.y_max) for b in self.boxes),
            mapping=mapping,
        )


class LabelsConfig(dg.Config):
    """Empty in the pipeline; the `edit_labels` job fills it in."""

    edited_by: str = Field(default="", description="Who makes the edits; kept in the audit trail")
    edits: list[EditConfig] = Field(
        default_factory=list, description="Applied in order, all or nothing; none: report the labels"
    )


@dg.asset(
    partitions_def=dataset_partitions,
    deps=[validated_dataset],
    group_name=ASSET_GROUP,
    kinds={"python", "postgres"},
    check_specs=[
        per_dataset_check(
            USABLE_LABELS_CHECK,
            "labels",
            "Stops the graph for this dataset when an edit left nothing usable: the same "
            "verdict as validation's, decided again for the edited version.",
        )
    ],
    retry_policy=TRANSIENT_ERROR_RETRY,
    automation_condition=RERUN_WHEN_UPSTREAM_CHANGES,
    description="The boxes of the dataset's newest version; label edits (the edit_labels job) make a new version.",
)
@retry_transient_errors_only
def labels(context: dg.AssetExecutionContext, config: LabelsConfig, database: DatabaseResource):
    key = context.partition_key
    if config.edits and not config.edited_by.strip():
        raise dg.Failure("edited_by is empty: say who makes the edit", allow_retries=False)
    try:
        edits = [edit.to_edit() for edit in config.edits]
        with database.session() as session:
            dataset, version, verdict = validated_version(session, key)
            if edits:
                version, verdict, effects = _edit(
                    session, dataset, version, verdict, edits, config.edited_by, context
                )
            else:
                effects = []
            stored = repository.load_images(session, version.id, usable_only=False)
            changes = _changes_since_parent(session, version)
    except LabelEditError as error:  # nothing was written: the transaction rolled back
        raise dg.Failure(
            f"Dataset {key}: {str(error).rstrip('.')}. Nothing was changed (the edits apply all or nothing); "
            "correct the edit in the edit_labels launchpad and launch it again.",
            allow_retries=False,
        ) from None

    for edit, effect in zip(edits, effects, strict=True):
        context.log.info(
            f"{edit.operation}: boxes {effect.boxes_before} -> {effect.boxes_after}, "
            f"classes {len(effect.classes_before)} -> {len(effect.classes_after)}"
        )
    usable = [image for image in stored if image.usable]
    metadata = {
        **version_metadata(dataset, version),
        "images": len(usable),
        "boxes": sum(len(image.boxes) for image in usable),
        "classes": dg.MetadataValue.json(list(verdict.class_names)),
        "label_edits": len(edits),
    }
    if edits:
        metadata["edited_by"] = config.edited_by
    if changes is not None:
        metadata["changes_since_parent"] = dg.MetadataValue.md(changes.markdown())
    yield dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(verdict.content_hash))
    yield dg.AssetCheckResult(
        check_name=USABLE_LABELS_CHECK,
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=version_metadata(dataset, version),
        description=None
        if verdict.passed
        else f"dataset {key} version {version.number} is not usable: {verdict.reason}",
    )
    if not verdict.passed:  # said here, rather than by Dagster's bare blocking-check error
        raise dg.Failure(
            f"Dataset {key} version {version.number}, made by these edits, is not usable: "
            f"{(verdict.reason or 'no reason recorded').rstrip('.')}. It is kept, and nothing after labels runs "
            "for it; launch edit_labels again with edits that leave usable boxes, or submit the dataset again.",
            allow_retries=False,
        )


def _changes_since_parent(session, version: DatasetVersion) -> VersionDiff | None:
    """What this version changed against the one it was made from (None for a first upload)."""
    parent = session.get(DatasetVersion, version.parent_id) if version.parent_id else None
    if parent is None:
        return None
    return diff_versions(load_version_content(session, parent), load_version_content(session, version))


def _edit(
    session,
    dataset: Dataset,
    parent: DatasetVersion,
    parent_verdict: VersionValidation,
    edits: list[LabelEdit],
    edited_by: str,
    context: dg.AssetExecutionContext,
):
    """Apply the edits to the parent's labels and write the result as a new version of the dataset."""
    label_set, stored = repository.load_label_set(
        session, parent, parent_verdict.class_names, repository.class_info_of(parent_verdict)
    )
    edited, effects = apply_edits(label_set, edits)
    rows = repository.image_rows_with_labels(stored, edited, repository.image_records(session, parent.id))
    summary = dict(parent_verdict.summary)
    decision = decide_gate(
        images=len(rows),
        usable=sum(row.usable for row in rows),
        quarantined=sum(row.quarantined for row in rows),
        policy=summary.get("policy", "quarantine"),
        max_error_share=summary.get("max_error_share", 0.5),
    )
    summary.update(usable_images=decision.usable, label_edits=len(edits))
    verdict = repository.Verdict(
        passed=decision.passed,
        reason=decision.reason,
        summary=summary,
        content_hash=None,
        class_names=list(edited.class_names),
        class_info=list(edited.class_info),
    )
    version = repository.add_version(
        session, dataset, parent, cause="label_edit", run_id=context.run.run_id, created_by=edited_by
    )
    repository.insert_images_with_labels(session, version, rows)
    repository.copy_findings(session, parent, version, [], context.run.run_id)
    repository.add_verdict(session, version, verdict, context.run.run_id)
    repository.record_label_edits(session, version, edited_by, edits, effects, context.run.run_id)
    repository.set_status(session, dataset, "validated" if decision.passed else "invalid", decision.reason)
    return version, repository.validation_of(session, version.id), effects
