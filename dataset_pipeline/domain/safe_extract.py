"""Unpack hostile uploads without letting them write outside their folder or exhaust the disk.

Every check runs on the zip's central directory before a byte is written, so a rejected upload leaves nothing
behind; files are written into a hidden staging folder next to the destination and moved into place with one
`os.replace`, so a reader never sees a half-extracted dataset. No Dagster here.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import lzma
import os
import re
import secrets
import shutil
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from dataset_pipeline.domain.model import DatasetError, Issue, Severity

_GIB = 1 << 30
_CHUNK = 1 << 20
#: Entries below this size are not judged by compression ratio: small text files compress absurdly well.
_RATIO_FLOOR_BYTES = 1 << 20
_NESTED_ARCHIVE_SUFFIXES = (
    ".zip",
    ".tar",
    ".gz",
    ".tgz",
    ".bz2",
    ".xz",
    ".7z",
    ".rar",
    ".tbz2",
    ".txz",
    ".zst",
)
_SUPPORTED_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
_MAX_COMPONENT_BYTES = 255
_MAX_PATH_BYTES = 4000
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_LOCAL_HEADER_SIGNATURE = b"PK\x03\x04"
_REUPLOAD_ADVICE = (
    "The whole upload was rejected; re-create the archive with a standard zip tool from a plain folder of "
    "images and labels (no links, nested archives or passwords) and upload it again."
)


@dataclass(frozen=True, slots=True)
class ExtractionLimits:
    """Caps that keep one upload from filling the disk or the inode table."""

    max_entries: int = 200_000
    max_total_bytes: int = 20 * _GIB
    max_entry_bytes: int = 2 * _GIB
    max_compression_ratio: float = 200.0


@dataclass(frozen=True, slots=True)
class ExtractionReport:
    """What ended up in the destination, plus the entries that were left out on purpose."""

    destination: Path
    files_written: int
    bytes_written: int
    junk_skipped: int  # __MACOSX/, ._* and .DS_Store entries
    issues: tuple[Issue, ...] = ()


class UnsafeArchiveError(DatasetError):
    """The upload tries something an honest dataset never needs; the whole upload is rejected."""

    def __init__(
        self, archive: Path, entry: str | None, problem: str, advice: str = _REUPLOAD_ADVICE
    ) -> None:
        self.archive = archive
        self.entry = entry
        self.problem = problem
        where = f"{archive.name}: entry {entry!r}" if entry is not None else archive.name
        super().__init__(f"{where}: {problem}. {advice}")


def sha256_file(path: Path, chunk: int = _CHUNK) -> str:
    """Hash a file in fixed-size pieces so multi-gigabyte uploads never sit in memory."""
    digest = hashlib.sha256()
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as handle:
        while read := handle.readinto(buffer):
            digest.update(view[:read])
    return digest.hexdigest()


def extract_zip(archive: Path, destination: Path, limits: ExtractionLimits) -> ExtractionReport:
    """Validate the whole central directory, then stream every entry into a staging folder and publish it."""
    _require_absent(destination)
    declared = _declared_entry_count(archive)
    if declared is not None and declared > limits.max_entries:
        raise UnsafeArchiveError(
            archive, None, f"declares {declared} entries, more than the limit of {limits.max_entries}"
        )
    try:
        with zipfile.ZipFile(archive) as zf:
            plan, junk = _plan_zip(archive, zf, limits)
            _reject_overlaps(archive, zf)
            with _Staging(destination) as staging:
                written = 0
                for info, parts in plan:
                    if _is_dir(info):
                        _make_dirs(staging, parts)
                    else:
                        written += _write_zip_entry(archive, zf, info, staging, parts)
                files = sum(1 for info, _ in plan if not _is_dir(info))
    except (zipfile.BadZipFile, EOFError, NotImplementedError, struct.error) as error:
        raise DatasetError(
            f"{archive.name}: the zip is corrupt, truncated or still being copied ({error}). "
            "Check that the upload finished, or re-create the zip, then upload it again."
        ) from error
    except UnicodeDecodeError as error:
        raise DatasetError(
            f"{archive.name}: an entry name is not valid UTF-8 although the zip says it is ({error}). "
            "Re-create the zip with a current zip tool and upload it again."
        ) from error
    return ExtractionReport(destination, files, written, junk)


def copy_folder(source: Path, destination: Path, limits: ExtractionLimits) -> ExtractionReport:
    """Copy the regular files of an uploaded folder; links and special files are recorded, never followed."""
    _require_absent(destination)
    try:
        source_stat = os.lstat(source)
    except FileNotFoundError as error:
        raise DatasetError(f"{source}: the uploaded folder does not exist; upload it again.") from error
    if not stat.S_ISDIR(source_stat.st_mode):
        raise DatasetError(f"{source}: the upload is not a plain folder (a link or a file); upload a folder.")

    files, dirs, issues, junk = _scan_folder(source, limits)
    with _Staging(destination) as staging:
        written = 0
        for parts in dirs:
            _make_dirs(staging, parts)
        for parts, size, identity in files:
            written += _copy_regular_file(source, parts, size, identity, staging)
    return ExtractionReport(destination, len(files), written, junk, tuple(issues))


# --- checks shared by zip and folder uploads -------------------------------------------------------------


def _is_junk(parts: tuple[str, ...]) -> bool:
    """Finder and resource-fork litter that macOS adds to every zip; never part of a dataset."""
    return parts[0] == "__MACOSX" or parts[-1] == ".DS_Store" or parts[-1].startswith("._")


def _has_control_character(name: str) -> bool:
    return any(ord(char) < 0x20 or ord(char) == 0x7F for char in name)


class _NameRegistry:
    """Detects names that collide on a case-insensitive or normalising filesystem (macOS, Windows)."""

    def __init__(self, container: Path) -> None:
        self._container = container
        self._files: dict[str, str] = {}
        self._dirs: dict[str, str] = {}

    @staticmethod
    def _key(path: str) -> str:
        return unicodedata.normalize("NFC", path).casefold()

    def add_file(self, parts: tuple[str, ...]) -> None:
        for depth in range(1, len(parts)):
            self.add_dir(parts[:depth])
        path = "/".join(parts)
        key = self._key(path)
        if key in self._files:
            self._reject(path, f"has the same name as {self._files[key]!r} once case and accents are ignored")
        if key in self._dirs:
            self._reject(path, f"is a file with the same name as the folder {self._dirs[key] + '/'!r}")
        self._files[key] = path

    def add_dir(self, parts: tuple[str, ...]) -> None:
        path = "/".join(parts)
        key = self._key(path)
        if key in self._files:
            self._reject(path + "/", f"is a folder with the same name as the file {self._files[key]!r}")
        known = self._dirs.setdefault(key, path)
        if known != path:
            self._reject(
                path + "/", f"has the same name as {known + '/'!r} when case and accents are ignored"
            )

    def _reject(self, path: str, problem: str) -> None:
        raise UnsafeArchiveError(
            self._container,
            path,
            problem,
            "Give every file and folder a distinct name (not just by case or accents), then upload again.",
        )


def _require_absent(destination: Path) -> None:
    if os.path.lexists(destination):
        raise FileExistsError(f"{destination} already exists; extraction never writes into existing folders")


class _Staging:
    """A hidden sibling folder that becomes `destination` only when everything in it is complete."""

    def __init__(self, destination: Path) -> None:
        self.destination = destination
        destination.parent.mkdir(parents=True, exist_ok=True)
        self.path = destination.parent / f".staging-{destination.name}-{secrets.token_hex(8)}"

    def __enter__(self) -> Path:
        self.path.mkdir(mode=0o700)
        return self.path

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        if exc_type is None:
            try:
                os.chmod(self.path, 0o755)
                os.replace(self.path, self.destination)
                return
            except BaseException:
                shutil.rmtree(self.path, ignore_errors=True)
                raise
        shutil.rmtree(self.path, ignore_errors=True)


def _make_dirs(root: Path, parts: tuple[str, ...]) -> Path:
    """Create each missing level with mode 0o755 regardless of the umask or the archive's wishes."""
    current = root
    for part in parts:
        current = current / part
        try:
            os.mkdir(current, 0o755)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                raise
            continue
        os.chmod(current, 0o755)
    return current


def _open_new_file(staging: Path, parts: tuple[str, ...]) -> int:
    parent = _make_dirs(staging, parts[:-1])
    fd = os.open(parent / parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    os.fchmod(fd, 0o644)
    return fd


# --- zip ------------------------------------------------------------------------------------------------


def _declared_entry_count(archive: Path) -> int | None:
    """Read the entry count from the end record so a million-entry zip is refused before it is parsed."""
    end_record = struct.Struct("<4s4H2LH")
    zip64_locator = struct.Struct("<4sLQL")
    zip64_record = struct.Struct("<4sQ2H2L4Q")
    try:
        with archive.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            tail_start = max(0, size - (end_record.size + 0xFFFF))
            handle.seek(tail_start)
            tail = handle.read()
            at = tail.rfind(b"PK\x05\x06")
            if at < 0 or at + end_record.size > len(tail):
                return None
            count = end_record.unpack_from(tail, at)[4]
            if count != 0xFFFF or at < zip64_locator.size:
                return count
            signature, _, record_offset, _ = zip64_locator.unpack_from(tail, at - zip64_locator.size)
            if signature != b"PK\x06\x07":
                return count
            handle.seek(record_offset)
            record = handle.read(zip64_record.size)
            if len(record) != zip64_record.size or not record.startswith(b"PK\x06\x06"):
                return None
            return int(zip64_record.unpack(record)[7])
    except (OSError, struct.error):
        return None


def _safe_parts(archive: Path, raw_name: str) -> tuple[str, ...]:
    """Turn an entry name into path components, rejecting anything that could land outside the folder."""
    if "\x00" in raw_name or _has_control_character(raw_name):
        raise UnsafeArchiveError(archive, raw_name, "has a NUL or control character in its name")
    if raw_name.startswith(("/", "\\")):
        raise UnsafeArchiveError(archive, raw_name, "is an absolute path")
    if _DRIVE_LETTER.match(raw_name):
        raise UnsafeArchiveError(archive, raw_name, "starts with a Windows drive letter")
    # Old Windows zippers write backslashes as separators; honour them, so they cannot smuggle in `..`.
    parts = tuple(part for part in re.split(r"[\\/]", raw_name) if part not in ("", "."))
    if ".." in parts:
        raise UnsafeArchiveError(archive, raw_name, "climbs out of the dataset folder with '..'")
    if not parts:
        raise UnsafeArchiveError(archive, raw_name, "has an empty name")
    if any(len(part.encode("utf-8", "surrogatepass")) > _MAX_COMPONENT_BYTES for part in parts):
        raise UnsafeArchiveError(archive, raw_name, f"has a name part over {_MAX_COMPONENT_BYTES} bytes")
    if len(raw_name.encode("utf-8", "surrogatepass")) > _MAX_PATH_BYTES:
        raise UnsafeArchiveError(archive, raw_name, f"has a path longer than {_MAX_PATH_BYTES} bytes")
    return parts


def _is_dir(info: zipfile.ZipInfo) -> bool:
    """A folder entry; zipfile only knows the trailing `/`, old Windows zippers end folders with `\\`."""
    return info.is_dir() or info.orig_filename.endswith("\\")


def _check_entry_type(archive: Path, info: zipfile.ZipInfo) -> None:
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise UnsafeArchiveError(archive, info.orig_filename, "is a symbolic link")
    file_type = stat.S_IFMT(mode)
    if file_type == 0:  # DOS/Windows zips carry no Unix type; the trailing slash decides
        return
    if _is_dir(info) and stat.S_ISDIR(mode):
        return
    if not _is_dir(info) and stat.S_ISREG(mode):
        return
    raise UnsafeArchiveError(
        archive, info.orig_filename, f"is not a regular file or folder (Unix type {oct(file_type)})"
    )


def _check_ratio(archive: Path, entry: str | None, size: int, compressed: int, limit: float) -> None:
    if size < _RATIO_FLOOR_BYTES:
        return
    ratio = size / max(compressed, 1)
    if ratio > limit:
        raise UnsafeArchiveError(
            archive,
            entry,
            f"expands {ratio:.0f}-fold ({size} bytes from {compressed}), more than the limit of {limit:.0f}; "
            "this is how zip bombs work",
        )


def _plan_zip(
    archive: Path, zf: zipfile.ZipFile, limits: ExtractionLimits
) -> tuple[list[tuple[zipfile.ZipInfo, tuple[str, ...]]], int]:
    """Check every central-directory entry; return what to write and how many junk entries were skipped."""
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise UnsafeArchiveError(
            archive, None, f"holds {len(infos)} entries, more than the limit of {limits.max_entries}"
        )
    registry = _NameRegistry(archive)
    plan: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
    junk = 0
    total = 0
    total_compressed = 0
    for info in infos:
        name = info.orig_filename
        parts = _safe_parts(archive, name)
        _check_entry_type(archive, info)
        if info.flag_bits & 0x1:
            raise UnsafeArchiveError(
                archive,
                name,
                "is encrypted",
                "Upload the archive without a password; encryption is not supported.",
            )
        if info.compress_type not in _SUPPORTED_COMPRESSION:
            raise UnsafeArchiveError(
                archive,
                name,
                f"uses zip compression method {info.compress_type}, which is not supported",
                "Re-create the zip with ordinary (deflate) compression and upload it again.",
            )
        if info.file_size > limits.max_entry_bytes:
            raise UnsafeArchiveError(
                archive, name, f"declares {info.file_size} bytes, over the limit of {limits.max_entry_bytes}"
            )
        total += info.file_size
        total_compressed += info.compress_size
        if total > limits.max_total_bytes:
            raise UnsafeArchiveError(
                archive, name, f"takes the upload past the limit of {limits.max_total_bytes} bytes unpacked"
            )
        _check_ratio(archive, name, info.file_size, info.compress_size, limits.max_compression_ratio)
        if _is_junk(parts):
            junk += 1
            continue
        if not _is_dir(info) and parts[-1].lower().endswith(_NESTED_ARCHIVE_SUFFIXES):
            raise UnsafeArchiveError(
                archive,
                name,
                "is an archive inside the archive; nested archives are not unpacked",
                "Unpack it and put its files in the upload itself, then upload again.",
            )
        if _is_dir(info):
            registry.add_dir(parts)
        else:
            registry.add_file(parts)
        plan.append((info, parts))
    _check_ratio(archive, None, total, total_compressed, limits.max_compression_ratio)
    return plan, junk


def _reject_overlaps(archive: Path, zf: zipfile.ZipFile) -> None:
    """Refuse entries whose local header + data ranges overlap: the trick behind non-recursive zip bombs.

    The first pass needs only the central directory (a header is at least 30 bytes), so an entry pointing
    into another's data is named as an overlap, not as corruption; the second pass uses real header sizes.
    Junk entries are checked too: they share the same bytes even if they are never written.
    """
    infos = zf.infolist()
    _raise_on_overlap(
        archive, [(i.header_offset, i.header_offset + _LOCAL_HEADER.size + i.compress_size, i) for i in infos]
    )
    assert zf.fp is not None
    spans: list[tuple[int, int, zipfile.ZipInfo]] = []
    for info in infos:
        zf.fp.seek(info.header_offset)
        header = zf.fp.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or not header.startswith(_LOCAL_HEADER_SIGNATURE):
            raise zipfile.BadZipFile(f"{info.orig_filename!r} has no local header at {info.header_offset}")
        fields = _LOCAL_HEADER.unpack(header)
        name_length, extra_length = fields[9], fields[10]
        end = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length + info.compress_size
        spans.append((info.header_offset, end, info))
    _raise_on_overlap(archive, spans)


def _raise_on_overlap(archive: Path, spans: list[tuple[int, int, zipfile.ZipInfo]]) -> None:
    ordered = sorted(spans, key=lambda span: (span[0], span[1]))
    for (_, previous_end, previous), (start, _, info) in itertools.pairwise(ordered):
        if start < previous_end:
            raise UnsafeArchiveError(
                archive,
                info.orig_filename,
                f"overlaps the data of {previous.orig_filename!r}; overlapping entries are a zip bomb trick",
            )


def _write_zip_entry(
    archive: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, staging: Path, parts: tuple[str, ...]
) -> int:
    """Stream one entry to disk, counting bytes because the sizes in the directory can lie."""
    # zipfile silently cuts output at the declared size; asking for more lets the counter see a lie.
    probe = copy.copy(info)
    probe.file_size = info.file_size + _CHUNK
    written = 0
    fd = _open_new_file(staging, parts)
    try:
        with zf.open(probe) as source:
            while chunk := _read_entry(source, info):
                written += len(chunk)
                if written > info.file_size:
                    raise UnsafeArchiveError(
                        archive, info.orig_filename, f"produces more than its declared {info.file_size} bytes"
                    )
                _write_all(fd, chunk)
    finally:
        os.close(fd)
    if written != info.file_size:
        raise UnsafeArchiveError(
            archive, info.orig_filename, f"produces {written} bytes but declares {info.file_size}"
        )
    return written


def _read_entry(source: IO[bytes], info: zipfile.ZipInfo) -> bytes:
    """Read the next chunk, reporting a broken compressed stream as a corrupt zip rather than a crash."""
    try:
        return source.read(_CHUNK)
    except (zlib.error, lzma.LZMAError) as error:
        raise zipfile.BadZipFile(f"{info.orig_filename!r}: {error}") from error
    except OSError as error:
        if error.errno is not None:  # a real I/O error on our side: let it be retried
            raise
        raise zipfile.BadZipFile(f"{info.orig_filename!r}: {error}") from error  # bz2's "Invalid data stream"


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# --- folder ---------------------------------------------------------------------------------------------


def _scan_folder(
    source: Path, limits: ExtractionLimits
) -> tuple[list[tuple[tuple[str, ...], int, tuple[int, int]]], list[tuple[str, ...]], list[Issue], int]:
    """Walk without following links; return regular files (with size and inode), folders, issues, junk."""
    registry = _NameRegistry(source)
    files: list[tuple[tuple[str, ...], int, tuple[int, int]]] = []
    dirs: list[tuple[str, ...]] = []
    issues: list[Issue] = []
    junk = 0
    total = 0
    for parts, entry_stat in _walk(source):
        relative = "/".join(parts)
        if _has_control_character(relative):
            raise UnsafeArchiveError(source, relative, "has a control character in its name")
        if _is_junk(parts):
            junk += 1
            continue
        mode = entry_stat.st_mode
        if stat.S_ISLNK(mode):
            issues.append(
                Issue(
                    Severity.ERROR,
                    "upload.symlink",
                    relative,
                    "a symbolic link; links are never followed or copied",
                )
            )
        elif stat.S_ISDIR(mode):
            registry.add_dir(parts)
            dirs.append(parts)
        elif stat.S_ISREG(mode):
            registry.add_file(parts)
            if len(files) >= limits.max_entries:
                raise UnsafeArchiveError(source, relative, f"is past the limit of {limits.max_entries} files")
            size = entry_stat.st_size
            if size > limits.max_entry_bytes:
                raise UnsafeArchiveError(
                    source, relative, f"has {size} bytes, more than the limit of {limits.max_entry_bytes}"
                )
            total += size
            if total > limits.max_total_bytes:
                raise UnsafeArchiveError(
                    source, relative, f"takes the upload past the limit of {limits.max_total_bytes} bytes"
                )
            files.append((parts, size, (entry_stat.st_dev, entry_stat.st_ino)))
        else:
            issues.append(
                Issue(
                    Severity.ERROR,
                    "upload.special_file",
                    relative,
                    f"not a regular file (type {oct(stat.S_IFMT(mode))}); it was not copied",
                )
            )
    return files, dirs, issues, junk


def _walk(root: Path) -> Iterator[tuple[tuple[str, ...], os.stat_result]]:
    """Yield every entry below `root` with its lstat, in a stable order; descend into real folders only."""
    pending: list[tuple[str, ...]] = [()]
    while pending:
        prefix = pending.pop()
        with os.scandir(root.joinpath(*prefix)) as scan:
            entries = sorted(scan, key=lambda item: item.name)
        for entry in entries:
            parts = (*prefix, entry.name)
            entry_stat = entry.stat(follow_symlinks=False)
            yield parts, entry_stat
            if stat.S_ISDIR(entry_stat.st_mode) and not _is_junk(parts):
                pending.append(parts)


def _copy_regular_file(
    source: Path, parts: tuple[str, ...], size: int, identity: tuple[int, int], staging: Path
) -> int:
    """Copy one file, refusing it if it was swapped for a link, a pipe or another file since the scan."""
    relative = "/".join(parts)
    changed = DatasetError(
        f"{source.name}: {relative!r} changed while the upload was being copied; wait until the upload is "
        "complete and submit it again."
    )
    try:
        in_fd = os.open(source.joinpath(*parts), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        raise changed from error
    try:
        opened = os.fstat(in_fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != identity:
            raise changed
        out_fd = _open_new_file(staging, parts)
        written = 0
        try:
            while chunk := os.read(in_fd, _CHUNK):
                written += len(chunk)
                if written > size:
                    raise changed
                _write_all(out_fd, chunk)
        finally:
            os.close(out_fd)
    finally:
        os.close(in_fd)
    if written != size:
        raise changed
    return written
