"""Per-round copies of the generated upload: the same pictures under new bytes, and a re-upload with 1% changed.

Image checks are cached by content for the whole database and blobs are shared by the whole storage root, so
a second round on the same bytes would measure the cache, not a first validation. Every round therefore gets
its own copy of the upload in which each JPEG carries a comment segment naming the round: the pixels, sizes
and labels are those of the generated dataset, the sha256 of every file is new.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

#: Quality the changed images are re-encoded at; the generator writes 85, so the bytes differ everywhere.
CHANGED_JPEG_QUALITY = 80
#: Side of the square in the top-left corner whose colours a changed image has inverted.
CHANGED_PIXELS_SIDE = 8
_JPEG_SUFFIXES = (".jpg", ".jpeg")
_SOI = b"\xff\xd8"
_APP0 = b"\xff\xe0"
_COM = b"\xff\xfe"


@dataclass(frozen=True)
class Upload:
    """One rewritten archive and what differs in it from the generated one."""

    archive: Path
    changed: tuple[str, ...]  # entries whose pixels were changed and re-encoded
    changed_bytes_before: int  # their size in the generated upload (with the round's comment)
    changed_bytes_after: int  # their size now


def image_entries(archive: Path) -> list[str]:
    """The JPEG entries of an archive, in archive order."""
    with zipfile.ZipFile(archive) as bundle:
        return [name for name in bundle.namelist() if name.lower().endswith(_JPEG_SUFFIXES)]


def images_to_change(archive: Path, share: float) -> tuple[str, ...]:
    """`share` of the images (at least one), spread evenly over the archive so every split gets some."""
    names = image_entries(archive)
    if not names:
        raise ValueError(f"{archive} holds no JPEG images to change")
    count = min(len(names), max(1, round(len(names) * share)))
    return tuple(names[index * len(names) // count] for index in range(count))


def with_comment(jpeg: bytes, text: bytes) -> bytes:
    """The same JPEG with a COM segment after SOI (and after JFIF's APP0, which must come first)."""
    if not jpeg.startswith(_SOI):
        raise ValueError("not a JPEG: it does not start with the SOI marker")
    if len(text) > 65_533:
        raise ValueError("a JPEG comment segment holds at most 65,533 bytes")
    at = len(_SOI)
    if jpeg[at : at + 2] == _APP0:
        at += 2 + int.from_bytes(jpeg[at + 2 : at + 4], "big")
    return jpeg[:at] + _COM + (len(text) + 2).to_bytes(2, "big") + text + jpeg[at:]


def changed_image(jpeg: bytes) -> bytes:
    """A few pixels inverted and the whole picture re-encoded: new bytes of the same size, still decodable."""
    with Image.open(io.BytesIO(jpeg)) as image:
        picture = image.convert("RGB")
    box = (0, 0, min(CHANGED_PIXELS_SIDE, picture.width), min(CHANGED_PIXELS_SIDE, picture.height))
    picture.paste(ImageOps.invert(picture.crop(box)), box[:2])
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=CHANGED_JPEG_QUALITY)
    return out.getvalue()


def rewrite_upload(source: Path, target: Path, *, salt: str, change: Collection[str] = ()) -> Upload:
    """Copy the zip `source` to `target` entry by entry, every JPEG commented with `salt`, those in `change`
    re-encoded first; other entries, names, order, timestamps and compression stay as they were."""
    wanted = set(change)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part")
    comment = salt.encode()
    changed: list[str] = []
    before = after = 0
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(partial, "w") as copy:
        for info in original.infolist():
            data = original.read(info)
            if info.filename.lower().endswith(_JPEG_SUFFIXES):
                if info.filename in wanted:
                    before += len(with_comment(data, comment))
                    data = changed_image(data)
                    changed.append(info.filename)
                data = with_comment(data, comment)
                after += len(data) if info.filename in wanted else 0
            entry = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            entry.external_attr = info.external_attr
            entry.compress_type = info.compress_type
            copy.writestr(entry, data)
    missing = sorted(wanted - set(changed))
    if missing:
        partial.unlink()
        raise ValueError(f"{source} has no JPEG entries named {missing[:5]}")
    os.replace(partial, target)
    return Upload(target, tuple(changed), before, after)
