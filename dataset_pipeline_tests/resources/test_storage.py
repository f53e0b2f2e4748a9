import errno
import os
from pathlib import Path

import pytest

from dataset_pipeline.resources.storage import (
    LocalDatasetStorage,
    UnsafePathError,
    atomic_writer,
    disk_full_message,
    mount_point,
    sweep_interrupted_writes,
)


@pytest.fixture
def storage(storage_root):
    return LocalDatasetStorage(root=str(storage_root))


def test_layout_is_user_project_dataset(storage, storage_root):
    path = storage.dataset_dir("ann", "cars", "v1")
    assert path == storage_root / "ann" / "cars" / "v1"
    assert path.is_dir()
    assert storage.inbox_dir() == storage_root / "inbox"


def test_each_version_has_its_own_folder_under_the_dataset(storage, storage_root):
    v1 = storage.version_dir("ann", "cars", "trucks", 1)
    v2 = storage.version_dir("ann", "cars", "trucks", 2)
    assert (v1, v2) == (storage_root / "ann/cars/trucks/v1", storage_root / "ann/cars/trucks/v2")
    assert v1.is_dir() and v2.is_dir()
    assert storage.version_dir("ann", "cars", "trucks", 1) == v1  # asking again is fine
    with pytest.raises(UnsafePathError):
        storage.version_dir("ann", "cars", "../trucks", 1)


def test_database_paths_are_relative_to_the_root_and_resolve_back(storage, storage_root):
    files = storage.version_dir("ann", "cars", "trucks", 1) / "files"
    relative = storage.relative(files)
    assert relative == "ann/cars/trucks/v1/files"
    assert storage.resolve(relative) == files
    # the same relative path finds the files after the root moved
    moved = LocalDatasetStorage(root=str(storage_root.parent / "elsewhere"))
    assert moved.resolve(relative) == storage_root.parent / "elsewhere" / "ann/cars/trucks/v1/files"


def test_a_path_outside_the_root_has_no_relative_form(storage, tmp_path):
    with pytest.raises(UnsafePathError, match="not under the storage root"):
        storage.relative(tmp_path / "outside" / "x.zip")


@pytest.mark.parametrize(
    "user,project,dataset",
    [
        ("..", "p", "d"),
        ("u", "..", "d"),
        ("u", "p", "../../etc"),
        ("/abs", "p", "d"),
        ("u", "p", "a/b"),
        ("u", "p", "a\\b"),
        ("u", "p", ""),
        ("u", "p", "naïve"),
        ("u", "p", "semi;colon"),
        ("u", "p", "space d"),
        ("u", "p", ".hidden"),
        ("u", "p", "a..b"),
        ("inbox", "p", "d"),
        ("u", "p", "x" * 65),
    ],
)
def test_unsafe_names_are_refused(storage, user, project, dataset):
    with pytest.raises(UnsafePathError):
        storage.dataset_dir(user, project, dataset)


def test_symlinks_are_never_followed(storage, storage_root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, storage_root / "eve")
    with pytest.raises(UnsafePathError, match="symlink"):
        storage.dataset_dir("eve", "p", "d")
    (storage_root / "ann").mkdir()
    os.symlink(storage_root / "ann", storage_root / "alias")
    with pytest.raises(UnsafePathError, match="symlink"):
        storage.resolve("alias/x")


def test_resolve_refuses_escapes(storage):
    with pytest.raises(UnsafePathError):
        storage.resolve("../x")
    with pytest.raises(UnsafePathError):
        storage.resolve("/etc/passwd")


def test_atomic_write_leaves_nothing_on_failure(storage_root):
    target = storage_root / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write(b"half")
        raise RuntimeError("disk on fire")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in storage_root.iterdir()) == ["f.bin"]
    with atomic_writer(target) as handle:
        handle.write(b"new")
    assert target.read_bytes() == b"new"


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_sweep_removes_what_interrupted_writers_leave_and_nothing_else(tmp_path):
    dataset = tmp_path / "ann" / "cars" / "trucks"
    for folder in (
        "files/.git",
        "files/images",
        "exports/.staging-x1",
        "source",
        "augmented",
        ".files-new/a",
    ):
        (dataset / folder).mkdir(parents=True)
    for name in (
        "files/.hidden-user-file",  # the user's upload: never touched
        "files/images/a.jpg",
        "exports/trucks-yolo.zip",
        "exports/.staging-x1/trucks-yolo.zip.k2.part",
        "exports/.trucks-coco.zip.q9.part",
        "source/trucks.zip",
        "source/.trucks.zip.incoming",
        "augmented/a__aug0.jpg",
        ".files-new/a/b.txt",
        ".augmented-new",
    ):
        (dataset / name).write_bytes(b"x")
    done = sweep_interrupted_writes(dataset)
    assert sorted(done) == [
        "removed .augmented-new",
        "removed .files-new",
        "removed exports/.staging-x1",
        "removed exports/.trucks-coco.zip.q9.part",
        "removed source/.trucks.zip.incoming",
    ]
    assert _files(dataset) == [
        "augmented",
        "augmented/a__aug0.jpg",
        "exports",
        "exports/trucks-yolo.zip",
        "files",
        "files/.git",
        "files/.hidden-user-file",
        "files/images",
        "files/images/a.jpg",
        "source",
        "source/trucks.zip",
    ]
    assert sweep_interrupted_writes(dataset) == []


def test_sweep_of_a_versions_run_folders_removes_only_what_was_staged(tmp_path):
    """Augmentations and exports publish one folder per run (`augmented/{run}/`, `exports/{run}/`) from a
    hidden sibling; a killed run leaves only that sibling, and the published folders of earlier runs stay."""
    version = tmp_path / "ann" / "cars" / "trucks" / "v1"
    for name in (
        "augmented/run-1/a__aug0.jpg",
        "augmented/.run-2-new/a__aug0.jpg",  # a killed augmentation
        "exports/run-1/trucks-v1-yolo.zip",
        "exports/.staging-k3/trucks-v1-coco.zip.x1.part",  # a killed export
    ):
        (version / name).parent.mkdir(parents=True, exist_ok=True)
        (version / name).write_bytes(b"x")
    assert sweep_interrupted_writes(version / "augmented") == ["removed .run-2-new"]
    assert sweep_interrupted_writes(version / "exports") == ["removed .staging-k3"]
    assert _files(version) == [
        "augmented",
        "augmented/run-1",
        "augmented/run-1/a__aug0.jpg",
        "exports",
        "exports/run-1",
        "exports/run-1/trucks-v1-yolo.zip",
    ]


def test_sweep_puts_back_a_folder_swapped_out_just_before_a_crash(tmp_path):
    """replace_directory renames the old folder aside, then the new one in: killed in between, the old one
    is the only complete copy, so it is restored, not deleted."""
    dataset = tmp_path / "d"
    (dataset / ".augmented.old-4242").mkdir(parents=True)
    (dataset / ".augmented.old-4242" / "a.jpg").write_bytes(b"old")
    (dataset / ".files.old-77").mkdir()
    (dataset / "files").mkdir()  # the swap finished: the aside copy is garbage
    done = sweep_interrupted_writes(dataset)
    assert sorted(done) == ["removed .files.old-77", "restored augmented"]
    assert (dataset / "augmented" / "a.jpg").read_bytes() == b"old"
    assert _files(dataset) == ["augmented", "augmented/a.jpg", "files"]


def test_sweep_of_a_missing_folder_does_nothing(tmp_path):
    assert sweep_interrupted_writes(tmp_path / "never-created") == []


def test_disk_full_message_names_the_filesystem_and_what_to_do(tmp_path):
    error = OSError(errno.ENOSPC, "No space left on device")
    message = disk_full_message(error, tmp_path / "exports" / "x.zip")
    assert message is not None
    assert message.startswith(f"disk full: the filesystem mounted at {mount_point(tmp_path)} ")
    assert str(tmp_path / "exports" / "x.zip") in message and "bytes free" in message
    assert "DATASET_STORAGE_ROOT" in message


def test_disk_full_is_found_behind_wrapping_errors_and_only_for_full_disks(tmp_path):
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError as inner:
            raise RuntimeError("while writing 'images/a.jpg' into the zip") from inner
    except RuntimeError as wrapped:
        assert "Disk quota exceeded" in (disk_full_message(wrapped, tmp_path) or "")
    assert disk_full_message(OSError(errno.EACCES, "Permission denied"), tmp_path) is None
    assert disk_full_message(ValueError("bad"), tmp_path) is None


def test_mount_point_of_a_path_not_yet_created(tmp_path):
    assert mount_point(tmp_path / "not" / "there") == mount_point(tmp_path)
    assert os.path.ismount(mount_point(tmp_path))
