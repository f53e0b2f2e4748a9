"""The `labels` asset and the edit_labels job (the old POST /label): edits make a new version in one
transaction with an audit trail, the parent version keeps its labels, and the stages after it run again."""

from __future__ import annotations

import uuid
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from dataset_pipeline.assets import ALL_ASSETS
from dataset_pipeline.db import repository
from dataset_pipeline.db.version_content import load_version_content
from dataset_pipeline.definitions import defs
from dataset_pipeline.domain.model import DatasetFormat
from dataset_pipeline.domain.synthetic import generate_dataset
from dataset_pipeline.domain.version_diff import diff_versions
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
    """What the edit_labels job runs: `labels` alone, with the edits in its config."""
    return dg.materialize(
        ALL_ASSETS,
        selection=edit_labels_job.selection,
        run_config={"ops": {"labels": {"config": {"edited_by": "ann", "edits": edits}}}},
        instance=instance,
        partition_key=key,
        resources=resources,
        raise_on_error=raise_on_error,
    )


def label_counts(db, key, number=None) -> tuple[list[str], dict[int, int]]:
    """(class names, boxes per class index on original images) of a version (default: the newest)."""
    with db.session() as session:
        dataset = repository.find_dataset(session, key)
        version = repository.version_of(session, dataset, number)
        rows = session.execute(
            sa.text(
                "SELECT l.class_index, count(*) FROM labels l JOIN images i ON i.id = l.image_id "
                "WHERE l.version_id = :v AND NOT i.is_augmented GROUP BY 1"
            ),
            {"v": version.id},
        ).all()
        return list(repository.validation_of(session, version.id).class_names), dict(rows)


def test_edits_make_a_new_version_with_an_audit_row_each_and_leave_the_parent_as_it_was(
    processed, db, dagster_instance
):
    key, resources = processed
    names, before = label_counts(db, key)
    assert names == ["person", "car", "bicycle", "dog"]
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

    names, after = label_counts(db, key)
    assert names == ["vehicle", "pedestrian"]
    assert after == {0: before[1] + before[2], 1: before[0]}  # dog's boxes are gone
    assert label_counts(db, key, 1) == (["person", "car", "bicycle", "dog"], before), "v1 is untouched"
    with db.session() as session:
        dataset = repository.find_dataset(session, key)
        versions = repository.versions_of(session, dataset.id)
        assert [(v.number, v.cause, v.created_by) for v in versions] == [
            (1, "upload", versions[0].created_by),
            (2, "label_edit", "ann"),
        ]
        assert versions[1].parent_id == versions[0].id and versions[1].run_id == result.run_id
        assert versions[1].files_path == versions[0].files_path, "an edit shares its parent's files"
        v1_augmented = session.execute(
            sa.text("SELECT count(*) FROM images WHERE version_id = :v AND is_augmented"),
            {"v": versions[0].id},
        ).scalar_one()
        assert v1_augmented > 0, "the parent's augmented images stay with the parent"
        audit = session.execute(
            sa.text(
                "SELECT operation, edited_by, boxes_before, boxes_after, classes_before, classes_after, "
                "run_id, version_id FROM label_edits WHERE dataset_id = :d ORDER BY id"
            ),
            {"d": dataset.id},
        ).all()
        diff = diff_versions(
            load_version_content(session, versions[0]), load_version_content(session, versions[1])
        ).to_json()
    assert [row.operation for row in audit] == [
        "rename_class",
        "merge_classes",
        "delete_class",
        "remap_class_ids",
    ]
    assert {row.edited_by for row in audit} == {"ann"} and {row.run_id for row in audit} == {result.run_id}
    assert {row.version_id for row in audit} == {versions[1].id}
    assert audit[0].boxes_before == total and audit[2].boxes_after == total - before[3]
    assert audit[1].classes_before == ["pedestrian", "car", "bicycle", "dog"]
    assert audit[1].classes_after == ["pedestrian", "vehicle", "dog"]
    assert audit[3].classes_after == ["vehicle", "pedestrian"]
    assert diff["images"]["added"] == diff["images"]["removed"] == diff["images"]["changed"] == []
    assert diff["boxes"]["removed"] == before[3]
    assert diff["classes"]["dog"] == -before[3] and diff["classes"]["vehicle"] == before[1] + before[2]

    materialization = dagster_instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("labels"), asset_partitions=[key]), limit=1
    ).records[0]
    metadata = materialization.asset_materialization.metadata
    assert metadata["version"].value == 2 and metadata["label_edits"].value == 4
    assert "dog" in metadata["changes_since_parent"].value, "the version's metadata shows the diff"


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
    assert f"Dataset {key}: " in failure and "Nothing was changed" in failure and "launchpad" in failure
    assert "The above exception was caused by" not in failure  # one paragraph, no repeated traceback
    assert label_counts(db, key) == before
    with db.session() as session:
        assert session.execute(sa.text("SELECT count(*) FROM label_edits")).scalar_one() == 0
        assert session.execute(sa.text("SELECT count(*) FROM dataset_versions")).scalar_one() == 1


def test_an_edit_makes_the_stages_after_labels_run_again(processed, db, dagster_instance):
    key, resources = processed
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=dagster_instance)
    settled = dg.evaluate_automation_conditions(defs=defs, instance=dagster_instance, cursor=baseline.cursor)
    assert key not in settled.get_requested_partitions(CLASS_DISTRIBUTION)  # nothing changed yet

    run_edits(dagster_instance, key, resources, [{"operation": "delete_class", "class_name": "dog"}])
    after_edit = dg.evaluate_automation_conditions(
        defs=defs, instance=dagster_instance, cursor=settled.cursor
    )
    assert key in after_edit.get_requested_partitions(CLASS_DISTRIBUTION)

    # the stages after labels, run for the new version, add its rows and keep version 1's
    result = dg.materialize(
        ALL_ASSETS,
        selection=["class_distribution", "augmented_dataset", "dataset_splits", "dataset_export"],
        instance=dagster_instance,
        partition_key=key,
        resources=resources,
    )
    assert result.success
    root = Path(resources["storage"].root)
    with db.session() as session:
        dataset = repository.find_dataset(session, key)
        first, second = repository.versions_of(session, dataset.id)
        for version in (first, second):
            exports = repository.exports_of(session, version.id)
            assert {e.format for e in exports} == {"yolo", "coco", "voc"}
            assert all((root / e.path).is_file() for e in exports)
        assert dataset.status == "exported"


def test_a_revalidation_after_an_edit_keeps_the_edited_labels(processed, db, dagster_instance):
    key, resources = processed
    run_edits(
        dagster_instance,
        key,
        resources,
        [{"operation": "merge_classes", "sources": ["car", "bicycle"], "into": "vehicle"}],
    )
    edited = label_counts(db, key)
    result = dg.materialize(
        ALL_ASSETS,
        selection=["validated_dataset"],
        instance=dagster_instance,
        partition_key=key,
        resources=resources,
    )
    assert result.success
    assert label_counts(db, key) == edited
    with db.session() as session:
        assert session.execute(sa.text("SELECT count(*) FROM dataset_versions")).scalar_one() == 2
