"""Stratified, leakage-free train/val/test splits.

Images that are the same picture (exact or near duplicates) or derived from one (augmented copies) are joined
into groups and a group is always assigned whole, so nothing a model trains on reappears in evaluation. Groups
are distributed with iterative stratification (Sechidis, Tsoumakas, Vlahavas 2011, "On the Stratification of
Multi-Label Data"), which keeps rare classes present in every split far better than a random split; the
paper's LD, ED and FZ measures are reported for the result and for a random split of the same groups.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dataset_pipeline.domain.model import SPLITS


class DisjointSets:
    """Union-find over string keys; a set's root is its smallest key, so results do not depend on order."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}

    def add(self, key: str) -> None:
        self._parent.setdefault(key, key)

    def find(self, key: str) -> str:
        self.add(key)
        root = key
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[key] != root:  # path compression
            self._parent[key], key = root, self._parent[key]
        return root

    def union(self, a: str, b: str) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            low, high = sorted((root_a, root_b))
            self._parent[high] = low

    def groups(self) -> list[list[str]]:
        """Every set as a sorted list, the sets ordered by their smallest key."""
        members: dict[str, list[str]] = {}
        for key in self._parent:
            members.setdefault(self.find(key), []).append(key)
        return sorted((sorted(group) for group in members.values()), key=lambda group: group[0])


def merge_groups(groups: Iterable[Iterable[str]]) -> list[list[str]]:
    """Merge overlapping groups into disjoint ones (a~b and b~c puts a, b and c together)."""
    sets = DisjointSets()
    for group in groups:
        members = list(group)
        for member in members:
            sets.add(member)
        for member in members[1:]:
            sets.union(members[0], member)
    return sets.groups()


@dataclass(frozen=True, slots=True)
class SplitItem:
    """One image to place.

    `group_key` names the image this one is an augmented copy of (it then always joins that image's split);
    `boxes` is only counted for the report.
    """

    key: str
    classes: Set[int]
    source_split: str | None = None
    group_key: str | None = None
    is_augmented: bool = False
    boxes: int = 0


@dataclass(frozen=True, slots=True)
class SplitMetrics:
    """Sechidis et al. 2011: LD and ED are mean absolute deviations from the whole set (lower is better);
    FZ counts (split, class) pairs without a single example of a class the data does have."""

    label_distribution: float
    examples_distribution: float
    zero_folds: int


@dataclass(slots=True)
class SplitResult:
    """Where every image went and how well the classes are spread; `assignment` omits dropped copies."""

    assignment: dict[str, str]
    splits: tuple[str, ...]
    ratios: tuple[float, ...]
    images_per_split: dict[str, int]
    boxes_per_split: dict[str, int]
    augmented_per_split: dict[str, int]
    class_shares: (
        pd.DataFrame
    )  # split, class_index, class_name, images, share (of the class's counted images)
    metrics: SplitMetrics
    random_baseline_metrics: SplitMetrics
    groups: int
    dropped_augmented: list[str] = field(default_factory=list)
    source_split_conflicts: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Group:
    items: list[int]
    weight: int  # examples counted for ratios and metrics
    labels: dict[int, int]  # class index -> counted images with it
    fixed: int | None = None  # split index, when the group must go to one split


def _normalized_ratios(ratios: Sequence[float], splits: Sequence[str]) -> np.ndarray:
    if len(ratios) != len(splits):
        raise ValueError(f"{len(ratios)} ratios for {len(splits)} splits {list(splits)}; give one per split.")
    values = np.asarray(ratios, dtype=float)
    if (values < 0).any() or not np.isfinite(values).all() or values.sum() <= 0:
        raise ValueError(f"split ratios must be non-negative and sum to more than 0, got {list(ratios)}.")
    return values / values.sum()


def _desired_label_counts(total: np.ndarray, ratios: np.ndarray) -> np.ndarray:
    """Per class and split, how many images it should get (classes x splits).

    Deviation from the paper: a class with at least one image per split is promised at least one image in
    every split (taken from the largest share), so a class on 6 images lands 4/1/1 rather than 5/1/0.
    """
    desired = total[:, None] * ratios[None, :]
    active = ratios > 0
    enough = total >= active.sum()
    short = (desired < 1) & active[None, :] & enough[:, None]
    if short.any():
        largest = int(np.argmax(ratios))
        deficit = (1 - desired)[short.any(axis=1)].clip(min=0)
        rows = np.nonzero(short.any(axis=1))[0]
        desired[rows] = np.where(short[rows], 1.0, desired[rows])
        desired[rows, largest] -= (deficit * short[rows]).sum(axis=1)
    return desired


def _pick(candidates: list[int], *keys: np.ndarray, rng: random.Random) -> int:
    """The candidate with the largest first key, then second key, then a seeded random choice."""
    for key in keys:
        best = max(key[c] for c in candidates)
        candidates = [c for c in candidates if key[c] >= best - 1e-9]
        if len(candidates) == 1:
            return candidates[0]
    return rng.choice(candidates)


def _label_matrix(groups: Sequence[_Group], n_classes: int) -> np.ndarray:
    """Groups x classes: how many counted images of each group show each class."""
    matrix = np.zeros((len(groups), n_classes), dtype=np.float32)
    for index, group in enumerate(groups):
        for label, count in group.labels.items():
            matrix[index, label] = count
    return matrix


def _stratify(
    groups: list[_Group],
    label_matrix: np.ndarray,
    weights: np.ndarray,
    ratios: np.ndarray,
    rng: random.Random,
) -> np.ndarray:
    """Algorithm 1 of Sechidis et al. over groups; returns a split index per group.

    Two additions: groups of a label are taken largest first (small ones then fill the gaps), and a class
    on more than half of the images is also stratified by its absence, as a pseudo-label. Its
    positive/negative ratio (what LD measures) hinges on the few images without it, which the plain
    algorithm places only by chance while serving other labels.
    """
    placed = np.array([-1 if g.fixed is None else g.fixed for g in groups], dtype=int)
    fixed = placed >= 0
    totals = label_matrix.sum(axis=0)
    frequent = totals > weights.sum() / 2
    matrix = np.hstack([label_matrix, weights[:, None] - label_matrix[:, frequent]])

    active = [j for j in range(len(ratios)) if ratios[j] > 0]
    desired = ratios * weights.sum()
    desired_labels = _desired_label_counts(matrix.sum(axis=0), ratios)
    for j in range(len(ratios)):
        in_split = placed == j
        desired[j] -= weights[in_split].sum()
        desired_labels[:, j] -= matrix[in_split].sum(axis=0)

    order = list(range(len(groups)))
    rng.shuffle(order)
    order.sort(key=lambda index: -weights[index])  # stable: equal weights keep their seeded order
    rank = np.empty(len(groups), dtype=np.int64)
    rank[order] = np.arange(len(groups))
    by_label: list[np.ndarray] = []
    for label in range(matrix.shape[1]):
        members = np.nonzero((matrix[:, label] > 0) & ~fixed)[0]
        by_label.append(members[np.argsort(rank[members])])
    remaining = matrix[~fixed].sum(axis=0)

    while (remaining > 0).any():
        fewest = remaining[remaining > 0].min()
        label = rng.choice([int(i) for i in np.nonzero(remaining == fewest)[0]])
        for index in by_label[label].tolist():
            if placed[index] >= 0:
                continue
            split = _pick(active, desired_labels[label], desired, rng=rng)
            placed[index] = split
            desired[split] -= weights[index]
            desired_labels[:, split] -= matrix[index]
            remaining -= matrix[index]

    for index in order:  # groups without any class: wherever the most images are still wanted
        if placed[index] < 0:
            split = _pick(active, desired, rng=rng)
            placed[index] = split
            desired[split] -= weights[index]
    return placed


def _random_split(weights: np.ndarray, ratios: np.ndarray, rng: random.Random) -> np.ndarray:
    """The baseline: shuffled groups laid end to end and cut at the ratios."""
    order = list(range(len(weights)))
    rng.shuffle(order)
    bounds = np.cumsum(ratios)
    total = max(weights.sum(), 1.0)
    placed = np.zeros(len(weights), dtype=int)
    position = 0.0
    for index in order:
        middle = (position + weights[index] / 2) / total
        placed[index] = min(int(np.searchsorted(bounds, middle, side="right")), len(ratios) - 1)
        position += weights[index]
    return placed


def split_metrics(
    label_matrix: np.ndarray, weights: np.ndarray, placed: np.ndarray, ratios: np.ndarray
) -> SplitMetrics:
    """LD, ED and FZ for examples with per-class counts (`label_matrix`, examples x classes) placed in splits.

    LD compares each split's positive/negative ratio per class with the whole set's; where a split has no
    negatives the denominator is taken as 1 (the paper leaves it undefined).
    """
    n_splits = len(ratios)
    active = ratios > 0
    split_sizes = np.array([weights[placed == j].sum() for j in range(n_splits)])
    split_labels = np.stack([label_matrix[placed == j].sum(axis=0) for j in range(n_splits)])
    total = weights.sum()
    total_labels = label_matrix.sum(axis=0)
    present = total_labels > 0

    def pos_neg(positives: np.ndarray, size: np.ndarray | float) -> np.ndarray:
        return positives / np.maximum(size - positives, 1.0)

    if present.any() and active.any():
        overall = pos_neg(total_labels[present], total)
        per_split = pos_neg(split_labels[active][:, present], split_sizes[active][:, None])
        label_distribution = float(np.abs(per_split - overall[None, :]).mean())
    else:
        label_distribution = 0.0
    examples_distribution = (
        float(np.abs(split_sizes - ratios * total)[active].mean()) if active.any() else 0.0
    )
    zero_folds = int(((split_labels[active][:, present]) == 0).sum())
    return SplitMetrics(label_distribution, examples_distribution, zero_folds)


def _build_groups(
    items: Sequence[SplitItem],
    duplicate_groups: Sequence[Sequence[str]],
    originals_only_in_eval: bool,
) -> list[_Group]:
    index_of: dict[str, int] = {}
    for index, item in enumerate(items):
        if item.key in index_of:
            raise ValueError(f"image key {item.key!r} is given twice; keys must be unique.")
        index_of[item.key] = index
    sets = DisjointSets()
    for item in items:
        sets.add(item.key)
        if item.group_key is not None:
            sets.union(item.key, item.group_key)
    for group in duplicate_groups:
        for member in group[1:]:
            sets.union(group[0], member)

    groups: list[_Group] = []
    for members in sets.groups():
        indices = [index_of[key] for key in members if key in index_of]
        if not indices:
            continue
        counted = [i for i in indices if not (originals_only_in_eval and items[i].is_augmented)]
        labels: Counter[int] = Counter()
        for i in counted:
            labels.update(items[i].classes)
        groups.append(_Group(items=indices, weight=len(counted), labels=dict(labels)))
    return groups


def _fix_source_splits(
    items: Sequence[SplitItem], groups: list[_Group], splits: Sequence[str], originals_only_in_eval: bool
) -> list[str]:
    """Pin groups to their images' source split (the majority when they disagree); returns the conflicts."""
    position = {name: j for j, name in enumerate(splits)}
    conflicts: list[str] = []
    for group in groups:
        voters = [
            i for i in group.items if not (originals_only_in_eval and items[i].is_augmented)
        ] or group.items
        votes = Counter(
            split for i in voters if (split := items[i].source_split) is not None and split in position
        )
        if not votes:
            continue
        # Most votes wins; a tie goes to the split listed first (train before val before test).
        winner = min(votes, key=lambda name: (-votes[name], position[name]))
        group.fixed = position[winner]
        if len(votes) > 1:
            keys = sorted(items[i].key for i in group.items)
            shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
            conflicts.append(
                f"group of {len(keys)} images ({shown}) spans source splits "
                f"{dict(sorted(votes.items()))}; all placed in {winner!r} so they cannot leak"
            )
    return conflicts


def assign_splits(
    items: Sequence[SplitItem],
    *,
    duplicate_groups: Sequence[Sequence[str]] = (),
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    splits: Sequence[str] = SPLITS,
    class_names: Sequence[str] | None = None,
    seed: int = 0,
    keep_source_splits: bool = False,
    originals_only_in_eval: bool = True,
) -> SplitResult:
    """Place every image in a split, keeping groups whole and classes proportionally spread.

    The first of `splits` is the training split: with `originals_only_in_eval`, augmented copies whose
    original lands elsewhere are dropped, and ratios and metrics count originals only. With
    `keep_source_splits`, groups keep their source split (the majority of the group's, reported in
    `source_split_conflicts` when they disagree) and only groups without one are stratified; source splits
    not among `splits` count as none.
    """
    split_names = tuple(splits)
    normalized = _normalized_ratios(ratios, split_names)
    groups = _build_groups(items, duplicate_groups, originals_only_in_eval)
    conflicts = (
        _fix_source_splits(items, groups, split_names, originals_only_in_eval) if keep_source_splits else []
    )
    if originals_only_in_eval:
        for group in groups:
            if group.weight == 0 and group.fixed is None:
                group.fixed = 0  # copies of an image that is not in the upload: training material only

    min_class = min((c for item in items for c in item.classes), default=0)
    if min_class < 0:
        raise ValueError(f"class indices must be non-negative, got {min_class}.")
    max_class = max((c for item in items for c in item.classes), default=-1)
    n_classes = max(len(class_names or ()), max_class + 1)
    label_matrix = _label_matrix(groups, n_classes)
    weights = np.array([g.weight for g in groups], dtype=float)
    placed = _stratify(groups, label_matrix, weights, normalized, random.Random(seed))
    baseline = _random_split(weights, normalized, random.Random(f"baseline:{seed}"))

    assignment: dict[str, str] = {}
    dropped: list[str] = []
    images = dict.fromkeys(split_names, 0)
    boxes = dict.fromkeys(split_names, 0)
    augmented = dict.fromkeys(split_names, 0)
    for group, split_index in zip(groups, placed, strict=True):
        name = split_names[split_index]
        for i in group.items:
            item = items[i]
            if item.is_augmented and originals_only_in_eval and split_index != 0:
                dropped.append(item.key)
                continue
            assignment[item.key] = name
            images[name] += 1
            boxes[name] += item.boxes
            augmented[name] += int(item.is_augmented)

    return SplitResult(
        assignment=assignment,
        splits=split_names,
        ratios=tuple(float(r) for r in normalized),
        images_per_split=images,
        boxes_per_split=boxes,
        augmented_per_split=augmented,
        class_shares=_class_shares(label_matrix, placed, split_names, class_names),
        metrics=split_metrics(label_matrix, weights, placed, normalized),
        random_baseline_metrics=split_metrics(label_matrix, weights, baseline, normalized),
        groups=len(groups),
        dropped_augmented=sorted(dropped),
        source_split_conflicts=conflicts,
    )


def _class_shares(
    label_matrix: np.ndarray, placed: np.ndarray, splits: Sequence[str], class_names: Sequence[str] | None
) -> pd.DataFrame:
    n_classes = label_matrix.shape[1]
    totals = label_matrix.sum(axis=0)
    names = [
        class_names[c] if class_names is not None and c < len(class_names) else str(c)
        for c in range(n_classes)
    ]
    frames = []
    for j, split in enumerate(splits):
        counts = label_matrix[placed == j].sum(axis=0)
        share = np.divide(counts, totals, out=np.zeros(n_classes), where=totals > 0)
        frames.append(
            pd.DataFrame(
                {
                    "split": split,
                    "class_index": np.arange(n_classes),
                    "class_name": names,
                    "images": counts.astype(np.int64),
                    "share": share,
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=["split", "class_index", "class_name", "images", "share"])
    return pd.concat(frames, ignore_index=True)
