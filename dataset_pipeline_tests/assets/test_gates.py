"""Gates hold per dataset: a dataset whose blocking check failed gets nothing after validation from
automation, whatever other datasets do, and a run that built the whole graph is not run a second time."""

from __future__ import annotations

import zipfile
from pathlib import Path

import dagster as dg
import pytest

from dataset_pipeline.db import repository
from dataset_pipeline.definitions import defs
from dataset_pipeline.domain.model import DatasetFormat
from dataset_pipeline.domain.synthetic import generate_dataset
from dataset_pipeline.local_run import process_upload
from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import LocalDatasetStorage

AFTER_VALIDATION = ("labels", "class_distribution", "augmented_dataset", "dataset_splits", "dataset_export")


def _corrupted(source: Path, target: Path) -> Path:
    """The upload with every image's bytes replaced by garbage: nothing decodes."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as broken:
        for name in original.namelist():
            data = b"not an image" * 10 if name.endswith(".jpg") else original.read(name)
            broken.writestr(name, data)
    return target


def _requested(result: dg.EvaluateAutomationConditionsResult) -> dict[str, set[str]]:
    return {
        name: set(result.get_requested_partitions(dg.AssetKey(name)))
        for name in AFTER_VALIDATION
        if result.get_requested_partitions(dg.AssetKey(name))
    }


@pytest.fixture
def resources(db, storage_root):
    return {"database": DatabaseResource(url=db.url), "storage": LocalDatasetStorage(root=str(storage_root))}


def test_a_failed_gate_holds_its_dataset_back_while_another_passes(tmp_path, db, dagster_instance, resources):
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=dagster_instance).cursor
    good = generate_dataset(tmp_path / "good", n_images=8, fmt=DatasetFormat.YOLO, seed=31, zipped=True)
    bad = _corrupted(
        generate_dataset(tmp_path / "bad", n_images=6, fmt=DatasetFormat.YOLO, seed=32, zipped=True),
        tmp_path / "broken.zip",
    )
    bad_key, bad_run = process_upload(
        dagster_instance, bad, user="g", project="p", name="broken", resources=resources, raise_on_error=False
    )
    assert not bad_run.success  # the blocking check failed
    materialized = {e.asset_key.path[-1] for e in bad_run.get_asset_materialization_events()}
    assert materialized <= {"raw_upload", "validated_dataset"}
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=dagster_instance, cursor=cursor).cursor

    good_key, good_run = process_upload(
        dagster_instance, good, user="g", project="p", name="fine", resources=resources
    )
    assert good_run.success
    for _ in range(2):  # the tick right after, and the one after that
        result = dg.evaluate_automation_conditions(defs=defs, instance=dagster_instance, cursor=cursor)
        cursor = result.cursor
        assert _requested(result) == {}, "neither the failed dataset nor the finished one is requested"

    with db.session() as session:
        broken = repository.find_dataset(session, bad_key)
        assert broken.status == "invalid"
        verdict = repository.validation_of(session, repository.version_of(session, broken).id)
        assert not verdict.passed and verdict.summary["usable_images"] == 0
    summary = next(
        e.materialization.metadata["summary"].value
        for e in bad_run.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("validated_dataset")
    )
    assert summary.startswith("**Validation FAILED**"), "the UI summary says what the check decided"

    # a label edit of the good dataset re-runs what follows for it, and still nothing for the broken one
    edit = dg.materialize(
        [a for a in defs.assets if a.key.path[-1] in ("raw_upload", "validated_dataset", "labels")],
        selection=["labels"],
        run_config={
            "ops": {
                "labels": {
                    "config": {
                        "edited_by": "ann",
                        "edits": [{"operation": "rename_class", "class_name": "person", "new_name": "human"}],
                    }
                }
            }
        },
        instance=dagster_instance,
        partition_key=good_key,
        resources=resources,
    )
    assert edit.success
    result = dg.evaluate_automation_conditions(defs=defs, instance=dagster_instance, cursor=cursor)
    assert _requested(result) == {name: {good_key} for name in AFTER_VALIDATION[1:]}  # one chained run


def test_a_partly_quarantined_dataset_warns_but_goes_through_the_graph(
    tmp_path, db, dagster_instance, resources
):
    from dataset_pipeline.assets.validation import QUARANTINE_CHECK

    source = generate_dataset(tmp_path / "partial", n_images=10, fmt=DatasetFormat.YOLO, seed=33, zipped=True)
    with zipfile.ZipFile(source) as original:
        broken = sorted(name for name in original.namelist() if name.endswith(".jpg"))[:2]
        upload = tmp_path / "partial-broken.zip"
        with zipfile.ZipFile(upload, "w") as partial:
            for name in original.namelist():
                partial.writestr(name, b"not an image" * 10 if name in broken else original.read(name))
    key, result = process_upload(
        dagster_instance, upload, user="ann", project="gates", name="partial", resources=resources
    )
    assert result.success  # a warning, not a gate: the usable images are exported
    checks = {check.check_name: check for check in result.get_asset_check_evaluations()}
    warning = checks[QUARANTINE_CHECK]
    assert not warning.passed and warning.severity == dg.AssetCheckSeverity.WARN
    assert warning.metadata["quarantined"].value == 2
    assert warning.metadata["first_quarantined"].value == broken
    assert "dataset-pipeline report" in warning.description
    with db.session() as session:
        version = repository.version_of(session, repository.find_dataset(session, key))
        assert {e.format for e in repository.exports_of(session, version.id)} == {"yolo", "coco", "voc"}
