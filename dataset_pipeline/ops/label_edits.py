"""The label-edit op (the old POST /label): edits from the launchpad, applied in one transaction, audited."""

from typing import Literal

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (  # no public name yet
    AssetCheckEvaluationTargetMaterializationData,
)
from pydantic import Field

from dataset_pipeline.assets.common import TRANSIENT_ERROR_RETRY
from dataset_pipeline.assets.validation import USABLE_CHECK
from dataset_pipeline.db import repository
from dataset_pipeline.domain.label_edits import LabelEdit, LabelEditError, apply_edits
from dataset_pipeline.resources.database import DatabaseResource

VALIDATED_DATASET = dg.AssetKey("validated_dataset")
#: Dagster reads an asset's data version from this tag on a materialisation reported by an op.
DATA_VERSION_TAG = "dagster/data_version"


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


class LabelEditConfig(dg.Config):
    edited_by: str = Field(description="Who makes the edit; kept in the audit trail")
    edits: list[EditConfig] = Field(description="Applied in order, all or nothing")


@dg.op(
    retry_policy=TRANSIENT_ERROR_RETRY,
    description="Apply label edits to one dataset in one transaction, with an audit row per edit.",
)
def apply_label_edits(
    context: dg.OpExecutionContext, config: LabelEditConfig, database: DatabaseResource
) -> dg.Nothing:
    key = context.partition_key
    if not config.edited_by.strip():
        raise dg.Failure("edited_by is empty: say who makes the edit", allow_retries=False)
    try:
        edits = [edit.to_edit() for edit in config.edits]
        with database.session() as session:
            dataset = repository.find_dataset(session, key)
            if dataset is None or not dataset.storage_path:
                raise dg.Failure(f"dataset {key!r} has no validated labels to edit", allow_retries=False)
            labels, image_ids = repository.load_label_set(session, dataset.id)
            edited, effects = apply_edits(labels, edits)
            repository.store_label_set(session, dataset.id, edited, image_ids)
            repository.record_label_edits(
                session, dataset.id, config.edited_by, edits, effects, context.run.run_id
            )
            usable = dataset.status != "invalid"
            if usable:
                repository.set_status(session, dataset, "validated")
            session.flush()
            version = repository.content_version(session, dataset.id)
    except LabelEditError as error:  # nothing was written: the transaction rolled back
        raise dg.Failure(f"dataset {key}: {error}", allow_retries=False) from error

    for edit, effect in zip(edits, effects, strict=True):
        context.log.info(
            f"{edit.operation}: boxes {effect.boxes_before} -> {effect.boxes_after}, "
            f"classes {len(effect.classes_before)} -> {len(effect.classes_after)}"
        )
    # Record the edit as a new version of validated_dataset: what is downstream becomes stale and the
    # automation sensor re-runs it (class distribution, augmentation, splits, export).
    context.log_event(
        dg.AssetMaterialization(
            asset_key=VALIDATED_DATASET,
            partition=key,
            description=f"labels edited by {config.edited_by}",
            metadata={
                "label_edits": len(edits),
                "edited_by": config.edited_by,
                "boxes": effects[-1].boxes_after if effects else labels.box_count(),
                "classes": dg.MetadataValue.json(edited.class_names),
            },
            tags={DATA_VERSION_TAG: version},
        )
    )
    _report_usable_check(context, key, passed=usable)


def _report_usable_check(context: dg.OpExecutionContext, key: str, *, passed: bool) -> None:
    """Carry the blocking `usable_images` check over to the edited version: automation only runs what is
    downstream of a materialisation whose blocking checks passed."""
    latest = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=VALIDATED_DATASET, asset_partitions=[key]), limit=1
    ).records[0]
    context.log_event(
        dg.AssetCheckEvaluation(
            asset_key=VALIDATED_DATASET,
            check_name=USABLE_CHECK,
            passed=passed,
            partition=key,
            blocking=True,
            description="carried over from the validation the edit was applied to",
            target_materialization_data=AssetCheckEvaluationTargetMaterializationData(
                storage_id=latest.storage_id, run_id=latest.run_id, timestamp=latest.timestamp
            ),
        )
    )
