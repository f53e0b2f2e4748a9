"""Splitting on generated multi-label data with a rare class, augmented copies and duplicate groups."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pytest

from dataset_pipeline.domain.splitting import (
    SplitItem,
    SplitResult,
    assign_splits,
    merge_groups,
    split_metrics,
)

N_IMAGES = 300
N_CLASSES = 6
RARE = 5


@dataclass(frozen=True)
class Generated:
    items: list[SplitItem]
    duplicate_groups: list[list[str]]
    originals: list[SplitItem]
    copies: list[SplitItem]


@cache
def generated(seed: int = 0) -> Generated:
    """300 originals with 1-3 skewed classes (0 most common), class 5 on exactly 6 images, 20 duplicate
    groups of 2-3 images and 2 augmented copies of each of 30 further images."""
    rng = random.Random(seed)
    rare = set(rng.sample(range(N_IMAGES), 6))
    originals = []
    for i in range(N_IMAGES):
        classes = set(rng.choices(range(5), weights=[50, 25, 12, 8, 5], k=rng.choice([1, 1, 2, 3])))
        if i in rare:
            classes.add(RARE)
        originals.append(SplitItem(f"img{i:03d}", frozenset(classes), boxes=len(classes) + 1))
    others = [i for i in range(N_IMAGES) if i not in rare]
    rng.shuffle(others)
    duplicate_groups = [[f"img{i:03d}" for i in others[j : j + rng.choice([2, 3])]] for j in range(0, 60, 3)]
    copies = [
        SplitItem(
            f"img{i:03d}_aug{a}", originals[i].classes, group_key=f"img{i:03d}", is_augmented=True, boxes=2
        )
        for i in others[60:90]
        for a in range(2)
    ]
    return Generated(originals + copies, duplicate_groups, originals, copies)


def split(seed: int = 0, data_seed: int = 0, **kwargs: Any) -> SplitResult:
    data = generated(data_seed)
    return assign_splits(data.items, duplicate_groups=data.duplicate_groups, seed=seed, **kwargs)


def test_no_group_crosses_splits() -> None:
    data = generated()
    result = split()
    for group in data.duplicate_groups:
        assert len({result.assignment[key] for key in group}) == 1, group
    for copy in data.copies:
        if copy.key in result.assignment:
            assert result.assignment[copy.key] == result.assignment[copy.group_key or ""]


def test_augmented_copies_stay_in_train_and_are_dropped_with_eval_originals() -> None:
    data = generated()
    result = split()

    expected_dropped = sorted(c.key for c in data.copies if result.assignment[c.group_key or ""] != "train")
    assert result.dropped_augmented == expected_dropped
    assert result.augmented_per_split == {
        "train": len(data.copies) - len(expected_dropped),
        "val": 0,
        "test": 0,
    }
    assert len(result.assignment) == len(data.items) - len(expected_dropped)
    assert expected_dropped, "the fixture should put some originals with copies into val or test"


def test_copies_follow_their_original_anywhere_when_allowed() -> None:
    data = generated()
    result = split(originals_only_in_eval=False)
    assert result.dropped_augmented == []
    assert all(result.assignment[c.key] == result.assignment[c.group_key or ""] for c in data.copies)
    assert sum(result.augmented_per_split.values()) == len(data.copies)


@pytest.mark.parametrize("seed", range(4))
def test_stratification_beats_a_random_grouped_split(seed: int) -> None:
    result = split(seed=seed, data_seed=seed)
    assert result.metrics.label_distribution < result.random_baseline_metrics.label_distribution
    assert result.metrics.zero_folds == 0
    assert result.metrics.examples_distribution <= 1.0


def test_every_class_with_three_images_reaches_every_split() -> None:
    data = generated()
    result = split()
    images_of = Counter(c for item in data.originals for c in item.classes)
    seen = {(result.assignment[item.key], c) for item in data.originals for c in item.classes}
    for cls, count in images_of.items():
        if count >= 3:
            assert all((name, cls) in seen for name in ("train", "val", "test")), (cls, count)
    assert images_of[RARE] == 6


def test_ratios_are_respected() -> None:
    data = generated()
    result = split()
    per_split = Counter(result.assignment[item.key] for item in data.originals)
    for name, ratio in zip(("train", "val", "test"), (0.8, 0.1, 0.1), strict=True):
        assert per_split[name] / N_IMAGES == pytest.approx(ratio, abs=0.02)
    assert result.images_per_split["val"] == per_split["val"]
    assert sum(result.boxes_per_split.values()) == sum(
        item.boxes for item in data.items if item.key in result.assignment
    )


def test_deterministic_for_a_seed() -> None:
    first, again, other = split(seed=7), split(seed=7), split(seed=8)
    assert first.assignment == again.assignment
    assert first.metrics == again.metrics and first.random_baseline_metrics == again.random_baseline_metrics
    assert first.assignment != other.assignment


def test_class_shares_table() -> None:
    result = split(class_names=[f"c{i}" for i in range(N_CLASSES)])
    table = result.class_shares
    assert list(table.columns) == ["split", "class_index", "class_name", "images", "share"]
    assert len(table) == 3 * N_CLASSES
    assert table.groupby("class_index")["share"].sum().to_numpy() == pytest.approx(np.ones(N_CLASSES))
    rare = table[table["class_index"] == RARE].set_index("split")["images"].to_dict()
    assert rare == {"train": 4, "val": 1, "test": 1}


def test_keep_source_splits_uses_the_majority_of_a_group_and_stratifies_the_rest() -> None:
    items = [
        SplitItem("a", frozenset({0}), source_split="train"),
        SplitItem("b", frozenset({0}), source_split="test"),
        SplitItem("c", frozenset({0}), source_split="test"),
        SplitItem("d", frozenset({1}), source_split="val"),
        SplitItem("d_aug", frozenset({1}), group_key="d", is_augmented=True),
        *(SplitItem(f"free{i}", frozenset({i % 2})) for i in range(60)),
    ]
    result = assign_splits(items, duplicate_groups=[["a", "b", "c"]], keep_source_splits=True)

    assert [result.assignment[k] for k in "abcd"] == ["test", "test", "test", "val"]
    assert result.dropped_augmented == ["d_aug"]
    (conflict,) = result.source_split_conflicts
    assert "a, b, c" in conflict and "'test'" in conflict
    # The 60 images without a source split fill what the pinned ones leave: 64 wanted 51.2 / 6.4 / 6.4.
    assert {result.assignment[f"free{i}"] for i in range(60)} == {"train", "val", "test"}
    wanted = {"train": 51.2, "val": 6.4, "test": 6.4}
    assert all(abs(result.images_per_split[name] - wanted[name]) < 1 for name in wanted)


def test_background_images_and_orphan_copies_are_placed() -> None:
    items = [SplitItem(f"bg{i}", frozenset()) for i in range(10)]
    items.append(SplitItem("orphan_aug", frozenset({0}), group_key="not-uploaded", is_augmented=True))
    result = assign_splits(items, ratios=(0.6, 0.2, 0.2))
    assert Counter(result.assignment[f"bg{i}"] for i in range(10)) == {"train": 6, "val": 2, "test": 2}
    assert result.assignment["orphan_aug"] == "train"


def test_a_zero_ratio_split_stays_empty() -> None:
    result = split(ratios=(0.9, 0.1, 0.0))
    assert result.images_per_split["test"] == 0
    assert result.metrics.zero_folds == 0  # a split nobody asked for is not a missing fold


def test_invalid_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="twice"):
        assign_splits([SplitItem("a", frozenset()), SplitItem("a", frozenset())])
    with pytest.raises(ValueError, match="ratios"):
        assign_splits([SplitItem("a", frozenset())], ratios=(0.8, 0.2))
    with pytest.raises(ValueError, match="non-negative"):
        assign_splits([SplitItem("a", frozenset())], ratios=(1.0, -0.5, 0.5))


def test_merge_groups_joins_overlaps() -> None:
    assert merge_groups([["b", "a"], ["c", "d"], ["d", "e"], ["f"]]) == [["a", "b"], ["c", "d", "e"], ["f"]]


def test_metrics_by_hand() -> None:
    ratios = np.array([0.5, 0.5])
    # One label on examples 0 and 1 of four; overall positive/negative ratio 2/2 = 1.
    labels = np.array([[1.0], [1.0], [0.0], [0.0]])
    weights = np.ones(4)

    even = split_metrics(labels, weights, np.array([0, 1, 0, 1]), ratios)
    assert (even.label_distribution, even.examples_distribution, even.zero_folds) == (0.0, 0.0, 0)

    # Split 0 holds both positives and no negative (ratio 2 with the denominator floored at 1), split 1 none.
    apart = split_metrics(labels, weights, np.array([0, 0, 1, 1]), ratios)
    assert (apart.label_distribution, apart.examples_distribution, apart.zero_folds) == (1.0, 0.0, 1)

    # Sizes 3 and 1 against 2 and 2 wanted; split 0: 2 pos / 1 neg, split 1: 0 / 1 -> (|2-1| + |0-1|) / 2.
    lopsided = split_metrics(labels, weights, np.array([0, 0, 0, 1]), ratios)
    assert (lopsided.label_distribution, lopsided.examples_distribution, lopsided.zero_folds) == (1.0, 1.0, 1)
