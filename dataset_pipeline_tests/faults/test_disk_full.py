"""A really full disk (a small tmpfs as the storage root, no mocks) during ingest, augmentation and export.

What must hold: the step fails at once with a message naming the disk (no retries: retrying cannot free space),
the dataset's versions, files and database rows stay exactly as they were, and no temporary file is left
behind. With space again the same step succeeds and adds to the version (a new augmentation or export folder of
its own run) without touching what earlier runs wrote.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
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


@dataclass(frozen=True)
class DatasetState:
    """What the database says about a dataset, for before/after comparison (paths relative to the root)."""

    status: str
    status_reason: str | None
    versions: tuple[tuple, ...]  # (number, cause, source_path, files_path)
    exports: tuple[
        tuple, ...
    ]  # the newest version's newest zip per format: (format, path, size, sha256, run)
    augmentations: tuple[tuple, ...]  # every augmentation of the dataset: (id, version, folder, run, images)
    augmented: tuple[tuple, ...]  # every augmented image row: (id, augmentation, relative path, sha256, size)


def dataset_state(db, key: str) -> DatasetState:
    with db.session() as session:
        dataset = repository.find_dataset(session, key)
        assert dataset is not None
        versions = repository.versions_of(session, dataset.id)
        exports = repository.exports_of(session, versions[-1].id) if versions else []
        augmentations = session.execute(
            sa.text(
                "SELECT a.id, v.number, a.folder, a.run_id, a.images_made FROM augmentations a "
                "JOIN dataset_versions v ON v.id = a.version_id WHERE a.dataset_id = :d ORDER BY a.id"
            ),
            {"d": dataset.id},
        ).all()
        augmented = session.execute(
            sa.text(
                "SELECT id, augmentation_id, relative_path, sha256, size_bytes FROM images "
                "WHERE dataset_id = :d AND is_augmented ORDER BY id"
            ),
            {"d": dataset.id},
        ).all()
        return DatasetState(
            status=dataset.status,
            status_reason=dataset.status_reason,
            versions=tuple((v.number, v.cause, v.source_path, v.files_path) for v in versions),
            exports=tuple(sorted((e.format, e.path, e.size_bytes, e.sha256, e.run_id) for e in exports)),
            augmentations=tuple(tuple(row) for row in augmentations),
            augmented=tuple(tuple(row) for row in augmented),
        )


@dataclass(frozen=True)
class ExportedDataset:
    key: str
    name: str
    run_id: str  # of the run that built the whole graph
    folder: Path  # {root}/{user}/{project}/{name}: every version of the dataset
    version_dir: Path  # its v1/


def exported_dataset(tmp_path, db, instance, resources, name: str, seed: int) -> ExportedDataset:
    """A dataset that went through the whole graph on the small disk, as version 1."""
    key, result = run(instance, resources, upload(tmp_path, name, seed), name, run_config=FIRST_RUN_CONFIG)
    assert result.success
    state = dataset_state(db, key)
    assert state.status == "exported"
    assert [(number, cause) for number, cause, *_ in state.versions] == [(1, "upload")]
    root = Path(resources["storage"].root)
    folder = root / USER / PROJECT / name
    assert state.versions[0][3] == f"{USER}/{PROJECT}/{name}/v1/files"  # relative to the storage root
    return ExportedDataset(key, name, result.run_id, folder, folder / "v1")


def test_export_on_a_full_disk_fails_naming_the_disk_and_keeps_the_previous_zips(
    tmp_path, db, dagster_instance, resources, small_disk
):
    """The zips users download must survive a failed re-export, and the failure must say what to fix."""
    dataset = exported_dataset(tmp_path, db, dagster_instance, resources, "export", seed=11)
    before = dataset_state(db, dataset.key)
    first_folder = f"{USER}/{PROJECT}/export/v1/exports/{dataset.run_id}"
    assert [(fmt, path) for fmt, path, *_ in before.exports] == [
        (fmt, f"{first_folder}/{dataset.key}-v1-{fmt}.zip") for fmt in ("coco", "voc", "yolo")
    ]
    for _, path, size, sha256, _ in before.exports:
        assert (small_disk / path).stat().st_size == size and sha256_of(small_disk / path) == sha256
    zips_before = tree(dataset.version_dir / "exports")
    assert sorted(zips_before) == sorted(
        p.removeprefix(f"{USER}/{PROJECT}/export/v1/exports/") for _, p, *_ in before.exports
    )

    filler = fill_up(small_disk)
    result = materialize_only(dagster_instance, resources, dataset.key, dataset_export)
    message = assert_failed_once_naming_the_disk(result, "dataset_export", small_disk)
    assert f"exporting {dataset.key}" in message

    assert tree(dataset.version_dir / "exports") == zips_before, "the previous zips are byte-identical"
    for _, path, *_ in before.exports:
        with zipfile.ZipFile(small_disk / path) as archive:
            assert archive.testzip() is None
    assert dataset_state(db, dataset.key) == before, "status, versions and export rows are unchanged"
    assert not (dataset.version_dir / "exports" / result.run_id).exists()
    assert temporary_entries(dataset.folder) == []

    filler.unlink()
    again = materialize_only(dagster_instance, resources, dataset.key, dataset_export)
    assert again.success, "with space again, the same export succeeds"
    after = dataset_state(db, dataset.key)
    assert after.status == "exported" and after.versions == before.versions, "an export makes no version"
    new_folder = f"{USER}/{PROJECT}/export/v1/exports/{again.run_id}"
    assert [(fmt, path, run_id) for fmt, path, _, _, run_id in after.exports] == [
        (fmt, f"{new_folder}/{dataset.key}-v1-{fmt}.zip", again.run_id) for fmt in ("coco", "voc", "yolo")
    ], "the newest zip of each format is the new run's, in a folder of its own"
    zips_after = tree(dataset.version_dir / "exports")
    assert {name: zips_after.get(name) for name in zips_before} == zips_before, "the old zips are still there"
    assert len(zips_after) == 2 * len(zips_before)
    assert temporary_entries(dataset.folder) == []


def test_augmentation_on_a_full_disk_fails_naming_the_disk_and_keeps_the_previous_images(
    tmp_path, db, dagster_instance, resources, small_disk
):
    """Augmented images already exported must stay on disk and in the database, matching each other."""
    dataset = exported_dataset(tmp_path, db, dagster_instance, resources, "augment", seed=12)
    before = dataset_state(db, dataset.key)
    [(first_id, version, folder, run_id, images_made)] = before.augmentations
    assert (version, folder, run_id) == (
        1,
        f"{USER}/{PROJECT}/augment/v1/{AUGMENTED_FOLDER}/{dataset.run_id}",
        dataset.run_id,
    )
    assert images_made == len(before.augmented) > 0, "the first run made augmented images"
    augmented_before = tree(dataset.version_dir / AUGMENTED_FOLDER)
    assert sorted(augmented_before) == sorted(f"{dataset.run_id}/{row[2]}" for row in before.augmented)

    filler = fill_up(small_disk)
    three_copies = {"augmented_dataset": {"config": {"copies_per_image": 3, "workers": 1}}}
    result = materialize_only(dagster_instance, resources, dataset.key, augmented_dataset, three_copies)
    message = assert_failed_once_naming_the_disk(result, "augmented_dataset", small_disk)
    assert f"augmenting {dataset.key}" in message

    assert tree(dataset.version_dir / AUGMENTED_FOLDER) == augmented_before, "the same files and bytes"
    assert dataset_state(db, dataset.key) == before, "status, exports, augmentations and their rows unchanged"
    augmented_dir = dataset.version_dir / AUGMENTED_FOLDER
    assert not (augmented_dir / result.run_id).exists()
    assert not (augmented_dir / f".{result.run_id}-new").exists(), "the staging folder is gone"
    assert temporary_entries(dataset.folder) == []

    filler.unlink()
    again = materialize_only(dagster_instance, resources, dataset.key, augmented_dataset, three_copies)
    assert again.success, "with space again, the same augmentation succeeds"
    after = dataset_state(db, dataset.key)
    assert after.versions == before.versions, "an augmentation makes no version"
    assert after.augmentations[0] == before.augmentations[0], "the first augmentation is kept as it was"
    [(new_id, version, folder, run_id, images_made)] = after.augmentations[1:]
    assert (version, folder, run_id) == (
        1,
        f"{USER}/{PROJECT}/augment/v1/{AUGMENTED_FOLDER}/{again.run_id}",
        again.run_id,
    )
    new_rows = [row for row in after.augmented if row[1] == new_id]
    assert images_made == len(new_rows) > len(before.augmented)
    assert [row for row in after.augmented if row[1] == first_id] == list(before.augmented)
    augmented_after = tree(augmented_dir)
    assert {name: augmented_after.get(name) for name in augmented_before} == augmented_before
    assert sorted(set(augmented_after) - set(augmented_before)) == sorted(
        f"{again.run_id}/{row[2]}" for row in new_rows
    )
    assert temporary_entries(dataset.folder) == []


@pytest.mark.parametrize(
    ("room_for_the_upload", "failing_stage"),
    [(False, "keeping the upload of"), (True, "unpacking")],
    ids=["no-room-for-the-upload", "room-for-the-upload-but-not-its-contents"],
)
def test_ingest_on_a_full_disk_fails_naming_the_disk_and_leaves_nothing_half_written(
    tmp_path, db, dagster_instance, resources, small_disk, room_for_the_upload, failing_stage
):
    """A new upload that does not fit must leave no partial copy or unpacked files, which would fill the disk
    further or look like data, and no version; a complete kept copy of the upload is fine (a retry starts
    from it)."""
    other = exported_dataset(tmp_path, db, dagster_instance, resources, "other", seed=13)
    other_state = dataset_state(db, other.key)
    other_files = tree(other.folder)

    source = upload(tmp_path, "new", seed=14)
    filler = fill_up(small_disk, room_for=source.stat().st_size if room_for_the_upload else 0)
    key, result = run(dagster_instance, resources, source, "new", raise_on_error=False)
    message = assert_failed_once_naming_the_disk(result, "raw_upload", small_disk)
    assert f"{failing_stage} {key}" in message
    assert not any(event.is_step_success for event in result.all_events), "no later stage ran"

    assert temporary_entries(small_disk) == []
    (folder,) = [p for p in (small_disk / USER / PROJECT).iterdir() if p != other.folder]
    assert folder == small_disk / USER / PROJECT / "new"
    kept = {f"v1/source/{source.name}": sha256_of(source)} if room_for_the_upload else {}
    assert tree(folder) == kept, "nothing of the new upload is unpacked; only a complete copy may be kept"
    assert tree(other.folder) == other_files, "the dataset already on the disk is untouched"
    assert dataset_state(db, other.key) == other_state
    new = dataset_state(db, key)
    assert new.versions == (), "the upload that did not fit is no version of the dataset"
    assert new.status == "failed" and "disk full" in (new.status_reason or ""), (
        "`dataset-pipeline list` says why"
    )

    filler.unlink()
    _, again = run(dagster_instance, resources, source, "new", run_config=FIRST_RUN_CONFIG)
    assert again.success, "with space again, re-running the same upload ingests it"
    assert dataset_state(db, key).versions == (
        (1, "upload", f"{USER}/{PROJECT}/new/v1/source/{source.name}", f"{USER}/{PROJECT}/new/v1/files"),
    )
    assert dataset_state(db, key).status == "exported"
    assert temporary_entries(small_disk) == []
