"""The inbox sensor evaluated tick by tick with explicit cursors, on a PostgreSQL-backed instance."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import dagster as dg
import pytest

from dataset_pipeline.assets import ALL_ASSETS
from dataset_pipeline.db import repository
from dataset_pipeline.definitions import defs
from dataset_pipeline.domain.model import DatasetFormat
from dataset_pipeline.domain.synthetic import generate_dataset
from dataset_pipeline.partitions import dataset_partitions
from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import LocalDatasetStorage
from dataset_pipeline.sensors import DROP_TAG, inbox_sensor


@pytest.fixture
def user() -> str:
    """A user name of its own per test: the Dagster instance (partitions, runs) is shared by the session."""
    return f"u{uuid.uuid4().hex[:8]}"


@pytest.fixture
def storage(storage_root: Path) -> LocalDatasetStorage:
    return LocalDatasetStorage(root=str(storage_root))


def tick(instance: dg.DagsterInstance, storage: LocalDatasetStorage, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"storage": storage})
    return inbox_sensor(context)


def launch(instance: dg.DagsterInstance, result: dg.SensorResult) -> None:
    """Do what the daemon does with a tick's result: add the partitions, create the runs (not executed)."""
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    job = defs.resolve_job_def("process_dataset")
    for request in result.run_requests or []:
        instance.create_run_for_job(
            job_def=job,
            run_config=request.run_config,
            tags={**request.tags, "dagster/partition": request.partition_key},
        )


def drop_zip(storage_root: Path, user: str, project: str, name: str, seed: int = 1) -> Path:
    sample = generate_dataset(
        storage_root.parent / f"gen-{name}-{seed}",
        n_images=4,
        fmt=DatasetFormat.YOLO,
        seed=seed,
        image_size=(64, 48),
        zipped=True,
    )
    target = storage_root / "inbox" / user / project / f"{name}.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(sample, target)
    return target


def partition_keys(result: dg.SensorResult) -> list[str]:
    return [key for request in result.dynamic_partitions_requests or [] for key in request.partition_keys]


def test_a_new_drop_waits_one_tick_then_adds_its_partition_and_requests_its_run_together(
    dagster_instance, storage, storage_root, user
):
    drop = drop_zip(storage_root, user, "cars", "trucks")

    first = tick(dagster_instance, storage, None)
    assert first.run_requests == []  # seen once: it might still be growing
    assert partition_keys(first) == []

    second = tick(dagster_instance, storage, first.cursor)
    assert len(second.run_requests) == 1
    request = second.run_requests[0]
    assert request.partition_key == f"{user}-cars-trucks"
    assert partition_keys(second) == [f"{user}-cars-trucks"]  # same SensorResult, never two steps
    config = request.run_config["ops"]["raw_upload"]["config"]
    assert config == {"source_path": str(drop), "user": user, "project": "cars", "name": "trucks"}
    assert request.tags == {DROP_TAG: request.run_key}  # the partition alone keeps a dataset's runs in line

    third = tick(dagster_instance, storage, second.cursor)  # nothing new
    assert third.run_requests == []
    assert partition_keys(third) == []


def test_a_half_written_drop_is_not_picked_up_until_it_stops_changing(
    dagster_instance, storage, storage_root, user
):
    drop = drop_zip(storage_root, user, "cars", "growing")
    cursor = tick(dagster_instance, storage, None).cursor
    with drop.open("ab") as handle:  # the copy is still going on
        handle.write(b"\0" * 1024)
    second = tick(dagster_instance, storage, cursor)
    assert second.run_requests == []
    third = tick(dagster_instance, storage, second.cursor)
    assert [r.partition_key for r in third.run_requests] == [f"{user}-cars-growing"]


def test_a_drop_renamed_from_part_is_ready_at_once(dagster_instance, storage, storage_root, user):
    final = drop_zip(storage_root, user, "cars", "vans")
    partial = final.with_name("vans.zip.part")
    os.replace(final, partial)
    first = tick(dagster_instance, storage, None)
    assert first.run_requests == []
    os.replace(partial, final)
    second = tick(dagster_instance, storage, first.cursor)
    assert [r.partition_key for r in second.run_requests] == [f"{user}-cars-vans"]


def test_bad_names_are_moved_to_rejected_with_the_reason_and_the_sensor_goes_on(
    dagster_instance, storage, storage_root, user
):
    good = drop_zip(storage_root, user, "cars", "good")
    bad = drop_zip(storage_root, user, "cars", "bad name")
    stray = storage_root / "inbox" / "stray.zip"
    stray.write_bytes(b"not in a user folder")

    first = tick(dagster_instance, storage, None)
    rejected = storage_root / "inbox" / "_rejected"
    assert not bad.exists() and (rejected / "bad name.zip").exists()
    assert "dataset name 'bad name' is not allowed" in (rejected / "bad name.zip.error.txt").read_text()
    assert not stray.exists() and "inbox/<user>/<project>/" in (rejected / "stray.zip.error.txt").read_text()
    assert good.exists()
    # The tick requested nothing (the good drop waits a tick), so its skip reason says what was rejected
    assert first.run_requests == []
    assert (
        f"inbox/{user}/cars/bad name.zip: dataset name 'bad name' is not allowed"
        in first.skip_reason.skip_message
    )
    assert "inbox/stray.zip: " in first.skip_reason.skip_message
    listed = {drop.path.name: drop.reason for drop in storage.rejected_drops()}
    assert set(listed) >= {"bad name.zip", "stray.zip"}
    assert "dataset name 'bad name' is not allowed" in listed["bad name.zip"]
    second = tick(dagster_instance, storage, first.cursor)
    assert [r.partition_key for r in second.run_requests] == [f"{user}-cars-good"]
    assert second.skip_reason is None


def test_a_tick_evaluated_twice_requests_nothing_twice(dagster_instance, storage, storage_root, user):
    drop_zip(storage_root, user, "cars", "twice")
    cursor = tick(dagster_instance, storage, None).cursor
    first = tick(dagster_instance, storage, cursor)
    assert len(first.run_requests) == 1
    launch(dagster_instance, first)

    again = tick(dagster_instance, storage, cursor)  # the same tick, e.g. after a daemon restart
    assert again.run_requests == []
    assert partition_keys(again) == []
    assert dagster_instance.get_dynamic_partitions(dataset_partitions.name).count(f"{user}-cars-twice") == 1


def ingest(
    instance: dg.DagsterInstance, request: dg.RunRequest, resources: dict
) -> dg.ExecuteInProcessResult:
    """Run what the request asks of raw_upload (the step that turns a drop into a version)."""
    return dg.materialize(
        ALL_ASSETS,
        selection=["raw_upload"],
        instance=instance,
        partition_key=request.partition_key,
        run_config=request.run_config,
        resources=resources,
    )


def test_a_changed_file_under_the_same_name_becomes_a_new_version_of_the_same_partition(
    dagster_instance, db, storage, storage_root, user
):
    resources = {"database": DatabaseResource(url=db.url), "storage": storage}
    drop = drop_zip(storage_root, user, "cars", "fleet", seed=1)
    first_bytes = drop.read_bytes()
    cursor = tick(dagster_instance, storage, None).cursor
    first = tick(dagster_instance, storage, cursor)
    assert partition_keys(first) == [f"{user}-cars-fleet"]
    launch(dagster_instance, first)
    assert ingest(dagster_instance, first.run_requests[0], resources).success
    assert not drop.exists()  # the run moved it into the version's source/

    drop_zip(storage_root, user, "cars", "fleet", seed=2)
    cursor = tick(dagster_instance, storage, first.cursor).cursor
    second = tick(dagster_instance, storage, cursor)
    assert [r.partition_key for r in second.run_requests] == [f"{user}-cars-fleet"]  # no `-v2`
    assert partition_keys(second) == []  # the partition is there already
    config = second.run_requests[0].run_config["ops"]["raw_upload"]["config"]
    assert config == {"source_path": str(drop), "user": user, "project": "cars", "name": "fleet"}
    launch(dagster_instance, second)
    outcome = ingest(dagster_instance, second.run_requests[0], resources)
    [event] = outcome.get_asset_materialization_events()
    assert event.materialization.metadata["version"].value == 2

    with db.session() as session:
        [dataset] = repository.list_datasets(session)
        assert dataset.partition_key == f"{user}-cars-fleet"
        versions = repository.versions_of(session, dataset.id)
    assert [(v.number, v.cause) for v in versions] == [(1, "upload"), (2, "upload")]
    assert versions[1].parent_id == versions[0].id
    assert versions[0].upload_sha256 != versions[1].upload_sha256
    assert versions[1].files_path == f"{user}/cars/fleet/v2/files"  # relative to the storage root
    assert (storage_root / versions[1].files_path).is_dir()

    # The first file dropped again: the same bytes as version 1, so the run rejects it and makes no version.
    drop.write_bytes(first_bytes)
    cursor = tick(dagster_instance, storage, second.cursor).cursor
    third = tick(dagster_instance, storage, cursor)
    assert [r.partition_key for r in third.run_requests] == [f"{user}-cars-fleet"]
    launch(dagster_instance, third)
    outcome = ingest(dagster_instance, third.run_requests[0], resources)
    assert outcome.success and outcome.get_asset_materialization_events() == []
    note = (storage_root / "inbox" / "_rejected" / "fleet.zip.error.txt").read_text()
    assert "same content" in note and "version 1 of this dataset" in note
    with db.session() as session:
        assert [v.number for v in repository.versions_of(session, dataset.id)] == [1, 2]


def test_the_same_bytes_under_another_name_are_reported_as_a_duplicate_by_the_run(
    dagster_instance, db, storage, storage_root, user
):
    """The sensor does not hash (ticks have a time limit); the run recognises the bytes and stops."""
    resources = {"database": DatabaseResource(url=db.url), "storage": storage}
    original = drop_zip(storage_root, user, "cars", "first", seed=5)
    copy = original.with_name("second.zip")
    copy.write_bytes(original.read_bytes())
    cursor = tick(dagster_instance, storage, None).cursor
    result = tick(dagster_instance, storage, cursor)
    assert sorted(r.partition_key for r in result.run_requests) == [
        f"{user}-cars-first",
        f"{user}-cars-second",
    ]
    launch(dagster_instance, result)

    for request in sorted(result.run_requests, key=lambda r: r.partition_key):
        outcome = dg.materialize(
            ALL_ASSETS,
            instance=dagster_instance,
            partition_key=request.partition_key,
            run_config=request.run_config,
            resources=resources,
        )
        assert outcome.success
    events = outcome.get_asset_materialization_events()
    assert events == []  # the second drop materialised nothing
    note = storage_root / "inbox" / "_rejected" / "second.zip.error.txt"
    assert "same content" in note.read_text() and f"{user}-cars-first" in note.read_text()
    assert not copy.exists()
