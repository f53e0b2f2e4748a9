"""Version diffs on hand-made versions whose answer is obvious, and correctness properties at 100k boxes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from dataset_pipeline.domain.version_diff import SplitMove, VersionContent, VersionDiff, diff_versions

CLASSES = ("cat", "dog")

#: (image name, class index, x_min, y_min, x_max, y_max)
BoxRow = tuple[str, int, float, float, float, float]

BASE_BOXES: list[BoxRow] = [
    ("a.jpg", 0, 10, 10, 50, 50),
    ("a.jpg", 1, 100, 100, 200, 180),
    ("b.jpg", 0, 0, 0, 30, 30),
]


def version(
    number: int = 1,
    images: Sequence[tuple[str, str, str | None]] = (("a.jpg", "sha-a", "train"), ("b.jpg", "sha-b", "val")),
    boxes: Sequence[BoxRow] = BASE_BOXES,
    class_names: Sequence[str] = CLASSES,
) -> VersionContent:
    names = [name for name, _, _ in images]
    return VersionContent(
        number=number,
        class_names=tuple(class_names),
        image_names=tuple(names),
        image_sha256=tuple(sha for _, sha, _ in images),
        image_splits=tuple(split for _, _, split in images),
        box_image=np.array([names.index(row[0]) for row in boxes], dtype=np.int64),
        box_class=np.array([row[1] for row in boxes], dtype=np.int64),
        box_xyxy=np.array([row[2:] for row in boxes], dtype=np.float64).reshape(-1, 4),
    )


def test_identical_versions_are_an_empty_diff() -> None:
    diff = diff_versions(version(1), version(2))

    assert diff.is_empty
    assert diff == VersionDiff(from_number=1, to_number=2)
    assert "no changes" in diff.markdown()


def test_added_removed_and_changed_images_count_their_boxes() -> None:
    new = version(
        2,
        images=[("a.jpg", "sha-a2", "train"), ("c.jpg", "sha-c", "train")],
        boxes=[*BASE_BOXES[:2], ("c.jpg", 1, 5, 5, 25, 25), ("c.jpg", 1, 40, 40, 60, 60)],
    )

    diff = diff_versions(version(1), new)

    assert (diff.images_added, diff.images_removed, diff.images_changed) == (
        ("c.jpg",),
        ("b.jpg",),
        ("a.jpg",),
    )
    assert (diff.boxes_added, diff.boxes_removed, diff.boxes_changed) == (2, 1, 0)
    assert diff.images_relabelled == ()  # a.jpg has new bytes but the same boxes
    assert diff.class_deltas == {"cat": -1, "dog": 2}


def test_renamed_image_is_neither_added_nor_removed() -> None:
    new = version(
        2,
        images=[("a.jpg", "sha-a", "train"), ("renamed/b.jpg", "sha-b", "val")],
        boxes=[*BASE_BOXES[:2], ("renamed/b.jpg", 0, 0, 0, 30, 30)],
    )

    diff = diff_versions(version(1), new)

    assert diff.images_renamed == (("b.jpg", "renamed/b.jpg"),)
    assert (diff.images_added, diff.images_removed) == ((), ())
    assert (diff.boxes_added, diff.boxes_removed, diff.boxes_changed) == (0, 0, 0)
    assert not diff.is_empty
    assert diff.to_json()["images"]["renamed"] == [["b.jpg", "renamed/b.jpg"]]


def test_boxes_of_a_renamed_image_are_compared_like_a_same_name_pair() -> None:
    new = version(
        2,
        images=[("a.jpg", "sha-a", "train"), ("b2.jpg", "sha-b", "val")],
        boxes=[*BASE_BOXES[:2], ("b2.jpg", 0, 2, 2, 32, 32)],
    )

    diff = diff_versions(version(1), new)

    assert (diff.boxes_added, diff.boxes_removed, diff.boxes_changed, diff.boxes_moved) == (0, 0, 1, 1)
    assert diff.images_relabelled == ("b2.jpg",)


def test_equal_bytes_under_several_names_pair_in_name_order() -> None:
    old = version(1, images=[("x1.jpg", "same", None), ("x2.jpg", "same", None)], boxes=[])
    new = version(
        2, images=[("y2.jpg", "same", None), ("y1.jpg", "same", None), ("y3.jpg", "same", None)], boxes=[]
    )

    diff = diff_versions(old, new)

    assert diff.images_renamed == (("x1.jpg", "y1.jpg"), ("x2.jpg", "y2.jpg"))
    assert diff.images_added == ("y3.jpg",)


def test_a_moved_box_is_changed_not_added_and_removed() -> None:
    boxes = list(BASE_BOXES)
    boxes[0] = ("a.jpg", 0, 14, 12, 54, 52)  # IoU with the old box ≈ 0.75

    diff = diff_versions(version(1), version(2, boxes=boxes))

    assert (diff.boxes_added, diff.boxes_removed, diff.boxes_changed) == (0, 0, 1)
    assert (diff.boxes_moved, diff.boxes_relabelled) == (1, 0)
    assert diff.class_deltas == {}
    assert diff.images_relabelled == ("a.jpg",)


def test_a_box_shifted_below_the_threshold_is_removed_and_added() -> None:
    boxes = list(BASE_BOXES)
    boxes[0] = ("a.jpg", 0, 30, 10, 70, 50)  # half the width over: IoU = 1/3

    diff = diff_versions(version(1), version(2, boxes=boxes))

    assert (diff.boxes_added, diff.boxes_removed, diff.boxes_changed) == (1, 1, 0)
    assert diff_versions(version(1), version(2, boxes=boxes), iou_threshold=0.3).boxes_changed == 1


def test_float_noise_below_the_tolerance_is_no_change() -> None:
    boxes = list(BASE_BOXES)
    boxes[0] = ("a.jpg", 0, 10 + 1e-9, 10, 50 - 1e-9, 50)

    assert diff_versions(version(1), version(2, boxes=boxes)).is_empty


def test_a_relabelled_box_is_changed_and_moves_the_class_counts() -> None:
    boxes = list(BASE_BOXES)
    boxes[0] = ("a.jpg", 1, 10, 10, 50, 50)

    diff = diff_versions(version(1), version(2, boxes=boxes))

    assert (diff.boxes_added, diff.boxes_removed, diff.boxes_changed) == (0, 0, 1)
    assert (diff.boxes_moved, diff.boxes_relabelled) == (0, 1)
    assert diff.class_deltas == {"cat": -1, "dog": 1}


def test_same_class_is_preferred_over_a_better_overlap_of_another_class() -> None:
    old = version(1, boxes=[("a.jpg", 0, 0, 0, 100, 100)])
    # the dog is exactly where the cat was, the cat moved a little: the cat is the same object, the dog is new
    new = version(2, boxes=[("a.jpg", 1, 0, 0, 100, 100), ("a.jpg", 0, 5, 5, 105, 105)])

    diff = diff_versions(old, new)

    assert (diff.boxes_added, diff.boxes_removed, diff.boxes_moved, diff.boxes_relabelled) == (1, 0, 1, 0)


def test_renumbered_class_indexes_with_equal_names_change_nothing() -> None:
    renumbered = [(name, 1 - cls, *xyxy) for name, cls, *xyxy in BASE_BOXES]
    new = version(2, boxes=renumbered[::-1], class_names=("dog", "cat", "bird"))

    diff = diff_versions(version(1), new)

    assert diff.is_empty
    assert diff.class_deltas == {}


def test_a_renamed_class_shows_as_one_class_down_and_another_up() -> None:
    new = version(2, class_names=("kitten", "dog"))

    diff = diff_versions(version(1), new)

    assert diff.class_deltas == {"cat": -2, "kitten": 2}
    assert (diff.boxes_changed, diff.boxes_relabelled) == (2, 2)


def test_images_that_moved_split() -> None:
    new = version(2, images=[("a.jpg", "sha-a", "val"), ("b.jpg", "sha-b", None)])

    diff = diff_versions(version(1), new)

    assert diff.moved_split == (SplitMove("a.jpg", "train", "val"),)  # b.jpg was only unassigned
    assert diff.to_json()["images"]["moved_split"] == [{"image": "a.jpg", "from": "train", "to": "val"}]
    assert "| a.jpg | train | val |" in diff.markdown()


def test_duplicate_boxes_are_matched_as_a_multiset() -> None:
    twice = [*BASE_BOXES, BASE_BOXES[0]]
    thrice = [*twice, BASE_BOXES[0]]

    assert diff_versions(version(1, boxes=twice), version(2, boxes=thrice)).boxes_added == 1
    assert diff_versions(version(1, boxes=thrice), version(2, boxes=twice)).boxes_removed == 1


def test_to_json_has_exactly_the_documented_shape_and_serialises() -> None:
    boxes = [("a.jpg", 1, 10, 10, 50, 50), *BASE_BOXES[1:], ("b.jpg", 0, 60, 60, 90, 90)]
    new = version(
        2, images=[("a.jpg", "sha-a", "val"), ("b.jpg", "sha-b2", "val"), ("c.jpg", "c", None)], boxes=boxes
    )

    document = diff_versions(version(1), new).to_json()

    assert set(document) == {"from", "to", "images", "boxes", "classes"}
    assert (document["from"], document["to"]) == (1, 2)
    assert {"added", "removed", "changed"} <= set(document["images"])
    assert {"added", "removed", "changed"} <= set(document["boxes"])
    assert document["images"]["added"] == ["c.jpg"]
    assert document["images"]["changed"] == ["b.jpg"]
    assert document["boxes"] == {"added": 1, "removed": 0, "changed": 1, "moved": 0, "relabelled": 1}
    assert document["classes"] == {"dog": 1}  # cat: -1 relabelled, +1 added
    assert json.loads(json.dumps(document)) == document
    assert all(type(value) is int for value in document["boxes"].values())


def test_markdown_mentions_the_counts_and_names() -> None:
    new = version(
        2,
        images=[("a.jpg", "sha-a", "train"), *((f"new_{i:02}.jpg", f"n{i}", None) for i in range(12))],
        boxes=BASE_BOXES[:2],
    )

    text = diff_versions(version(1), new).markdown()

    assert "**Version 1 → 2**" in text
    assert "| added | 12 | added | 0 |" in text
    assert "| removed | 1 | removed | 1 |" in text
    assert "`new_00.jpg`" in text and "`new_09.jpg`" in text and "`new_10.jpg`" not in text
    assert "and 2 more" in text
    assert "| cat | -1 |" in text


def test_from_nothing_to_something_and_back() -> None:
    empty = version(1, images=[], boxes=[], class_names=())
    full = version(2)

    grown = diff_versions(empty, full)
    assert grown.images_added == ("a.jpg", "b.jpg")
    assert (grown.boxes_added, grown.boxes_removed) == (3, 0)
    assert grown.class_deltas == {"cat": 2, "dog": 1}

    shrunk = diff_versions(full, replace(empty, number=3))
    assert shrunk.images_removed == ("a.jpg", "b.jpg")
    assert shrunk.boxes_removed == 3
    assert diff_versions(empty, replace(empty, number=2)).is_empty


def test_images_without_boxes_on_either_side() -> None:
    diff = diff_versions(version(1, boxes=[]), version(2, boxes=BASE_BOXES[2:]))

    assert (diff.boxes_added, diff.images_relabelled) == (1, ("b.jpg",))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image_sha256": ("only-one",)}, "sha256s"),
        ({"image_names": ("a.jpg", "a.jpg")}, "repeat"),
        ({"class_names": ("cat", "cat")}, "repeat"),
        ({"box_class": np.array([0, 1, 2])}, "box_class"),
        ({"box_xyxy": np.zeros((2, 4))}, "xyxy rows"),
    ],
)
def test_inconsistent_content_is_refused_with_the_version_named(
    change: dict[str, object], message: str
) -> None:
    base = version(7)
    with pytest.raises(ValueError, match=rf"version 7: .*{message}"):
        replace(base, **change)


def test_threshold_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError, match="iou_threshold"):
        diff_versions(version(1), version(2), iou_threshold=0.0)


def random_version(rng: np.random.Generator, images: int = 20_000, boxes: int = 100_000) -> VersionContent:
    xy = rng.uniform(0, 1000, size=(boxes, 2))
    wh = rng.uniform(10, 200, size=(boxes, 2))
    return VersionContent(
        number=1,
        class_names=tuple(f"class_{i}" for i in range(20)),
        image_names=tuple(f"images/{i:06}.jpg" for i in range(images)),
        image_sha256=tuple(f"{i:064x}" for i in range(images)),
        image_splits=tuple(rng.choice(["train", "val", "test"], size=images).tolist()),
        box_image=rng.integers(0, images, size=boxes),
        box_class=rng.integers(0, 20, size=boxes),
        box_xyxy=np.hstack([xy, xy + wh]),
    )


def keep_boxes(content: VersionContent, rows: np.ndarray, number: int = 2) -> VersionContent:
    return replace(
        content,
        number=number,
        box_image=content.box_image[rows],
        box_class=content.box_class[rows],
        box_xyxy=content.box_xyxy[rows],
    )


def test_at_scale_a_version_against_itself_or_its_shuffle_is_empty() -> None:
    rng = np.random.default_rng(0)
    old = random_version(rng)

    assert diff_versions(old, old).is_empty
    assert diff_versions(old, keep_boxes(old, rng.permutation(old.box_count))).is_empty


def test_at_scale_deleting_and_shifting_boxes_is_counted_exactly() -> None:
    rng = np.random.default_rng(1)
    old = random_version(rng)
    deleted = rng.choice(old.box_count, size=137, replace=False)
    fewer = keep_boxes(old, np.setdiff1d(np.arange(old.box_count), deleted))

    diff = diff_versions(old, fewer)
    assert (diff.boxes_removed, diff.boxes_added, diff.boxes_changed) == (137, 0, 0)
    assert len(diff.images_relabelled) == len(np.unique(old.box_image[deleted]))

    # one box per image nudged by a pixel (IoU ≥ 0.68 for boxes at least 10 px wide): changes, not swaps
    _, first_of_image = np.unique(old.box_image, return_index=True)
    nudged = rng.choice(first_of_image, size=500, replace=False)
    xyxy = old.box_xyxy.copy()
    xyxy[nudged] += 1.0
    diff = diff_versions(old, replace(old, number=2, box_xyxy=xyxy))
    assert (diff.boxes_changed, diff.boxes_moved, diff.boxes_added, diff.boxes_removed) == (500, 500, 0, 0)


def test_at_scale_renames_and_box_counts_stay_consistent() -> None:
    rng = np.random.default_rng(2)
    old = random_version(rng)
    renamed = set(rng.choice(len(old.image_names), size=300, replace=False).tolist())
    names = tuple(f"moved/{n}" if i in renamed else n for i, n in enumerate(old.image_names))
    dropped = rng.random(old.box_count) < 0.01
    new = keep_boxes(replace(old, image_names=names), np.flatnonzero(~dropped))

    diff = diff_versions(old, new)

    assert len(diff.images_renamed) == 300
    assert (diff.images_added, diff.images_removed) == ((), ())
    assert diff.boxes_removed == int(dropped.sum())
    assert diff.boxes_added == diff.boxes_changed == 0
    assert sum(diff.class_deltas.values()) == new.box_count - old.box_count


def sequential_greedy_counts(old: VersionContent, new: VersionContent, threshold: float) -> tuple[int, ...]:
    """The matching rule written the slow, obvious way: one image at a time, one candidate at a time."""

    def iou(a: Sequence[float], b: Sequence[float]) -> float:
        inter = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union

    def boxes_of(content: VersionContent, image: int) -> list[tuple[int, str, tuple[float, ...]]]:
        rows = np.flatnonzero(content.box_image == image).tolist()
        return [
            (r, content.class_names[content.box_class[r]], tuple(content.box_xyxy[r].tolist())) for r in rows
        ]

    added = removed = moved = relabelled = changed = 0
    new_index = {name: j for j, name in enumerate(new.image_names)}
    for i, name in enumerate(old.image_names):
        old_boxes = boxes_of(old, i)
        new_boxes = boxes_of(new, new_index[name])
        for box in list(old_boxes):  # identical boxes first, k-th copy with k-th copy
            twin = next((b for b in new_boxes if b[1:] == box[1:]), None)
            if twin is not None:
                old_boxes.remove(box)
                new_boxes.remove(twin)
        candidates = sorted(
            (o_cls != n_cls, -value, o, n, o_cls != n_cls, o_xyxy != n_xyxy)
            for o, o_cls, o_xyxy in old_boxes
            for n, n_cls, n_xyxy in new_boxes
            if (value := iou(o_xyxy, n_xyxy)) >= threshold
        )
        used_old: set[int] = set()
        used_new: set[int] = set()
        for _, _, o, n, other_class, other_place in candidates:
            if o not in used_old and n not in used_new:
                used_old.add(o)
                used_new.add(n)
                relabelled += other_class
                moved += other_place
                changed += other_class or other_place
        removed += len(old_boxes) - len(used_old)
        added += len(new_boxes) - len(used_new)
    return added, removed, changed, moved, relabelled


def crowded_version(rng: np.random.Generator, number: int) -> VersionContent:
    """Boxes on a coarse grid so that ties, duplicates and chains of overlaps are common."""
    images = [(f"{i}.jpg", f"sha-{i}", None) for i in range(3)]
    boxes: list[BoxRow] = []
    for _ in range(rng.integers(0, 12)):
        x, y = rng.integers(0, 5, size=2) * 10
        w, h = rng.integers(1, 4, size=2) * 10
        boxes.append((f"{rng.integers(0, 3)}.jpg", int(rng.integers(0, 2)), x, y, x + w, y + h))
    return version(number, images=images, boxes=boxes)


@pytest.mark.parametrize("seed", range(300))
def test_round_based_matching_equals_sequential_greedy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    old, new = crowded_version(rng, 1), crowded_version(rng, 2)
    threshold = float(rng.choice([0.3, 0.5, 0.7]))

    diff = diff_versions(old, new, iou_threshold=threshold)

    expected = sequential_greedy_counts(old, new, threshold)
    assert (
        diff.boxes_added,
        diff.boxes_removed,
        diff.boxes_changed,
        diff.boxes_moved,
        diff.boxes_relabelled,
    ) == (expected)
