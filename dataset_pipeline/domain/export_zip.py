"""Deterministic export zips that are never seen half-written.

The same dataset exported twice gives the same bytes (sorted entries, fixed timestamps and attributes), so a
sha256 identifies an export and an unchanged re-run is visibly unchanged. The zip is written to a temporary
name beside the target and moved into place only when complete. No Dagster.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dataset_pipeline.domain.model import RenderedDataset
from dataset_pipeline.domain.safe_extract import sha256_file

MANIFEST_NAME = "manifest.json"
#: 2: `classes` became a table (name, YOLO index, COCO id), `images` and `voc_pixel_origin` were added.
MANIFEST_VERSION = 2
#: The earliest time a zip can hold; any fixed value works, this one says "not a real time".
FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)
DEFLATE_LEVEL = 6
_FILE_ATTRIBUTES = (stat.S_IFREG | 0o644) << 16
_UNIX = 3  # ZipInfo.create_system; the default depends on the platform the zip is written on
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ZipEntry:
    """One file of the archive. Images are stored (JPEGs do not shrink), label files deflated."""

    archive_path: str
    source: Path | bytes
    compress: bool


@dataclass(frozen=True, slots=True)
class ZipWriteReport:
    path: Path
    count: int  # entries written, the manifest included
    size_bytes: int
    sha256: str  # of the whole zip
    entry_sha256: Mapping[str, str] = field(default_factory=dict)  # archive path -> sha256 of its content


def sha256_of(source: Path | bytes) -> str:
    """Hex sha256 of bytes, or of a file read in chunks."""
    if isinstance(source, bytes | bytearray | memoryview):
        return hashlib.sha256(source).hexdigest()
    return sha256_file(Path(source))


def _by_path(entry: ZipEntry) -> str:
    return entry.archive_path


def _check_archive_paths(entries: Sequence[ZipEntry], seen: set[str]) -> None:
    """Refuse names an unzip would place outside its folder, directory entries and duplicates."""
    for entry in entries:
        path = entry.archive_path
        parts = path.split("/")
        if not path or path.startswith("/") or "\\" in path or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"archive path {path!r} must be a relative posix file path without '.' or '..'")
        if path in seen:
            raise ValueError(f"archive path {path!r} is given twice")
        seen.add(path)


def _set_compress_level(info: zipfile.ZipInfo, level: int) -> None:
    # ZipFile.open(info, "w") takes the level from the ZipInfo only; the attribute became public in 3.13.
    if hasattr(info, "compress_level"):
        info.compress_level = level
    else:
        info._compresslevel = level  # type: ignore[attr-defined]


def _write_entry(archive: zipfile.ZipFile, entry: ZipEntry) -> str:
    """Stream one entry into the archive and return the sha256 of its content."""
    info = zipfile.ZipInfo(entry.archive_path, date_time=FIXED_DATE_TIME)
    info.create_system = _UNIX
    info.external_attr = _FILE_ATTRIBUTES
    info.compress_type = zipfile.ZIP_DEFLATED if entry.compress else zipfile.ZIP_STORED
    if entry.compress:
        _set_compress_level(info, DEFLATE_LEVEL)
    digest = hashlib.sha256()
    try:
        if isinstance(entry.source, bytes | bytearray | memoryview):
            info.file_size = len(entry.source)  # lets zipfile decide on ZIP64 up front
            with archive.open(info, "w") as out:
                out.write(entry.source)
            digest.update(entry.source)
        else:
            with open(entry.source, "rb") as source:
                info.file_size = os.fstat(source.fileno()).st_size
                with archive.open(info, "w") as out:
                    while chunk := source.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
    except Exception as exc:
        exc.add_note(f"while writing {entry.archive_path!r} into the zip")
        raise
    return digest.hexdigest()


def fsync_directory(folder: Path) -> None:
    """Make the rename itself durable; not every platform can open a directory."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def write_deterministic_zip(
    target: Path,
    entries: Iterable[ZipEntry],
    *,
    trailer: Callable[[Mapping[str, str]], Iterable[ZipEntry]] | None = None,
) -> ZipWriteReport:
    """Write `entries` sorted by archive path into `target`, atomically; equal inputs give equal bytes.

    `trailer`, if given, is called with {archive path: sha256} of everything written and returns entries to
    append last (a manifest): the hashes are computed while streaming, so no file is read twice.
    """
    target = Path(target)
    ordered = sorted(entries, key=_by_path)
    seen: set[str] = set()
    _check_archive_paths(ordered, seen)

    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "w+b") as raw:
            hashes: dict[str, str] = {}
            with zipfile.ZipFile(raw, "w", allowZip64=True) as archive:
                for entry in ordered:
                    hashes[entry.archive_path] = _write_entry(archive, entry)
                if trailer is not None:
                    extra = sorted(
                        trailer(MappingProxyType(dict(hashes))), key=lambda entry: entry.archive_path
                    )
                    _check_archive_paths(extra, seen)
                    for entry in extra:
                        hashes[entry.archive_path] = _write_entry(archive, entry)
            raw.flush()
            os.fsync(raw.fileno())
            size = os.fstat(raw.fileno()).st_size
            raw.seek(0)
            zip_sha256 = hashlib.file_digest(raw, "sha256").hexdigest()
        os.chmod(temp, 0o644)  # mkstemp creates 0600; an export is meant to be read by others
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)
    return ZipWriteReport(
        path=target, count=len(hashes), size_bytes=size, sha256=zip_sha256, entry_sha256=hashes
    )


def build_manifest(
    *,
    dataset: str,
    version: int,
    owner: str,
    project: str,
    dataset_format: str,
    class_table: Sequence[Mapping[str, Any]],
    voc_pixel_origin: int,
    split_counts: Mapping[str, Any],
    split_metrics: Mapping[str, Any],
    validation_summary: Mapping[str, Any],
    files: Mapping[str, str],
    run_id: str,
    pipeline_version: str,
    images: Mapping[str, Mapping[str, Any]] = MappingProxyType({}),
) -> bytes:
    """`manifest.json`: what the zip holds, where it came from, and a sha256 per file to verify it by.

    `classes` says how every export's ids map (name, YOLO index, COCO category id); `images` maps each
    exported image to the upload's path it came from; `voc_pixel_origin` is how VOC coordinates are written.

    Sorted keys and fixed indentation keep it byte-stable; NaN is refused because it is not JSON.
    """
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "dataset": dataset,
        "version": version,
        "owner": owner,
        "project": project,
        "format": str(dataset_format),
        "classes": [dict(entry) for entry in class_table],
        "voc_pixel_origin": voc_pixel_origin,
        "images": {path: dict(origin) for path, origin in sorted(images.items())},
        "splits": split_counts,
        "split_metrics": split_metrics,
        "validation": validation_summary,
        "files": dict(files),
        "run_id": run_id,
        "pipeline_version": pipeline_version,
    }
    text = json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def export_dataset_zip(
    target: Path,
    rendered: RenderedDataset,
    images: Mapping[str, Path | bytes],
    manifest_fields: Mapping[str, Any],
    origins: Mapping[str, Mapping[str, Any]] | None = None,
) -> ZipWriteReport:
    """Zip a rendered dataset: its label files, its images and a `manifest.json` written last.

    `images` maps `CanonicalImage.file_name` to the file to copy or to pre-encoded bytes (e.g. an image
    re-encoded upright); `origins` maps it to where it came from (`{"original": path}`), which the manifest
    gives under the image's path in this zip; `manifest_fields` are the other `build_manifest` arguments.
    """
    if {"files", "images"} & set(manifest_fields):
        raise ValueError("manifest_fields must not contain 'files' or 'images'; the export computes them")
    missing = sorted(set(rendered.image_paths) - set(images))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"no image bytes or path given for {len(missing)} rendered image(s): {shown}")
    entries = [ZipEntry(path, content, compress=True) for path, content in rendered.label_files.items()]
    entries += [
        ZipEntry(archive_path, images[file_name], compress=False)
        for file_name, archive_path in rendered.image_paths.items()
    ]
    if any(entry.archive_path == MANIFEST_NAME for entry in entries):
        raise ValueError(f"the rendered dataset already has a {MANIFEST_NAME}; it is reserved for the export")

    def manifest(files: Mapping[str, str]) -> list[ZipEntry]:
        placed = {
            rendered.image_paths[name]: origin
            for name, origin in (origins or {}).items()
            if name in rendered.image_paths
        }
        document = build_manifest(**manifest_fields, files=files, images=placed)
        return [ZipEntry(MANIFEST_NAME, document, compress=True)]

    return write_deterministic_zip(target, entries, trailer=manifest)
