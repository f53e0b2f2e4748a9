import os

import pytest

from dataset_pipeline.resources.storage import LocalDatasetStorage, UnsafePathError, atomic_writer


@pytest.fixture
def storage(storage_root):
    return LocalDatasetStorage(root=str(storage_root))


def test_layout_is_user_project_dataset(storage, storage_root):
    path = storage.dataset_dir("ann", "cars", "v1")
    assert path == storage_root / "ann" / "cars" / "v1"
    assert path.is_dir()
    assert storage.inbox_dir() == storage_root / "inbox"


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
