"""The label-edit job (the old POST /label) on a processed dataset: one transaction, an audit trail, the
stages after validation requested again by automation, and edits that survive a re-validation."""

from __future__ import annotations

import uuid

import dagster as dg
import pytest
import sqlalchemy as sa

from dataset_pipeline.assets import ALL_ASSETS
from dataset_pipeline.assets.validation import validated_dataset
from dataset_pipeline.db import repository
from dataset_pipeline.definitions import defs
from dataset_pipeline.domain.model import DatasetFormat
from dataset_pipeline.domain.synthetic import generate_dataset
from dataset_pipeline.jobs import edit_labels_job
from dataset_pipeline.local_run import process_upload
from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import LocalDatasetStorage

CLASS_DISTRIBUTION = dg.AssetKey("class_distribution")


@pytest.fixture
def processed(tmp_path, db, dagster_instance, storage_root):
    """A small YOLO dataset through the whole graph; returns (partition key, resources)."""
    resources = {
        "database": DatabaseResource(url=db.url),
        "storage": LocalDatasetStorage(root=str(storage_root)),
    }
    source = generate_dataset(
        tmp_path / "up", n_images=12, fmt=DatasetFormat.YOLO, seed=4, n_classes=4, zipped=True
    )
    key, result = process_upload(
        dagster_instance,
        source,
        user=f"e{uuid.uuid4().hex[:6]}",
        project="p",
        name="edits",
        resources=resources,
    )
    assert result.success
    return key, resources


def run_edits(instance, key, resources, edits, raise_on_error=True):
    return edit_labels_job.execute_in_process(
        run_config={"ops": {"apply_label_edits": {"config": {"edited_by": "ann", "edits": edits}}}},
        instance=instance,
        partition_key=key,
        resources={"database": resources["database"]},
        raise_on_error=raise_on_error,
    )


def label_counts(db, key) -> tuple[list[str], dict[int, int], int]:
    """(class names, boxes per class index on original images, augmented image count)."""
    with db.session() as session:
        dataset = repository.find_dataset(session, key)
        rows = session.execute(
            sa.text(
                "SELECT l.class_index, count(*) FROM labels l JOIN images i ON i.id = l.image_id "
                "WHERE l.dataset_id = :d AND NOT i.is_augmented GROUP BY 1"
            ),
            {"d": dataset.id},
        ).all()
        augmented = session.execute(
            sa.text("SELECT count(*) FROM images WHERE dataset_id = :d AND is_augmented"), {"d": dataset.id}
        ).scalar_one()
        return list(dataset.class_names), dict(rows), augmented


def test_edits_apply_in_one_transaction_with_an_audit_row_each(processed, db, dagster_instance):
    key, resources = processed
    names, before, augmented = label_counts(db, key)
    assert names == ["person", "car", "bicycle", "dog"] and augmented > 0
    total = sum(before.values())

    result = run_edits(
        dagster_instance,
        key,
        resources,
        [
            {"operation": "rename_class", "class_name": "person", "new_name": "pedestrian"},
            {"operation": "merge_classes", "sources": ["car", "bicycle"], "into": "vehicle"},
            {"operation": "delete_class", "class_name": "dog"},
            {"operation": "remap_class_ids", "mapping": {"0": 1, "1": 0}},
        ],
    )
    assert result.success

    names, after, augmented = label_counts(db, key)
    assert names == ["vehicle", "pedestrian"]
    assert after == {0: before[1] + before[2], 1: before[0]}  # dog's boxes are gone
    assert augmented == 0  # derived from the old labels: removed until augmentation re-runs
    with db.session() as session:
        dataset = repository.find_dataset(session, key)
        audit = session.execute(
            sa.text(
                "SELECT operation, edited_by, boxes_before, boxes_after, classes_before, classes_after, run_id "
                "FROM label_edits WHERE dataset_id = :d ORDER BY id"
            ),
            {"d": dataset.id},
        ).all()
    assert [row.operation for row in audit] == [
        "rename_class",
        "merge_classes",
        "delete_class",
        "remap_class_ids",
    ]
    assert {row.edited_by for row in audit} == {"ann"} and {row.run_id for row in audit} == {result.run_id}
    assert audit[0].boxes_before == total and audit[2].boxes_after == total - before[3]
    assert audit[1].classes_before == ["pedestrian", "car", "bicycle", "dog"]
    assert audit[1].classes_after == ["pedestrian", "vehicle", "dog"]
    assert audit[3].classes_after == ["vehicle", "pedestrian"]


def test_a_bad_edit_changes_nothing(processed, db, dagster_instance):
    key, resources = processed
    before = label_counts(db, key)
    result = run_edits(
        dagster_instance,
        key,
        resources,
        [
            {"operation": "rename_class", "class_name": "person", "new_name": "pedestrian"},
            {"operation": "delete_class", "class_name": "unicorn"},
        ],
        raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error.message
    assert "there is no class 'unicorn'" in failure
    assert label_counts(db, key) == before
    with db.session() as session:
        assert session.execute(sa.text("SELECT count(*) FROM label_edits")).scalar_one() == 0


def test_an_edit_makes_the_stages_after_validation_run_again(processed, db, dagster_instance):
    key, resources = processed
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=dagster_instance)
    settled = dg.evaluate_automation_conditions(defs=defs, instance=dagster_instance, cursor=baseline.cursor)
    assert key not in settled.get_requested_partitions(CLASS_DISTRIBUTION)  # nothing changed yet

    run_edits(dagster_instance, key, resources, [{"operation": "delete_class", "class_name": "dog"}])
    after_edit = dg.evaluate_automation_conditions(
        defs=defs, instance=dagster_instance, cursor=settled.cursor
    )
    assert key in after_edit.get_requested_partitions(CLASS_DISTRIBUTION)


def test_recorded_edits_survive_a_revalidation(processed, db, dagster_instance):
    key, resources = processed
    run_edits(
        dagster_instance,
        key,
        resources,
        [{"operation": "merge_classes", "sources": ["car", "bicycle"], "into": "vehicle"}],
    )
    edited = label_counts(db, key)
    with db.session() as session:
        version_after_edit = repository.content_version(session, repository.find_dataset(session, key).id)

    result = dg.materialize(
        ALL_ASSETS,
        selection=[validated_dataset],
        instance=dagster_instance,
        partition_key=key,
        resources=resources,
    )
    assert result.success
    names, counts, _ = label_counts(db, key)
    assert (names, counts) == edited[:2]
    with db.session() as session:
        assert (
            repository.content_version(session, repository.find_dataset(session, key).id)
            == version_after_edit
        )
