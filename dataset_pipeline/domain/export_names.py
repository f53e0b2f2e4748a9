"""The file name each image gets in an export: its own, unless another image of the export already has it.

Anything that joins by file name (prediction files, a team's metadata, a re-import into the annotation tool,
Datumaro's item ids) keeps working only if the name survives, so folders are not folded into it; the split
folder of the export carries the split. Label files are named by stem (`labels/<split>/<stem>.txt`,
`Annotations/<stem>.xml` across every split), and `A.jpg` and `a.png` would land on one file on macOS and
Windows, so two names collide when their stems are equal ignoring case. The image whose original path sorts
first keeps its name; each other one gets `<stem>-<8 hex digits of the sha256 of its original path><suffix>`,
which does not change when the picture is edited. No Dagster.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: Hex digits of the path hash in a renamed file; more are taken in the unlikely case those collide too.
RENAME_DIGITS = 8


@dataclass(frozen=True, slots=True)
class AugmentedCopy:
    """An augmented image, named after the image it was made from: `<source stem>_aug<k>.jpg`."""

    key: str  # its stored relative path, unique among the export's images
    source_key: str  # the stored relative path of the original it was made from
    copy_index: int
    suffix: str = ".jpg"


def _path_digest(path: str) -> str:
    return hashlib.sha256(path.encode("utf-8")).hexdigest()


class _Names:
    """Names handed out so far, by case-folded stem."""

    def __init__(self) -> None:
        self._stems: set[str] = set()

    def claim(self, key: str, wanted: str) -> str:
        stem, suffix = posixpath.splitext(wanted)
        digest = _path_digest(key)
        name, attempt = wanted, 0
        while posixpath.splitext(name)[0].casefold() in self._stems:
            digits = RENAME_DIGITS + 2 * attempt
            tag = digest[:digits] if digits <= len(digest) else f"{digest}-{attempt}"
            name, attempt = f"{stem}-{tag}{suffix}", attempt + 1
        self._stems.add(posixpath.splitext(name)[0].casefold())
        return name


def export_names(originals: Mapping[str, str], augmented: Iterable[AugmentedCopy] = ()) -> dict[str, str]:
    """Stored relative path -> file name in the export, for every original and augmented copy.

    `originals` maps each original's stored relative path to the suffix its exported bytes have (its own, or
    `.jpg` when it had to be re-encoded upright). Originals are named first, so an augmented copy never takes
    an original's name; a copy is named after its source's exported stem.
    """
    names = _Names()
    chosen: dict[str, str] = {}
    for key in sorted(originals):
        stem = posixpath.splitext(posixpath.basename(key))[0]
        chosen[key] = names.claim(key, stem + originals[key])
    copies = sorted(augmented, key=lambda copy: (copy.source_key, copy.copy_index, copy.key))
    for copy in copies:
        source = chosen.get(copy.source_key, posixpath.basename(copy.source_key))
        stem = posixpath.splitext(source)[0]
        chosen[copy.key] = names.claim(copy.key, f"{stem}_aug{copy.copy_index}{copy.suffix}")
    return chosen
