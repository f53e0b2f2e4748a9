"""What one dataset takes on disk, by what the bytes are for, after the bench has run.

Apparent sizes (`st_size`), and every inode counted once: a file of a version's `files/` tree that is a hard
link to its blob costs nothing beyond the blob, and a blob is billed to the first version that refers to it.
So the versions' `added_bytes` sum to `total_bytes`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from dataset_pipeline.db import repository
from dataset_pipeline.db.database import Database
from dataset_pipeline.db.models import VersionFile
from dataset_pipeline.resources.storage import LocalDatasetStorage

#: Folders of a version, as `storage.version_dir` lays them out; anything else there is "other".
VERSION_FOLDERS = ("source", "files", "augmented", "exports")


@dataclass
class _Version:
    number: int
    cause: str
    shas: set[str]
    new_blobs: int = 0
    new_blob_bytes: int = 0
    files: int = 0
    files_link_only: int = 0
    bytes_by_folder: dict[str, int] = field(default_factory=dict)  # not already counted as a blob

    def added_bytes(self) -> int:
        return self.new_blob_bytes + sum(self.bytes_by_folder.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.number,
            "cause": self.cause,
            "source_bytes": self.bytes_by_folder.get("source", 0),
            "new_blobs": self.new_blobs,
            "new_blob_bytes": self.new_blob_bytes,
            "files": self.files,
            "files_link_only": self.files_link_only,
            "files_extra_bytes": self.bytes_by_folder.get("files", 0),
            "augmented_bytes": self.bytes_by_folder.get("augmented", 0),
            "exports_bytes": self.bytes_by_folder.get("exports", 0),
            "other_bytes": self.bytes_by_folder.get("other", 0),
            "added_bytes": self.added_bytes(),
        }


def dataset_disk_use(database_url: str, storage_root: Path, partition_key: str) -> dict[str, Any]:
    """Bytes of the dataset's blobs, and per version of its upload, files tree, augmentations and exports."""
    storage = LocalDatasetStorage(root=str(storage_root))
    database = Database(database_url)
    try:
        with database.session() as session:
            dataset = repository.dataset_by_partition(session, partition_key)
            user, project = repository.owner_of(session, dataset)
            versions = [
                _Version(
                    version.number,
                    version.cause,
                    set(
                        session.scalars(
                            sa.select(VersionFile.sha256).where(VersionFile.version_id == version.id)
                        )
                    ),
                )
                for version in repository.versions_of(session, dataset.id)
            ]
            name = dataset.name
    finally:
        database.dispose()
    folder = storage.dataset_dir(user, project, name)
    return _measure(storage, folder, versions) | {
        "dataset": partition_key,
        "folder": storage.relative(folder),
    }


def _measure(storage: LocalDatasetStorage, folder: Path, versions: list[_Version]) -> dict[str, Any]:
    seen: set[tuple[int, int]] = set()
    blob_inodes: set[tuple[int, int]] = set()
    blobs = blob_bytes = missing = 0
    referenced: set[str] = set()
    for version in versions:
        for sha256 in sorted(version.shas - referenced):
            try:
                info = storage.blob_path(sha256).stat()
            except FileNotFoundError:
                missing += 1
                continue
            key = (info.st_dev, info.st_ino)
            blob_inodes.add(key)
            seen.add(key)
            version.new_blobs += 1
            version.new_blob_bytes += info.st_size
        referenced |= version.shas
        blobs += version.new_blobs
        blob_bytes += version.new_blob_bytes

    by_number = {f"v{version.number}": version for version in versions}
    unversioned = 0
    for path, info in _files(folder):
        relative = path.relative_to(folder).parts
        version = by_number.get(relative[0]) if len(relative) > 1 else None
        key = (info.st_dev, info.st_ino)
        size = 0 if key in seen else info.st_size
        seen.add(key)
        if version is None:
            unversioned += size
            continue
        kind = relative[1] if len(relative) > 2 and relative[1] in VERSION_FOLDERS else "other"
        if kind == "files":
            version.files += 1
            if key in blob_inodes and info.st_nlink > 1:  # a hard link to its blob: no bytes of its own
                version.files_link_only += 1
        version.bytes_by_folder[kind] = version.bytes_by_folder.get(kind, 0) + size
    rows = [version.to_dict() for version in versions]
    return {
        "blobs": {"count": blobs, "bytes": blob_bytes, "missing": missing},
        "versions": rows,
        "outside_versions_bytes": unversioned,
        "total_bytes": sum(row["added_bytes"] for row in rows) + unversioned,
        "note": "apparent sizes; each inode once; a blob is billed to the first version that refers to it",
    }


def _files(folder: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Every non-directory under `folder`, symlinks not followed, in a stable order."""
    for parent, directories, names in os.walk(folder):
        directories.sort()
        for name in sorted(names):
            path = Path(parent, name)
            info = path.lstat()
            if not stat.S_ISDIR(info.st_mode):
                yield path, info
