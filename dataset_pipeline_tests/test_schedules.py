"""The nightly re-validation: a run request per dataset, and what a re-validation finds on disk."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from dataset_pipeline.assets import ALL_ASSETS
from dataset_pipeline.db import repository
from dataset_pipeline.db.models import Dataset
from dataset_pipeline.domain.model import DatasetFormat
from dataset_pipeline.domain.revalidation import FILE_CHANGED, FILE_MISSING
from dataset_pipeline.domain.synthetic import generate_dataset
from dataset_pipeline.local_run import process_upload
from dataset_pipeline.partitions import dataset_partitions
from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import LocalDatasetStorage
from dataset_pipeline.schedules import nightly_revalidation

REVALIDATE = {"ops": {"validated_dataset": {"config": {"skip_if_unchanged": True}}}}


def test_the_schedule_requests_one_revalidation_per_dataset_partition(dagster_instance):
    keys = [f"sched-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    dagster_instance.add_dynamic_partitions(dataset_partitions.name, keys)
    when = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
    context = dg.build_schedule_context(instance=dagster_instance, scheduled_execution_time=when)
    requests = nightly_revalidation(context)

    by_key = {request.partition_key: request for request in requests}
    assert set(keys) <= set(by_key)
    assert set(by_key) == set(dagster_instance.get_dynamic_partitions(dataset_partitions.name))
    for key in keys:
        assert by_key[key].run_config == REVALIDATE
        assert by_key[key].run_key == f"revalidate:{key}:2026-11-25T02:00"


@pytest.fixture
def processed(tmp_path, db, dagster_instance, storage_root):
    resources = {
        "database": DatabaseResource(url=db.url),
        "storage": LocalDatasetStorage(root=str(storage_root)),
    }
    source = generate_dataset(tmp_path / "up", n_images=10, fmt=DatasetFormat.YOLO, seed=8, zipped=True)
    key, result = process_upload(
        dagster_instance,
        source,
        user=f"r{uuid.uuid4().hex[:6]}",
        project="p",
        name="nightly",
        resources=resources,
    )
    assert result.success
    return key, resources


def revalidate(instance, key, resources, raise_on_error=True) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        ALL_ASSETS,
        selection=["validated_dataset"],
        instance=instance,
        partition_key=key,
        resources=resources,
        run_config=REVALIDATE,
        raise_on_error=raise_on_error,
    )


def test_an_unchanged_dataset_is_observed_not_materialised(processed, dagster_instance):
    key, resources = processed
    result = revalidate(dagster_instance, key, resources)
    assert result.success
    assert result.get_asset_materialization_events() == []  # nothing downstream turns stale
    observations = result.get_asset_observation_events()
    assert (
        observations[0].asset_observation_data.asset_observation.metadata["revalidated"].value == "unchanged"
    )


def test_files_missing_or_changed_on_disk_are_reported_and_the_dataset_turns_invalid(
    processed, db, dagster_instance
):
    key, resources = processed
    with db.session() as session:
        dataset = repository.find_dataset(session, key)
        files = Path(dataset.storage_path) / "files"
        dataset_id = dataset.id
    images = sorted(p for p in files.rglob("*.jpg"))
    changed, *missing = images[:7]
    changed.write_bytes(images[8].read_bytes())  # other pixels under the same name
    for path in missing:  # six of ten gone: more than the 50 % the policy allows
        path.unlink()

    result = revalidate(dagster_instance, key, resources, raise_on_error=False)
    assert not result.success  # the blocking check fails the run: the nightly run shows red for this dataset
    assert len(result.get_asset_materialization_events()) == 1  # changed: a new version downstream sees
    with db.session() as session:
        rows = session.execute(
            sa.text("SELECT code, severity, file FROM dataset_validations WHERE dataset_id = :d"),
            {"d": dataset_id},
        ).all()
        dataset = session.get(Dataset, dataset_id)
        assert dataset.status == "invalid"
        assert "6 missing" in dataset.status_reason
    relative = {path: path.relative_to(files).as_posix() for path in images}
    assert {(r.file, r.severity) for r in rows if r.code == FILE_MISSING} == {
        (relative[path], "error") for path in missing
    }
    assert [(r.file, r.severity) for r in rows if r.code == FILE_CHANGED] == [(relative[changed], "warning")]
    check = result.get_asset_check_evaluations()[0]
    assert not check.passed  # the blocking check stops everything downstream
