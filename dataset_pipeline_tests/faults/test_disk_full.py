"""A really full disk (a small tmpfs as the storage root, no mocks) during ingest, augmentation and export.

What must hold: the step fails at once with a message naming the disk (no retries: retrying cannot free space),
the dataset's previous files and database rows stay exactly as they were, and no temporary file is left behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from dataset_pipeline.assets.augmentation import AUGMENTED_FOLDER, augmented_dataset
from dataset_pipeline.assets.export import dataset_export
from dataset_pipeline.db import repository
from dataset_pipeline.domain.model import DatasetFormat
from dataset_pipeline.domain.synthetic import generate_dataset
from dataset_pipeline.local_run import process_upload
from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import LocalDatasetStorage

pytestmark = [pytest.mark.slow]

DISK_SIZE = "24m"
#: What the filler leaves free: a few pages, far less than any step below writes.
LEFT_FREE = 16 * 1024
USER, PROJECT = "ann", "cars"
#: Small and single-process: the first run stays fast and leaves room on the small disk.
FIRST_RUN_CONFIG = {"augmented_dataset": {"copies_per_image": 1, "workers": 1}}  # op -> its config


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A freshly mounted 24 MB tmpfs: a real filesystem that really runs out of space."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill up needs root")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield mount.resolve()
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


@pytest.fixture
def resources(db, small_disk: Path) -> dict[str, object]:
    return {"database": DatabaseResource(url=db.url), "storage": LocalDatasetStorage(root=str(small_disk))}


def fill_up(disk: Path, room_for: int = 0) -> Path:
    """Take all of `disk` but `room_for` bytes (in whole pages) and LEFT_FREE with one file; delete it to undo."""
    page = os.statvfs(disk).f_frsize
    leave = -(-room_for // page) * page + LEFT_FREE
    filler = disk / "filler.bin"
    with filler.open("wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, shutil.disk_usage(disk).free - leave)
    assert shutil.disk_usage(disk).free <= leave
    return filler


def upload(tmp_path: Path, name: str, seed: int) -> Path:
    """A small YOLO zip outside the small disk."""
    return generate_dataset(
        tmp_path / f"upload-{name}",
        n_images=24,
        fmt=DatasetFormat.YOLO,
        seed=seed,
        image_size=(160, 120),
        zipped=True,
    )


def run(instance, resources, source: Path, name: str, **kwargs) -> tuple[str, dg.ExecuteInProcessResult]:
    return process_upload(
        instance, source, user=USER, project=PROJECT, name=name, resources=resources, **kwargs
    )


def materialize_only(instance, resources, key: str, asset, run_config=None) -> dg.ExecuteInProcessResult:
    """One asset of an existing dataset, the way the UI's "materialize" button runs it."""
    return dg.materialize(
        [asset],
        instance=instance,
        partition_key=key,
        resources=resources,
        run_config={"ops": run_config or {}},
        raise_on_error=False,
    )


def failure_message(result: dg.ExecuteInProcessResult, step: str) -> str:
    failures = [event for event in result.get_step_failure_events() if event.step_key == step]
    assert len(failures) == 1, f"expected one failure of {step}, got {failures}"
    error = failures[0].step_failure_data.error
    assert error is not None
    return error.message


def assert_failed_once_naming_the_disk(result: dg.ExecuteInProcessResult, step: str, disk: Path) -> str:
    assert not result.success
    message = failure_message(result, step)
    assert "disk full" in message and f"mounted at {disk} " in message, message
    retries = [
        event.event_type_value
        for event in result.all_events
        if event.event_type in (dg.DagsterEventType.STEP_UP_FOR_RETRY, dg.DagsterEventType.STEP_RESTARTED)
    ]
    assert not retries, f"a full disk must not be retried: {retries}"
    return message


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative name -> sha256), hidden ones included."""
    return {
        path.relative_to(folder).as_posix(): sha256_of(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def temporary_entries(folder: Path) -> list[str]:
    """Hidden entries anywhere under `folder` (every write in progress uses a name starting with "."), except
    inside the user's own unpacked `files/`."""
    return sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob(".*")
        if "files" not in path.relative_to(folder).parts[:-1]
    )


def dataset_state(db, key: str) -> tuple[str, list[tuple], list[tuple]]:
    """Status, export rows and augmented image rows of a dataset, for before/after comparison."""
    with db.session() as session:
        dataset = repository.find_dataset(session, key)
        assert dataset is not None
        exports = sorted(
            (e.format, e.path, e.size_bytes, e.sha256, e.run_id)
            for e in repository.exports_of(session, dataset.id)
        )
        augmented = session.execute(
            sa.text(
                "SELECT id, relative_path, sha256, size_bytes FROM images "
                "WHERE dataset_id = :d AND is_augmented ORDER BY id"
            ),
            {"d": dataset.id},
        ).all()
        return dataset.status, exports, [tuple(row) for row in augmented]


def exported_dataset(tmp_path, db, instance, resources, name: str, seed: int) -> tuple[str, Path]:
    """A dataset that went through the whole graph on the small disk; returns (partition key, its folder)."""
    key, result = run(instance, resources, upload(tmp_path, name, seed), name, run_config=FIRST_RUN_CONFIG)
    assert result.success
    with db.session() as session:
        dataset = repository.find_dataset(session, key)
        assert dataset is not None and dataset.status == "exported"
        return key, Path(dataset.storage_path)


def test_export_on_a_full_disk_fails_naming_the_disk_and_keeps_the_previous_zips(
    tmp_path, db, dagster_instance, resources, small_disk
):
    """The zips users download must survive a failed re-export, and the failure must say what to fix."""
    key, folder = exported_dataset(tmp_path, db, dagster_instance, resources, "export", seed=11)
    status, exports, _ = dataset_state(db, key)
    assert {fmt for fmt, *_ in exports} == {"yolo", "coco", "voc"}
    for _, path, size, sha256, _ in exports:
        assert Path(path).stat().st_size == size and sha256_of(Path(path)) == sha256
    zips_before = tree(folder / "exports")

    filler = fill_up(small_disk)
    result = materialize_only(dagster_instance, resources, key, dataset_export)
    message = assert_failed_once_naming_the_disk(result, "dataset_export", small_disk)
    assert f"exporting {key}" in message

    assert tree(folder / "exports") == zips_before, "the previous zips are byte-identical"
    for _, path, *_ in exports:
        with zipfile.ZipFile(path) as archive:
            assert archive.testzip() is None
    assert dataset_state(db, key)[:2] == (status, exports), "status and export rows are unchanged"
    assert temporary_entries(folder) == []

    filler.unlink()
    again = materialize_only(dagster_instance, resources, key, dataset_export)
    assert again.success, "with space again, the same export succeeds"
    new_status, new_exports, _ = dataset_state(db, key)
    assert new_status == "exported"
    assert {row[4] for row in new_exports} == {again.run_id}
    assert temporary_entries(folder) == []


def test_augmentation_on_a_full_disk_fails_naming_the_disk_and_keeps_the_previous_images(
    tmp_path, db, dagster_instance, resources, small_disk
):
    """Augmented images already exported must stay on disk and in the database, matching each other."""
    key, folder = exported_dataset(tmp_path, db, dagster_instance, resources, "augment", seed=12)
    state_before = dataset_state(db, key)
    assert state_before[2], "the first run made augmented images"
    augmented_before = tree(folder / AUGMENTED_FOLDER)
    assert sorted(augmented_before) == sorted(row[1] for row in state_before[2])

    filler = fill_up(small_disk)
    three_copies = {"augmented_dataset": {"config": {"copies_per_image": 3, "workers": 1}}}
    result = materialize_only(dagster_instance, resources, key, augmented_dataset, three_copies)
    message = assert_failed_once_naming_the_disk(result, "augmented_dataset", small_disk)
    assert f"augmenting {key}" in message

    assert tree(folder / AUGMENTED_FOLDER) == augmented_before, "augmented/ keeps the same files and bytes"
    assert dataset_state(db, key) == state_before, "status, exports and augmented rows are unchanged"
    assert not (folder / f".{AUGMENTED_FOLDER}-new").exists()
    assert temporary_entries(folder) == []

    filler.unlink()
    again = materialize_only(dagster_instance, resources, key, augmented_dataset, three_copies)
    assert again.success, "with space again, the same augmentation succeeds"
    assert len(dataset_state(db, key)[2]) > len(state_before[2])


@pytest.mark.parametrize(
    ("room_for_the_upload", "failing_stage"),
    [(False, "keeping the upload of"), (True, "unpacking")],
    ids=["no-room-for-the-upload", "room-for-the-upload-but-not-its-contents"],
)
def test_ingest_on_a_full_disk_fails_naming_the_disk_and_leaves_nothing_half_written(
    tmp_path, db, dagster_instance, resources, small_disk, room_for_the_upload, failing_stage
):
    """A new upload that does not fit must leave no partial copy or unpacked files, which would fill the disk
    further or look like data; a complete kept copy of the upload is fine (a retry starts from it)."""
    other_key, other_folder = exported_dataset(tmp_path, db, dagster_instance, resources, "other", seed=13)
    other_state = dataset_state(db, other_key)
    other_files = tree(other_folder)

    source = upload(tmp_path, "new", seed=14)
    filler = fill_up(small_disk, room_for=source.stat().st_size if room_for_the_upload else 0)
    key, result = run(dagster_instance, resources, source, "new", raise_on_error=False)
    message = assert_failed_once_naming_the_disk(result, "raw_upload", small_disk)
    assert f"{failing_stage} {key}" in message
    assert not any(event.is_step_success for event in result.all_events), "no later stage ran"

    assert temporary_entries(small_disk) == []
    (folder,) = [p for p in (small_disk / USER / PROJECT).iterdir() if p != other_folder]
    kept = {f"source/{source.name}": sha256_of(source)} if room_for_the_upload else {}
    assert tree(folder) == kept, "nothing of the new upload is unpacked; only a complete copy may be kept"
    assert tree(other_folder) == other_files, "the dataset already on the disk is untouched"
    assert dataset_state(db, other_key) == other_state
    with db.session() as session:
        new = repository.find_dataset(session, key)
        assert new.storage_path is None, "the new dataset is not recorded as stored"
        assert new.status == "failed" and "disk full" in new.status_reason, "`dataset-pipeline list` says why"

    filler.unlink()
    _, again = run(dagster_instance, resources, source, "new", run_config=FIRST_RUN_CONFIG)
    assert again.success, "with space again, re-running the same upload ingests it"
    assert temporary_entries(small_disk) == []
