"""What changed between two versions of a dataset: images by name and bytes, boxes by overlap, classes by name.

A user reviewing a new version asks "which pictures are new, gone or re-encoded, and which labels were edited",
not "which rows differ", so images are paired by name (a pure rename is recognised by its sha256) and boxes are
paired inside each image pair by IoU, the way a detection metric would pair them. Box matching is one greedy
pass over all images at once on flat arrays, so 100k boxes take well under a second. No Dagster, no database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

#: Coordinates closer than this (pixels) are the same coordinate: float round trips must not show as edits.
COORD_TOLERANCE = 1e-6

#: Above this many candidate box pairs the IoU is computed in slices, so one crowded image cannot exhaust memory.
_CANDIDATE_CHUNK = 2_000_000

#: How many file names the markdown lists per section before it only says how many more there are.
MARKDOWN_NAMES = 10


@dataclass(frozen=True, slots=True)
class VersionContent:
    """A version's images as rows and boxes as arrays: what a diff compares."""

    number: int  # version number (1, 2, ...)
    class_names: tuple[str, ...]
    image_names: tuple[str, ...]  # relative paths inside the dataset, unique
    image_sha256: tuple[str, ...]  # content hash per image, same order
    image_splits: tuple[str | None, ...]  # assigned split per image (None = not split yet)
    box_image: np.ndarray  # (n,) int64 index into image_names
    box_class: np.ndarray  # (n,) int64 index into class_names
    box_xyxy: np.ndarray  # (n, 4) float64, pixels, x_min y_min x_max y_max

    def __post_init__(self) -> None:
        # Coerce rather than demand exact dtypes: loaders hand over lists or int32 arrays, and an empty version
        # is easiest to build from `[]`.
        object.__setattr__(self, "box_image", np.asarray(self.box_image, dtype=np.int64).reshape(-1))
        object.__setattr__(self, "box_class", np.asarray(self.box_class, dtype=np.int64).reshape(-1))
        object.__setattr__(self, "box_xyxy", np.asarray(self.box_xyxy, dtype=np.float64).reshape(-1, 4))
        where = f"version {self.number}"
        images = len(self.image_names)
        if len(self.image_sha256) != images or len(self.image_splits) != images:
            raise ValueError(
                f"{where}: {images} image names but {len(self.image_sha256)} sha256s and "
                f"{len(self.image_splits)} splits; build the three tuples from the same rows"
            )
        if len(set(self.image_names)) != images:
            raise ValueError(
                f"{where}: image names repeat ({_first_repeat(self.image_names)!r}); they must be unique"
            )
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(
                f"{where}: class names repeat ({_first_repeat(self.class_names)!r}); classes are compared by name"
            )
        boxes = len(self.box_image)
        if len(self.box_class) != boxes or len(self.box_xyxy) != boxes:
            raise ValueError(
                f"{where}: {boxes} box image indexes but {len(self.box_class)} classes and "
                f"{len(self.box_xyxy)} xyxy rows; build the three arrays from the same rows"
            )
        for label, index, bound in (
            ("box_image", self.box_image, images),
            ("box_class", self.box_class, len(self.class_names)),
        ):
            if boxes and (index.min() < 0 or index.max() >= bound):
                raise ValueError(
                    f"{where}: {label} holds indexes outside 0..{bound - 1}; check the loader's join"
                )

    @property
    def box_count(self) -> int:
        return len(self.box_image)


class SplitMove(NamedTuple):
    """An image kept between versions that was assigned to another split (named as in the new version)."""

    image: str
    from_split: str
    to_split: str


@dataclass(frozen=True, slots=True)
class VersionDiff:
    """The changes from version `from_number` to `to_number`; `to_json` and `markdown` are its two faces.

    `boxes_changed` counts matched box pairs that moved or were relabelled; a box that did both is one change
    but counts in both `boxes_moved` and `boxes_relabelled`.
    """

    from_number: int
    to_number: int
    images_added: tuple[str, ...] = ()
    images_removed: tuple[str, ...] = ()
    images_changed: tuple[str, ...] = ()  # same name, other bytes
    images_renamed: tuple[tuple[str, str], ...] = ()  # (old name, new name), same bytes
    images_relabelled: tuple[str, ...] = ()  # kept images (new name) with any box added, removed or changed
    moved_split: tuple[SplitMove, ...] = ()
    boxes_added: int = 0
    boxes_removed: int = 0
    boxes_changed: int = 0
    boxes_moved: int = 0
    boxes_relabelled: int = 0
    class_deltas: dict[str, int] = field(
        default_factory=dict
    )  # class name -> boxes in new minus in old, != 0

    @property
    def is_empty(self) -> bool:
        return not (
            self.images_added
            or self.images_removed
            or self.images_changed
            or self.images_renamed
            or self.moved_split
            or self.boxes_added
            or self.boxes_removed
            or self.boxes_changed
            or self.class_deltas
        )

    def to_json(self) -> dict[str, Any]:
        """Plain lists, dicts and ints, so `json.dumps` works and the CLI and the UI print the same thing."""
        return {
            "from": self.from_number,
            "to": self.to_number,
            "images": {
                "added": list(self.images_added),
                "removed": list(self.images_removed),
                "changed": list(self.images_changed),
                "renamed": [[old, new] for old, new in self.images_renamed],
                "relabelled": list(self.images_relabelled),
                "moved_split": [
                    {"image": move.image, "from": move.from_split, "to": move.to_split}
                    for move in self.moved_split
                ],
            },
            "boxes": {
                "added": self.boxes_added,
                "removed": self.boxes_removed,
                "changed": self.boxes_changed,
                "moved": self.boxes_moved,
                "relabelled": self.boxes_relabelled,
            },
            "classes": dict(self.class_deltas),
        }

    def markdown(self) -> str:
        """A compact summary for the Dagster UI: counts first, then a few names of each kind."""
        title = f"**Version {self.from_number} → {self.to_number}**"
        if self.is_empty:
            return f"{title}: no changes."
        lines = [
            title,
            "",
            "| images | count | boxes | count |",
            "|---|---:|---|---:|",
            f"| added | {len(self.images_added):,} | added | {self.boxes_added:,} |",
            f"| removed | {len(self.images_removed):,} | removed | {self.boxes_removed:,} |",
            f"| changed bytes | {len(self.images_changed):,} | changed | {self.boxes_changed:,} |",
            f"| renamed | {len(self.images_renamed):,} | ↳ moved | {self.boxes_moved:,} |",
            f"| moved split | {len(self.moved_split):,} | ↳ relabelled | {self.boxes_relabelled:,} |",
            f"| labels edited | {len(self.images_relabelled):,} | | |",
        ]
        for label, names in (
            ("Added", self.images_added),
            ("Removed", self.images_removed),
            ("Changed bytes", self.images_changed),
            ("Renamed", [f"{old} → {new}" for old, new in self.images_renamed]),
            ("Labels edited", self.images_relabelled),
        ):
            if names:
                lines += ["", f"{label}: {_name_list(names)}"]
        if self.class_deltas:
            lines += ["", "| class | boxes Δ |", "|---|---:|"]
            lines += [f"| {_cell(name)} | {delta:+,} |" for name, delta in self.class_deltas.items()]
        if self.moved_split:
            lines += ["", "| image | from | to |", "|---|---|---|"]
            lines += [
                f"| {_cell(move.image)} | {move.from_split} | {move.to_split} |"
                for move in self.moved_split[:MARKDOWN_NAMES]
            ]
            if len(self.moved_split) > MARKDOWN_NAMES:
                lines.append(f"| … {len(self.moved_split) - MARKDOWN_NAMES:,} more | | |")
        return "\n".join(lines)


def diff_versions(old: VersionContent, new: VersionContent, iou_threshold: float = 0.5) -> VersionDiff:
    """Compare two versions as a reviewer would: renames are not churn, a nudged box is an edit, not a swap.

    Boxes are paired per image pair: identical boxes first, then greedily by descending IoU (at least
    `iou_threshold`) among boxes of the same class name, then across classes; unpaired old boxes are removed,
    unpaired new boxes added.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")

    pairs_old, pairs_new, added, removed, changed, renamed = _pair_images(old, new)
    moved_split = tuple(
        sorted(
            SplitMove(new.image_names[j], before, after)
            for i, j in zip(pairs_old, pairs_new, strict=True)
            if (before := old.image_splits[i]) is not None
            and (after := new.image_splits[j]) is not None
            and before != after
        )
    )

    # Class indexes mean nothing across versions; a shared vocabulary of names does.
    vocabulary = list(dict.fromkeys((*old.class_names, *new.class_names)))
    code = {name: index for index, name in enumerate(vocabulary)}
    old_class = np.array([code[n] for n in old.class_names], dtype=np.int64)[old.box_class]
    new_class = np.array([code[n] for n in new.class_names], dtype=np.int64)[new.box_class]

    pair_count = len(pairs_old)
    old_pair = _pair_of_boxes(old, pairs_old)
    new_pair = _pair_of_boxes(new, pairs_new)
    boxes = _match_boxes(old, new, old_pair, new_pair, old_class, new_class, pair_count, iou_threshold)

    deltas = np.bincount(new_class, minlength=len(vocabulary)) - np.bincount(
        old_class, minlength=len(vocabulary)
    )
    relabelled_images = sorted(new.image_names[pairs_new[p]] for p in boxes.edited_pairs.tolist())
    return VersionDiff(
        from_number=old.number,
        to_number=new.number,
        images_added=tuple(added),
        images_removed=tuple(removed),
        images_changed=tuple(changed),
        images_renamed=tuple(renamed),
        images_relabelled=tuple(relabelled_images),
        moved_split=moved_split,
        boxes_added=boxes.added,
        boxes_removed=boxes.removed,
        boxes_changed=boxes.changed,
        boxes_moved=boxes.moved,
        boxes_relabelled=boxes.relabelled,
        class_deltas={vocabulary[c]: int(deltas[c]) for c in np.flatnonzero(deltas).tolist()},
    )


def _pair_images(
    old: VersionContent, new: VersionContent
) -> tuple[list[int], list[int], list[str], list[str], list[str], list[tuple[str, str]]]:
    """Image pairs as (old indexes, new indexes), plus sorted added, removed, changed names and renames."""
    old_index = {name: i for i, name in enumerate(old.image_names)}
    new_index = {name: j for j, name in enumerate(new.image_names)}
    pairs_old = [old_index[name] for name in new.image_names if name in old_index]
    pairs_new = [j for j, name in enumerate(new.image_names) if name in old_index]
    changed = sorted(
        new.image_names[j]
        for i, j in zip(pairs_old, pairs_new, strict=True)
        if old.image_sha256[i] != new.image_sha256[j]
    )
    gone = sorted(name for name in old.image_names if name not in new_index)
    arrived = sorted(name for name in new.image_names if name not in old_index)

    # A removed and an added image with the same bytes are one image renamed; equal bytes under several names
    # are paired in name order so the result does not depend on row order.
    gone_by_hash: dict[str, list[str]] = {}
    for name in reversed(gone):
        gone_by_hash.setdefault(old.image_sha256[old_index[name]], []).append(name)
    renamed: list[tuple[str, str]] = []
    added: list[str] = []
    for name in arrived:
        candidates = gone_by_hash.get(new.image_sha256[new_index[name]])
        if candidates:
            renamed.append((candidates.pop(), name))
        else:
            added.append(name)
    renamed_old = {old_name for old_name, _ in renamed}
    removed = [name for name in gone if name not in renamed_old]
    for old_name, new_name in renamed:
        pairs_old.append(old_index[old_name])
        pairs_new.append(new_index[new_name])
    return pairs_old, pairs_new, added, removed, changed, sorted(renamed)


def _pair_of_boxes(version: VersionContent, paired_images: list[int]) -> np.ndarray:
    """Per box, the index of the image pair it belongs to, or -1 when its image has no counterpart."""
    pair_of_image = np.full(len(version.image_names), -1, dtype=np.int64)
    pair_of_image[np.asarray(paired_images, dtype=np.int64)] = np.arange(len(paired_images), dtype=np.int64)
    return pair_of_image[version.box_image]


class _BoxChanges(NamedTuple):
    added: int
    removed: int
    changed: int
    moved: int
    relabelled: int
    edited_pairs: np.ndarray  # sorted image pair indexes with any box difference


def _match_boxes(
    old: VersionContent,
    new: VersionContent,
    old_pair: np.ndarray,
    new_pair: np.ndarray,
    old_class: np.ndarray,
    new_class: np.ndarray,
    pair_count: int,
    iou_threshold: float,
) -> _BoxChanges:
    """Pair boxes inside image pairs and count what is left over or differs."""
    old_live = np.flatnonzero(old_pair >= 0)
    new_live = np.flatnonzero(new_pair >= 0)
    # Most boxes of a new version are copied untouched; pairing those exactly first keeps the IoU stage small.
    old_same, new_same = _exact_matches(
        _box_keys(old_pair[old_live], old_class[old_live], old.box_xyxy[old_live]),
        _box_keys(new_pair[new_live], new_class[new_live], new.box_xyxy[new_live]),
    )
    old_rest = old_live[~old_same]
    new_rest = new_live[~new_same]

    candidate_old, candidate_new, iou = _overlapping_candidates(
        old_rest, new_rest, old_pair, new_pair, pair_count, old.box_xyxy, new.box_xyxy, iou_threshold
    )
    cross_class = old_class[candidate_old] != new_class[candidate_new]
    # Same class before other classes, then higher IoU first; box indexes break ties so the order is total.
    rank = np.lexsort((candidate_new, candidate_old, -iou, cross_class))
    matched_old, matched_new = _greedy_matching(
        candidate_old[rank], candidate_new[rank], len(old_class), len(new_class)
    )

    relabelled = old_class[matched_old] != new_class[matched_new]
    moved = (
        np.abs(old.box_xyxy[matched_old] - new.box_xyxy[matched_new]).max(axis=1, initial=0.0)
        > COORD_TOLERANCE
    )
    edited = relabelled | moved
    unmatched_old = old_rest[~np.isin(old_rest, matched_old)]
    unmatched_new = new_rest[~np.isin(new_rest, matched_new)]
    edited_pairs = np.unique(
        np.concatenate([old_pair[unmatched_old], new_pair[unmatched_new], old_pair[matched_old[edited]]])
    )
    return _BoxChanges(
        added=int(np.count_nonzero(new_pair < 0)) + len(unmatched_new),
        removed=int(np.count_nonzero(old_pair < 0)) + len(unmatched_old),
        changed=int(np.count_nonzero(edited)),
        moved=int(np.count_nonzero(moved)),
        relabelled=int(np.count_nonzero(relabelled)),
        edited_pairs=edited_pairs,
    )


def _box_keys(pair: np.ndarray, class_code: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
    """(n, 6) int64 rows that are equal exactly when pair, class and the float bits of xyxy are."""
    bits = np.ascontiguousarray(xyxy + 0.0).view(np.int64)  # + 0.0 turns -0.0 into 0.0
    return np.column_stack([pair, class_code, bits]).astype(np.int64, copy=False)


def _exact_matches(old_keys: np.ndarray, new_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Multiset intersection of key rows: the k-th copy of a row in old pairs with the k-th copy in new."""
    keys = np.concatenate([_with_occurrence(old_keys), _with_occurrence(new_keys)])
    side = np.repeat([0, 1], [len(old_keys), len(new_keys)])
    matched = np.zeros(len(keys), dtype=bool)
    if len(keys) > 1:
        order = np.lexsort((side, *keys.T[::-1]))
        ordered = keys[order]
        # With the occurrence column a row is unique per side, so equal neighbours are an old and a new copy.
        same = (ordered[1:] == ordered[:-1]).all(axis=1)
        matched[order[1:][same]] = True
        matched[order[:-1][same]] = True
    return matched[: len(old_keys)], matched[len(old_keys) :]


def _with_occurrence(keys: np.ndarray) -> np.ndarray:
    """Append to each row how many equal rows came before it, turning a multiset into a set."""
    occurrence = np.zeros(len(keys), dtype=np.int64)
    if len(keys):
        order = np.lexsort(keys.T[::-1])
        ordered = keys[order]
        starts = np.ones(len(keys), dtype=bool)
        starts[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
        position = np.arange(len(keys))
        occurrence[order] = position - np.maximum.accumulate(np.where(starts, position, 0))
    return np.column_stack([keys, occurrence])


def _overlapping_candidates(
    old_rest: np.ndarray,
    new_rest: np.ndarray,
    old_pair: np.ndarray,
    new_pair: np.ndarray,
    pair_count: int,
    old_xyxy: np.ndarray,
    new_xyxy: np.ndarray,
    iou_threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (old box, new box) of the same image pair with IoU ≥ threshold, without a loop over images."""
    new_sorted = new_rest[np.argsort(new_pair[new_rest], kind="stable")]
    new_per_pair = np.bincount(new_pair[new_sorted], minlength=pair_count)
    new_start = np.concatenate([[0], np.cumsum(new_per_pair)[:-1]]).astype(np.int64)
    repeats = new_per_pair[old_pair[old_rest]] if len(old_rest) else np.zeros(0, dtype=np.int64)
    ends = np.cumsum(repeats)
    old_x = np.ascontiguousarray(old_xyxy[:, [0, 2]].T)
    new_x = np.ascontiguousarray(new_xyxy[:, [0, 2]].T)

    found_old, found_new, found_iou = [], [], []
    first = 0
    while first < len(old_rest):
        # Slice the old boxes so each slice expands to about _CANDIDATE_CHUNK pairs (at least one box).
        done = ends[first - 1] if first else 0
        last = max(first + 1, int(np.searchsorted(ends, done + _CANDIDATE_CHUNK, side="right")))
        boxes = old_rest[first:last]
        counts = repeats[first:last]
        offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        candidate_old = np.repeat(boxes, counts)
        candidate_new = new_sorted[np.repeat(new_start[old_pair[boxes]], counts) + offsets]
        # In a crowded image most pairs do not even overlap along x; dropping them first is the cheap test.
        old_x0, new_x0 = old_x[0][candidate_old], new_x[0][candidate_new]
        overlap = np.minimum(old_x[1][candidate_old], new_x[1][candidate_new]) > np.maximum(old_x0, new_x0)
        near = overlap | (np.abs(old_x0 - new_x0) <= COORD_TOLERANCE)
        candidate_old, candidate_new = candidate_old[near], candidate_new[near]
        iou = _iou_of_pairs(old_xyxy[candidate_old], new_xyxy[candidate_new])
        keep = iou >= iou_threshold
        found_old.append(candidate_old[keep])
        found_new.append(candidate_new[keep])
        found_iou.append(iou[keep])
        first = last
    if not found_old:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    return np.concatenate(found_old), np.concatenate(found_new), np.concatenate(found_iou)


def _iou_of_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of a[k] with b[k] for xyxy rows; boxes equal within COORD_TOLERANCE count as 1 even without area."""
    inter_w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0.0, None)
    inter_h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0.0, None)
    inter = inter_w * inter_h
    area_a = np.clip(a[:, 2] - a[:, 0], 0.0, None) * np.clip(a[:, 3] - a[:, 1], 0.0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0.0, None) * np.clip(b[:, 3] - b[:, 1], 0.0, None)
    union = area_a + area_b - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    iou[np.abs(a - b).max(axis=1, initial=0.0) <= COORD_TOLERANCE] = 1.0
    return iou


def _greedy_matching(
    candidate_old: np.ndarray, candidate_new: np.ndarray, old_count: int, new_count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching of candidates given best first, computed in rounds instead of one by one.

    A candidate that is the best remaining one for both of its boxes is taken by sequential greedy too, so
    taking all of those at once and repeating gives the same matching in a handful of array passes.
    """
    old_taken = np.zeros(old_count, dtype=bool)
    new_taken = np.zeros(new_count, dtype=bool)
    taken_old, taken_new = [], []
    alive = np.arange(len(candidate_old))
    while len(alive):
        o = candidate_old[alive]
        n = candidate_new[alive]
        best = np.zeros(len(alive), dtype=bool)
        best[np.unique(o, return_index=True)[1]] = True
        best_new = np.zeros(len(alive), dtype=bool)
        best_new[np.unique(n, return_index=True)[1]] = True
        best &= best_new
        taken_old.append(o[best])
        taken_new.append(n[best])
        old_taken[o[best]] = True
        new_taken[n[best]] = True
        alive = alive[~old_taken[o] & ~new_taken[n]]
    if not taken_old:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(taken_old), np.concatenate(taken_new)


def _first_repeat(names: tuple[str, ...]) -> str:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return ""


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _name_list(names: tuple[str, ...] | list[str]) -> str:
    shown = ", ".join(f"`{_cell(name)}`" for name in names[:MARKDOWN_NAMES])
    if len(names) > MARKDOWN_NAMES:
        shown += f" and {len(names) - MARKDOWN_NAMES:,} more"
    return shown
