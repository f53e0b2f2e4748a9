"""Helpers every format parser needs, so YOLO, COCO and VOC agree on what an image, a split and junk are."""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path

from dataset_pipeline.domain.model import SPLITS, CanonicalDataset, Issue, LabelParseError, Severity

#: Suffixes (lower case) of the files the pipeline treats as images.
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

_SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}

#: Files archivers and macOS leave behind; they are never part of a dataset.
_JUNK_DIRS: frozenset[str] = frozenset({"__MACOSX"})
_JUNK_FILES: frozenset[str] = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
_UTF8_BOM = b"\xef\xbb\xbf"


class CodedParseError(LabelParseError):
    """A `LabelParseError` that also carries the stable issue code the caller should record."""

    def __init__(self, code: str, file: str, message: str, line: int | None = None) -> None:
        self.code = code
        self.detail = message
        super().__init__(file, message, line)

    def to_issue(self, image: str | None = None) -> Issue:
        return Issue(Severity.ERROR, self.code, self.file, self.detail, line=self.line, image=image)


def is_image_path(path: str) -> bool:
    return posixpath.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def normalize_split(name: str) -> str | None:
    """Map the split names sources use (`valid`, `Training`, ...) onto `SPLITS`; None when not a split."""
    return _SPLIT_ALIASES.get(name.strip().lower())


_SPLIT_TOKEN = re.compile(r"^(?:[a-z]+_)?([a-z]+?)[-_]?\d*(?:_data)?$")


def guess_split(token: str) -> str | None:
    """Read a split from a folder or file name that decorates it: `train2017`, `obj_train_data`, `val_2`."""
    exact = normalize_split(token)
    if exact is not None:
        return exact
    match = _SPLIT_TOKEN.match(token.strip().lower())
    return normalize_split(match.group(1)) if match else None


def split_from_path(path: str) -> str | None:
    """The split named by the innermost folder of `path` that names one (`images/train/a.jpg` -> train)."""
    for part in reversed(posixpath.dirname(path).split("/")):
        split = guess_split(part) if part else None
        if split is not None:
            return split
    return None


def is_junk(path: str) -> bool:
    """True for macOS/Windows leftovers (`__MACOSX/`, `._*`, `.DS_Store`) that must not be read as data."""
    parts = path.split("/")
    if any(part in _JUNK_DIRS for part in parts):
        return True
    name = parts[-1]
    return name in _JUNK_FILES or name.startswith("._")


def list_files(root: Path) -> list[str]:
    """Every regular file under `root` as a sorted posix path relative to it, junk and symlinks left out.

    Symlinks are skipped so a parser can never be led outside the extracted upload.
    """
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [
            d for d in dirnames if d not in _JUNK_DIRS and not os.path.islink(os.path.join(dirpath, d))
        ]
        for name in filenames:
            rel = prefix + name
            if not is_junk(rel) and not os.path.islink(os.path.join(dirpath, name)):
                found.append(rel)
    found.sort()
    return found


def decode_text(data: bytes, file: str) -> str:
    """Decode strict UTF-8 (a leading BOM dropped); anything else is a `LabelParseError` naming the byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        # utf-8-sig counts positions after the BOM it dropped; count from the start of the file.
        start = error.start + (len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0)
        line = data.count(b"\n", 0, start) + 1
        raise CodedParseError(
            "text.not_utf8",
            file,
            f"is not UTF-8 text (byte 0x{data[start]:02x} at offset {start}); save the file as UTF-8",
            line,
        ) from None


def text_lines(text: str) -> list[str]:
    """Split on LF only and drop a trailing CR, so CRLF files read like LF ones and no other control character
    (form feed, U+2028, ...) silently starts a new line."""
    lines = text.split("\n")
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_file(root: Path, rel: str) -> bytes:
    """The bytes of `root/rel`; a file the OS will not give raises `LabelParseError` like bad content does, so
    callers handle one exception."""
    try:
        return (root / rel).read_bytes()
    except OSError as error:
        raise CodedParseError("file.unreadable", rel, f"cannot be read ({error.strerror})") from None


def read_text(root: Path, rel: str) -> str:
    """Read `root/rel` as strict UTF-8; unreadable files raise `LabelParseError` naming `rel`."""
    return decode_text(read_file(root, rel), rel)


def join_within(base: str, ref: str) -> str | None:
    """`base/ref` normalised as a root-relative posix path, or None when it would leave the dataset root."""
    ref = ref.replace("\\", "/")
    if ref.startswith("/") or re.match(r"^[A-Za-z]:/", ref):
        return None
    joined = posixpath.normpath(posixpath.join(base, ref)) if base else posixpath.normpath(ref)
    if joined == "." or joined == ".." or joined.startswith("../"):
        return None
    return joined


def path_suffixes(ref: str) -> list[str]:
    """`a/b/c.jpg` -> [`a/b/c.jpg`, `b/c.jpg`, `c.jpg`]: tails to match a path written on another machine."""
    parts = [p for p in ref.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    if parts and re.match(r"^[A-Za-z]:$", parts[0]):
        parts = parts[1:]
    return ["/".join(parts[i:]) for i in range(len(parts))]


def with_image(issues: list[Issue], image: str | None) -> list[Issue]:
    """Charge issues a per-file parser produced to the image they concern."""
    if image is None:
        return issues
    return [
        Issue(
            i.severity,
            i.code,
            i.file,
            i.message,
            i.line,
            i.annotation_id,
            image if i.image is None else i.image,
        )
        for i in issues
    ]


def check_export_names(dataset: CanonicalDataset, what: str, *, unique_stems_per_split: bool | None) -> None:
    """Refuse input a writer cannot place: folders or duplicates in file names, splits that are not folder
    names, and (where label files are named by image stem) `a.jpg` beside `a.png`. `unique_stems_per_split`
    None skips the stem check, True checks within each split, False across the whole dataset."""
    names: set[str] = set()
    stems: dict[tuple[str, str], str] = {}
    for image in dataset.images:
        name = image.file_name
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise ValueError(f"{what}: image file name {name!r} must be a plain file name without folders")
        if name in names:
            raise ValueError(f"{what}: image file name {name!r} appears twice; file names must be unique")
        names.add(name)
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", image.split) or image.split in (".", ".."):
            raise ValueError(f"{what}: split {image.split!r} of {name} is not a usable folder name")
        if unique_stems_per_split is not None:
            key = (image.split if unique_stems_per_split else "", posixpath.splitext(name)[0])
            if key in stems:
                raise ValueError(
                    f"{what}: {stems[key]} and {name} share the stem {key[1]!r}, so their label files would "
                    "collide; rename one"
                )
            stems[key] = name


def split_order(split: str) -> tuple[int, str]:
    """Sort key putting train, val, test first and any other split after them by name."""
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), split)


_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_MAX_NUMBER_CHARS = 64


def parse_decimal(token: str) -> float | None:
    """A strictly ASCII decimal number, else None: `float()` alone would also take `nan`, `inf`, `1_0` and
    Arabic-Indic digits, none of which a label file should hold. May return ±inf for huge exponents."""
    token = token.strip()
    if len(token) > _MAX_NUMBER_CHARS or not _DECIMAL.fullmatch(token):
        return None
    return float(token)


def error_issue(error: LabelParseError, default_code: str, image: str | None = None) -> Issue:
    """The issue recording a file a per-file parser refused, with the parser's own code when it gave one."""
    if isinstance(error, CodedParseError):
        return error.to_issue(image)
    return Issue(Severity.ERROR, default_code, error.file, str(error), error.line, image=image)
