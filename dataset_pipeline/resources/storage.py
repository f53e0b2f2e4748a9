"""Where dataset files live: `{root}/{user}/{project}/{dataset}/...`, the inbox at `{root}/inbox/`.

`DatasetStorage` is the interface the assets use; `LocalDatasetStorage` fills it with the local disk. An
object-store implementation (UPath/fsspec) can fill the same interface later: every method takes names, not
paths, and hands out local working paths only through `dataset_dir`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import dagster as dg

from dataset_pipeline.domain.naming import name_problem
from dataset_pipeline.domain.safe_extract import sha256_file
from dataset_pipeline.settings import Settings

#: Folder under the storage root that holds every file's bytes once, named by sha256.
BLOBS_FOLDER = "blobs"
#: Folder of a version holding the charts and sample grids its stages drew, the only files the preview
#: server of `dataset-pipeline dev` serves.
PREVIEWS_FOLDER = "previews"


#: What `reject_drop` writes beside a rejected entry: the reason, for people and for `list --rejected`.
REJECTION_SUFFIX = ".error.txt"


@dataclass(frozen=True, slots=True)
class RejectedDrop:
    """An inbox entry moved to `inbox/_rejected/`: where it is now, why, and when it was moved."""

    path: Path
    reason: str
    rejected_at: float


class UnsafePathError(ValueError):
    """A name or path from outside would leave the storage root, or is not allowed as a name."""


def check_name(value: str, kind: str) -> str:
    """Validate one path component (user, project or dataset name) and return it unchanged."""
    problem = name_problem(value, kind)
    if problem:
        raise UnsafePathError(problem)
    return value


def _contained(root: Path, candidate: Path) -> Path:
    """Resolve `candidate` and make sure it is under `root` and no existing part of it is a symlink."""
    root = root.resolve()
    current = root
    for part in candidate.relative_to(root).parts if candidate.is_absolute() else candidate.parts:
        if part in ("", ".", ".."):
            raise UnsafePathError(f"path component {part!r} is not allowed in {candidate}")
        current = current / part
        if current.is_symlink():
            raise UnsafePathError(f"{current} is a symlink; storage never follows symlinks")
    resolved = current.resolve()
    if not resolved.is_relative_to(root):
        raise UnsafePathError(f"{candidate} resolves outside the storage root {root}")
    return resolved


class DatasetStorage(dg.ConfigurableResource, ABC):
    """The storage interface the assets depend on."""

    @abstractmethod
    def dataset_dir(self, user: str, project: str, dataset: str) -> Path:
        """Local folder of one dataset (validated names); created on demand."""

    @abstractmethod
    def inbox_dir(self) -> Path:
        """Where uploads are dropped: `inbox/{user}/{project}/<name>.zip` or `<name>/`."""

    @abstractmethod
    def resolve(self, relative: str) -> Path:
        """A path under the root from a root-relative string, refusing escapes and symlinks."""

    @abstractmethod
    def write_bytes(self, target: Path, data: bytes) -> Path:
        """Write atomically: a temporary file in the same folder, then `os.replace`."""

    @abstractmethod
    def relative(self, path: Path) -> str:
        """The root-relative posix string the database stores for a path under the root."""

    @abstractmethod
    def intern_tree(self, folder: Path) -> list[tuple[str, str, int]]:
        """Store every file under `folder` once by content; returns (relative path, sha256, size) per file."""

    @abstractmethod
    def remove_unreferenced_blobs(self, sha256s: Iterable[str]) -> int:
        """Delete the blobs among these that no version's files refer to any more; returns bytes freed."""

    def version_dir(self, user: str, project: str, dataset: str, number: int, *, create: bool = True) -> Path:
        """Folder of one version of a dataset (its kept upload, unpacked files, augmentations, exports)."""
        path = self.dataset_dir(user, project, dataset) / f"v{number}"
        if create:
            path.mkdir(exist_ok=True)
        return path


class LocalDatasetStorage(DatasetStorage):
    """Datasets on the local disk under `root` (DATASET_STORAGE_ROOT, default ./storage)."""

    root: str | None = None

    @property
    def root_path(self) -> Path:
        root = Path(self.root).expanduser().resolve() if self.root else Settings.from_env().storage_root
        root.mkdir(parents=True, exist_ok=True)
        return root

    def dataset_dir(self, user: str, project: str, dataset: str) -> Path:
        parts = (check_name(user, "user"), check_name(project, "project"), check_name(dataset, "dataset"))
        path = _contained(self.root_path, Path(*parts))
        path.mkdir(parents=True, exist_ok=True)
        return path

    def inbox_dir(self) -> Path:
        path = self.root_path / "inbox"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def rejected_dir(self) -> Path:
        path = self.inbox_dir() / "_rejected"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def reject_drop(self, drop: Path, reason: str) -> Path | None:
        """Move an inbox entry into `inbox/_rejected/` with a `.error.txt` beside it saying why.

        Returns where it went, or None when it is not in the inbox (CLI uploads are never moved) or is gone.
        """
        inbox = self.inbox_dir()
        if not drop.is_relative_to(inbox) or not os.path.lexists(drop):
            return None
        rejected = self.rejected_dir()
        target = rejected / drop.name
        counter = 1
        while os.path.lexists(target) or os.path.lexists(f"{target}{REJECTION_SUFFIX}"):
            counter += 1
            target = rejected / f"{drop.name}.{counter}"
        os.replace(drop, target)
        self.write_bytes(target.with_name(target.name + REJECTION_SUFFIX), (reason.rstrip() + "\n").encode())
        return target

    def rejected_drops(self) -> list[RejectedDrop]:
        """Everything in `inbox/_rejected/`, newest first, each with the reason written beside it."""
        rejected = self.rejected_dir()
        found = []
        for reason_file in rejected.glob(f"*{REJECTION_SUFFIX}"):
            entry = reason_file.with_name(reason_file.name.removesuffix(REJECTION_SUFFIX))
            with contextlib.suppress(OSError):  # a file removed by hand meanwhile is simply not listed
                reason = reason_file.read_text(encoding="utf-8", errors="replace").strip()
                found.append(RejectedDrop(entry, reason, reason_file.stat().st_mtime))
        return sorted(found, key=lambda drop: (-drop.rejected_at, drop.path.name))

    def resolve(self, relative: str) -> Path:
        candidate = Path(relative)
        if candidate.is_absolute():
            raise UnsafePathError(
                f"absolute path {relative!r} is not allowed; give a path under the storage root"
            )
        return _contained(self.root_path, candidate)

    def write_bytes(self, target: Path, data: bytes) -> Path:
        with atomic_writer(target) as handle:
            handle.write(data)
        return target

    def blob_path(self, sha256: str) -> Path:
        """Where the bytes with this sha256 live: `blobs/ab/abcdef…` under the root."""
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise UnsafePathError(f"{sha256!r} is not a sha256 hex digest")
        return self.root_path / BLOBS_FOLDER / sha256[:2] / sha256

    def intern_tree(self, folder: Path) -> list[tuple[str, str, int]]:
        """Move each file's bytes into the blob store (or drop them when the blob exists) and leave a hard link.

        The version's folder keeps its tree for the parsers, but bytes that an earlier version already
        holds take no space again. A hard link needs the blob store on the same filesystem as the folder,
        which holds under one storage root.
        """
        manifest = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
            sha256 = sha256_file(path)
            blob = self.blob_path(sha256)
            if blob.exists():
                path.unlink()
            else:
                blob.parent.mkdir(parents=True, exist_ok=True)
                staging = blob.with_name(f".{blob.name}.{os.getpid()}.part")
                os.link(path, staging)
                os.replace(staging, blob)
                path.unlink()
            os.link(blob, path)
            manifest.append((path.relative_to(folder).as_posix(), sha256, blob.stat().st_size))
        return manifest

    def remove_unreferenced_blobs(self, sha256s: Iterable[str]) -> int:
        """A blob whose only link is its own name in the store is referenced by no version's folder."""
        freed = 0
        for sha256 in set(sha256s):
            blob = self.blob_path(sha256)
            with contextlib.suppress(FileNotFoundError):
                stat = blob.stat()
                if stat.st_nlink == 1:
                    blob.unlink()
                    freed += stat.st_size
        return freed

    def relative(self, path: Path) -> str:
        root = self.root_path
        absolute = Path(os.path.abspath(path))
        if not absolute.is_relative_to(root):
            raise UnsafePathError(f"{path} is not under the storage root {root}")
        return absolute.relative_to(root).as_posix()


@contextlib.contextmanager
def atomic_writer(target: Path) -> Iterator[BinaryIO]:
    """Yield a file that becomes `target` only when the block finishes; on error nothing is left behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise


_OLD_MARK = ".old-"


def replace_directory(staging: Path, target: Path) -> None:
    """Swap a fully written `staging` folder into `target`, removing the previous content only afterwards."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}{_OLD_MARK}{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


#: Folders of a dataset that hold files written by the pipeline (not `files/`, which is the user's upload).
_WRITTEN_FOLDERS = ("", "exports", "source")


def sweep_interrupted_writes(dataset_dir: Path) -> list[str]:
    """Remove what a killed or failed writer left in a folder, and return what was done.

    Every write into a version's folder goes to a name starting with "." first (`.files-new`,
    `augmented/.{run id}-new`, `exports/.staging-*`, `.<zip>.*.part`, ...) and is renamed into place when
    complete; callers pass the folder they write into. The run coordinator allows one run per dataset at a
    time, so a hidden entry seen when a step starts belongs to an interrupted run. A folder that
    `replace_directory` moved aside before its replacement arrived is put back instead of deleted.
    """
    done: list[str] = []
    for folder in (dataset_dir / name if name else dataset_dir for name in _WRITTEN_FOLDERS):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
            for entry in entries:
                if not entry.name.startswith("."):
                    continue
                path = Path(entry.path)
                original = _swapped_out_original(path)
                if original is not None and not os.path.lexists(original):
                    os.replace(path, original)
                    done.append(f"restored {original.relative_to(dataset_dir)}")
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                done.append(f"removed {path.relative_to(dataset_dir)}")
    return done


def _swapped_out_original(path: Path) -> Path | None:
    """`.files.old-123` -> `files`: the folder `replace_directory` moved aside, else None."""
    name, mark, pid = path.name[1:].rpartition(_OLD_MARK)
    if not mark or not name or not pid.isdigit():
        return None
    return path.with_name(name)


#: "No space left on device" and "disk quota exceeded": the disk, not the data, is the problem.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem holding `path` (or its nearest existing parent)."""
    current = Path(os.path.abspath(path))
    while not current.exists():
        current = current.parent
    while not os.path.ismount(current):
        current = current.parent
    return current


def disk_full_message(error: BaseException, path: Path) -> str | None:
    """What to tell the user when `error` (or what caused it) is a full disk under `path`; None otherwise."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            break
        current = current.__cause__ or current.__context__
    else:
        return None
    mount = mount_point(path)
    try:
        usage = shutil.disk_usage(mount)
        space = f"{usage.free:,} of {usage.total:,} bytes free"
    except OSError:
        space = "free space unknown"
    return (
        f"disk full: the filesystem mounted at {mount} (holding {path}) is out of space ({space}; "
        f"{os.strerror(current.errno or errno.ENOSPC)}). Free space there or point DATASET_STORAGE_ROOT at a "
        "larger disk, then re-run; nothing written so far was kept."
    )
