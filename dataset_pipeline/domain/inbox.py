"""What is in the inbox and which drops are ready: the inbox sensor's logic, with no Dagster in it.

A drop is `inbox/{user}/{project}/<name>.zip` or `inbox/{user}/{project}/<name>/`. It is *ready* when it
cannot still be growing: its size and modification time were the same at the previous tick, or it was
renamed from `<name>.zip.part` since then, or (folders) it holds a `_READY` marker. The scan only calls
`stat` (and opens a zip to see it can be read), never reads file contents: sensor ticks have a time limit,
hashing and unzipping happen in the run.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dataset_pipeline.domain.naming import name_problem

#: Folders of the inbox that are not users: rejected drops, and anything hidden (editors, our own temp files).
SKIPPED_TOP_LEVEL = frozenset({"_rejected", "_processing"})
READY_MARKER = "_READY"
PART_SUFFIX = ".part"


@dataclass(frozen=True, slots=True)
class Drop:
    """One upload waiting in the inbox, as `stat` sees it."""

    relative_path: str  # posix, relative to the inbox: "alice/cars/trucks.zip"
    user: str
    project: str
    name: str  # dataset name: the file name without .zip, or the folder name
    kind: Literal["zip", "folder"]
    size: int  # bytes (a folder: the sum of its regular files)
    mtime_ns: int  # a folder: the newest modification time inside it
    has_ready_marker: bool = False

    @property
    def signature(self) -> str:
        """Changes whenever the drop is written to; equal signatures on two ticks mean it is complete."""
        return f"{self.size}:{self.mtime_ns}"

    @property
    def drop_id(self) -> str:
        """This drop at this content: the run key, so one drop is never requested twice."""
        return f"{self.relative_path}@{self.signature}"


@dataclass(frozen=True, slots=True)
class Rejection:
    """An inbox entry that can never become a dataset (bad name, wrong kind, symlink): moved aside with a note."""

    relative_path: str
    reason: str


@dataclass(slots=True)
class InboxScan:
    drops: list[Drop] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    part_files: set[str] = field(default_factory=set)  # "alice/cars/trucks.zip" for trucks.zip.part
    problems: list[str] = field(default_factory=list)  # transient: unreadable or vanished; retried next tick
    page_after: str | None = None  # entries up to and including this path were skipped (earlier pages)
    next_page_after: str | None = None  # where the next tick continues; None = back to the start

    def in_page(self, relative_path: str) -> bool:
        """Whether this scan looked at `relative_path` (pages are ranges of the sorted paths)."""
        after_start = self.page_after is None or relative_path > self.page_after
        before_end = self.next_page_after is None or relative_path <= self.next_page_after
        return after_start and before_end


def _entries(folder: Path, scan: InboxScan) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as iterator:
            return sorted(iterator, key=lambda entry: entry.name)
    except FileNotFoundError:
        return []  # vanished between listing and reading: nothing to do
    except OSError as error:
        scan.problems.append(f"{folder}: cannot list ({error.strerror or error}); skipped this tick")
        return []


def _folder_signature(folder: Path, max_files: int) -> tuple[int, int, bool]:
    """(total bytes, newest mtime_ns, has _READY) of a folder's regular files, without following symlinks."""
    total, newest, files = 0, os.lstat(folder).st_mtime_ns, 0
    has_marker = (folder / READY_MARKER).is_file()
    stack = [folder]
    while stack:
        with os.scandir(stack.pop()) as iterator:
            for entry in iterator:
                info = entry.stat(follow_symlinks=False)
                newest = max(newest, info.st_mtime_ns)
                if stat.S_ISDIR(info.st_mode):
                    stack.append(Path(entry.path))
                elif stat.S_ISREG(info.st_mode):
                    total += info.st_size
                    files += 1
                    if files > max_files:
                        raise OverflowError(f"more than {max_files} files")
    return total, newest, has_marker


def _project_entries(inbox: Path, scan: InboxScan) -> Iterator[tuple[str, str, os.DirEntry[str]]]:
    for user_entry in _entries(inbox, scan):
        if user_entry.name.startswith(".") or user_entry.name in SKIPPED_TOP_LEVEL:
            continue
        if not user_entry.is_dir(follow_symlinks=False):
            scan.rejections.append(
                Rejection(
                    user_entry.name, "drops go into inbox/<user>/<project>/, not directly into the inbox"
                )
            )
            continue
        for project_entry in _entries(Path(user_entry.path), scan):
            if project_entry.name.startswith("."):
                continue
            where = f"{user_entry.name}/{project_entry.name}"
            if not project_entry.is_dir(follow_symlinks=False):
                scan.rejections.append(
                    Rejection(where, "drops go into inbox/<user>/<project>/, one folder deeper than this")
                )
                continue
            for entry in _entries(Path(project_entry.path), scan):
                yield user_entry.name, project_entry.name, entry


def scan_inbox(
    inbox: Path, *, page_after: str | None = None, max_entries: int = 1000, max_folder_files: int = 500_000
) -> InboxScan:
    """List the drops under `inbox` in sorted order, one page of at most `max_entries` after `page_after`;
    a large inbox is covered over several ticks, so no tick runs into the sensor's time limit."""
    scan = InboxScan(page_after=page_after)
    # Pages are ranges of paths, a `.part` file paging as its final name; folder-by-folder order is not
    # path order ("a-b/x" < "a/x" < "a.zip-1.zip" < "a.zip.part"), so sort the whole listing by that key.
    entries = sorted(
        (
            (f"{user}/{project}/{entry.name}".removesuffix(PART_SUFFIX), user, project, entry)
            for user, project, entry in _project_entries(inbox, scan)
            if not entry.name.startswith(".")
        ),
        key=lambda item: (item[0], item[3].name),
    )
    seen = 0
    last = None
    for key, user, project, entry in entries:
        relative = f"{user}/{project}/{entry.name}"
        if page_after is not None and key <= page_after:
            continue
        if key != last:  # a drop and its `.part` are one entry: never split across two pages
            seen += 1
            if seen > max_entries:
                scan.next_page_after = last
                break
        last = key
        if entry.name.endswith(PART_SUFFIX):
            scan.part_files.add(relative[: -len(PART_SUFFIX)])
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                scan.rejections.append(
                    Rejection(relative, "symlinks are never followed; drop the file itself")
                )
                continue
            if stat.S_ISDIR(info.st_mode):
                kind: Literal["zip", "folder"] = "folder"
                name = entry.name
                size, mtime_ns, marker = _folder_signature(Path(entry.path), max_folder_files)
            elif stat.S_ISREG(info.st_mode) and entry.name.lower().endswith(".zip"):
                # stat works on a file we may not read; its run would fail and, its signature unchanged once
                # the permission is fixed, never be requested again. Opening (not reading) tells: skip it now.
                os.close(os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC))
                kind, name = "zip", entry.name[:-4]
                size, mtime_ns, marker = info.st_size, info.st_mtime_ns, False
            else:
                scan.rejections.append(
                    Rejection(relative, "only <name>.zip files and <name>/ folders are picked up")
                )
                continue
        except FileNotFoundError:
            continue  # moved away while we looked (a run picked it up, or the user took it back)
        except OverflowError as error:
            scan.rejections.append(Rejection(relative, f"folder holds {error}; zip it instead"))
            continue
        except OSError as error:
            scan.problems.append(f"{relative}: cannot read ({error.strerror or error}); skipped this tick")
            continue
        problem = next(
            (
                reason
                for value, what in ((user, "user"), (project, "project"), (name, "dataset"))
                if (reason := name_problem(value, what))
            ),
            None,
        )
        if problem:
            scan.rejections.append(Rejection(relative, problem))
            continue
        scan.drops.append(Drop(relative, user, project, name, kind, size, mtime_ns, marker))
    return scan


@dataclass(slots=True)
class InboxCursor:
    """What the sensor remembers between ticks, as JSON: signatures seen, `.part` files seen, drops requested."""

    seen: dict[str, str] = field(default_factory=dict)  # relative path -> signature at the previous tick
    parts: list[str] = field(default_factory=list)  # drops that were still `.part` at the previous tick
    requested: dict[str, str] = field(default_factory=dict)  # relative path -> signature already requested
    page_after: str | None = None  # where the next tick's scan starts (large inboxes)

    @classmethod
    def from_json(cls, text: str | None) -> InboxCursor:
        if not text:
            return cls()
        try:
            data = json.loads(text)
            cursor = cls(
                dict(data.get("seen", {})),
                list(data.get("parts", [])),
                dict(data.get("requested", {})),
                data.get("page_after"),
            )
            pairs = [*cursor.seen.items(), *cursor.requested.items()]
            if not (
                all(isinstance(path, str) and isinstance(signature, str) for path, signature in pairs)
                and all(isinstance(path, str) for path in cursor.parts)
                and isinstance(cursor.page_after, str | None)
            ):
                raise TypeError("not a cursor of this sensor")  # e.g. page_after 5 would break the scan
            return cursor
        except (ValueError, TypeError, AttributeError):
            return cls()  # an unreadable cursor only costs one extra tick of waiting

    def to_json(self) -> str:
        return json.dumps(
            {
                "seen": self.seen,
                "parts": sorted(self.parts),
                "requested": self.requested,
                "page_after": self.page_after,
            },
            sort_keys=True,
        )


@dataclass(slots=True)
class TickPlan:
    ready: list[Drop]
    waiting: list[Drop]
    cursor: InboxCursor


def plan_tick(scan: InboxScan, cursor: InboxCursor, *, max_requests: int = 20) -> TickPlan:
    """Split the scanned drops into ready (request a run now) and waiting, and compute the next cursor."""
    renamed_from_part = set(cursor.parts)
    ready: list[Drop] = []
    waiting: list[Drop] = []
    seen: dict[str, str] = {}
    requested: dict[str, str] = {}
    for drop in scan.drops:
        if cursor.requested.get(drop.relative_path) == drop.signature:
            requested[drop.relative_path] = drop.signature  # its run has not moved it out of the inbox yet
            continue
        stable = cursor.seen.get(drop.relative_path) == drop.signature
        complete = stable or drop.relative_path in renamed_from_part or drop.has_ready_marker
        if complete and len(ready) < max_requests:
            ready.append(drop)
            requested[drop.relative_path] = drop.signature
        else:
            waiting.append(drop)
            seen[drop.relative_path] = drop.signature
    # Drops on other pages keep what we knew of them until their page comes round again.
    for old, new in ((cursor.seen, seen), (cursor.requested, requested)):
        for path, signature in old.items():
            if not scan.in_page(path):
                new.setdefault(path, signature)
    parts = scan.part_files | {path for path in cursor.parts if not scan.in_page(path)}
    return TickPlan(ready, waiting, InboxCursor(seen, sorted(parts), requested, scan.next_page_after))


class InboxError(ValueError):
    """A drop that cannot be placed in the inbox; the message says what to change."""


def place_in_inbox(source: Path, inbox: Path, user: str, project: str, name: str | None = None) -> Path:
    """Copy a zip or folder into `inbox/{user}/{project}/` so the sensor never sees it half-written:
    it is copied under a `.part` name and renamed when complete. Returns the final path."""
    if source.is_symlink() or not source.exists():
        raise InboxError(f"{source}: no such file or folder (symlinks are not followed)")
    is_zip = source.is_file() and source.suffix.lower() == ".zip"
    if not (is_zip or source.is_dir()):
        raise InboxError(f"{source}: give a .zip file or a folder")
    name = name or (source.name[:-4] if is_zip else source.name)
    for value, kind in ((user, "user"), (project, "project"), (name, "dataset")):
        if problem := name_problem(value, kind):
            raise InboxError(problem)
    folder = inbox / user / project
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (f"{name}.zip" if is_zip else name)
    partial = target.with_name(target.name + PART_SUFFIX)
    if target.exists() or partial.exists():
        raise InboxError(f"{target} is already waiting in the inbox; give another --name or wait for it")
    try:
        if is_zip:
            shutil.copyfile(source, partial)
        else:
            shutil.copytree(source, partial, symlinks=True)
        os.replace(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink(missing_ok=True)
        raise
    return target
