"""One test per validation rule, plus the quarantine and strict policies and the near-duplicate search."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataset_pipeline.domain.model import (
    AttributeValue,
    BoxFormat,
    DatasetFormat,
    ImageFacts,
    Issue,
    LabelState,
    ParsedDataset,
    Severity,
    SourceBox,
    SourceImage,
)
from dataset_pipeline.domain.validation import (
    ValidationOutcome,
    _hamming_pairs,
    find_duplicates,
    near_duplicate_groups,
    summarize_markdown,
    validate,
)

CLASSES = ["cat", "dog", "bird"]


def facts_for(
    path: str,
    width: int = 200,
    height: int = 100,
    *,
    sha256: str | None = None,
    dhash: int | None = None,
    orientation: int = 1,
    issues: Sequence[Issue] = (),
) -> ImageFacts:
    # Default hashes are random-looking, so tests only see the near duplicates they build on purpose.
    default_hash = int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big", signed=True)
    return ImageFacts(
        path=path,
        sha256=sha256 or f"sha-{path}",
        size_bytes=1000,
        format="JPEG",
        width=width,
        height=height,
        mode="RGB",
        exif_orientation=orientation,
        dhash=default_hash if dhash is None else dhash,
        issues=tuple(issues),
    )


def xyxy(
    cls: int, coords: tuple[float, float, float, float], file: str, line: int = 1, **attrs: AttributeValue
) -> SourceBox:
    return SourceBox(cls, coords, BoxFormat.XYXY_PIXELS, file, line=line, attributes=dict(attrs))


def labelled(
    path: str,
    *boxes: SourceBox,
    split: str | None = "train",
    declared_width: int | None = None,
    declared_height: int | None = None,
) -> SourceImage:
    return SourceImage(
        path,
        split,
        LabelState.LABELLED,
        list(boxes),
        label_file=path.rsplit(".", 1)[0] + ".txt",
        declared_width=declared_width,
        declared_height=declared_height,
    )


def dataset(*images: SourceImage, issues: Sequence[Issue] = ()) -> ParsedDataset:
    return ParsedDataset(DatasetFormat.YOLO, "ultralytics", list(CLASSES), list(images), list(issues))


def codes(outcome: ValidationOutcome, severity: Severity | None = None) -> list[str]:
    return [i.code for i in outcome.issues if severity is None or i.severity is severity]


def run(*images: SourceImage, facts: dict[str, ImageFacts] | None = None, **kwargs: Any) -> ValidationOutcome:
    if facts is None:
        facts = {image.path: facts_for(image.path) for image in images}
    return validate(dataset(*images), facts, **kwargs)


def test_parser_and_image_check_issues_are_collected_and_charge_their_image() -> None:
    parser_issue = Issue(Severity.ERROR, "yolo.bad_line", "a.txt", "5 fields expected", line=3, image="a.jpg")
    decode_issue = Issue(Severity.ERROR, "image.corrupt", "b.jpg", "cannot decode")
    images = [
        labelled("a.jpg", xyxy(0, (0, 0, 10, 10), "a.txt")),
        labelled("b.jpg", xyxy(0, (0, 0, 10, 10), "b.txt")),
    ]
    facts = {"a.jpg": facts_for("a.jpg"), "b.jpg": facts_for("b.jpg", issues=[decode_issue])}

    outcome = validate(dataset(*images, issues=[parser_issue]), facts)

    assert outcome.issues[:2] == [parser_issue, decode_issue]
    assert outcome.quarantined == ["a.jpg", "b.jpg"]
    assert outcome.images[0].reasons == ["yolo.bad_line"]


def test_missing_image_is_an_error_and_quarantined() -> None:
    image = labelled("gone.jpg", xyxy(0, (0, 0, 10, 10), "gone.txt"))
    outcome = run(image, facts={})
    (issue,) = [i for i in outcome.issues if i.code == "image.missing"]
    assert issue.severity is Severity.ERROR and issue.file == "gone.txt" and issue.image == "gone.jpg"
    assert outcome.quarantined == ["gone.jpg"] and outcome.usable_images == []


def test_boxes_become_upright_pixels_and_keep_attributes() -> None:
    yolo = SourceBox(1, (0.5, 0.5, 0.2, 0.4), BoxFormat.CXCYWH_NORMALIZED, "a.txt", line=1)
    voc = xyxy(2, (10, 20, 30, 40), "a.txt", line=2, difficult=True, pose="Left")
    outcome = run(labelled("a.jpg", yolo, voc), facts={"a.jpg": facts_for("a.jpg", 200, 100)})

    first, second = outcome.images[0].boxes
    assert (first.class_index, first.x_min, first.y_min, first.x_max, first.y_max) == pytest.approx(
        (1, 80, 30, 120, 70)
    )
    assert (second.x_min, second.y_min, second.x_max, second.y_max) == (10, 20, 30, 40)
    assert second.attributes == {"difficult": True, "pose": "Left"}
    assert codes(outcome, Severity.ERROR) == []


def test_boxes_within_tolerance_are_clipped_with_an_info_count() -> None:
    box = xyxy(0, (-1.5, 0, 201, 100.5), "a.txt")
    outcome = run(labelled("a.jpg", box), clip_tolerance_px=2.0)

    (kept,) = outcome.images[0].boxes
    assert (kept.x_min, kept.y_min, kept.x_max, kept.y_max) == (0, 0, 200, 100)
    assert outcome.clipped_boxes == 1
    (info,) = [i for i in outcome.issues if i.code == "box.clipped"]
    assert info.severity is Severity.INFO and info.file == "" and "1 boxes" in info.message
    assert outcome.quarantined == []


def test_box_beyond_tolerance_is_an_error_and_quarantines_the_whole_image() -> None:
    good = xyxy(0, (0, 0, 50, 50), "a.txt", line=1)
    bad = xyxy(1, (150, 0, 215, 50), "a.txt", line=2)
    outcome = run(labelled("a.jpg", good, bad), labelled("b.jpg", xyxy(0, (0, 0, 9, 9), "b.txt")))

    (issue,) = [i for i in outcome.issues if i.code == "box.out_of_bounds"]
    assert (issue.severity, issue.file, issue.line, issue.image) == (Severity.ERROR, "a.txt", 2, "a.jpg")
    assert "15.0 px outside" in issue.message
    assert outcome.quarantined == ["a.jpg"]
    assert [image.path for image in outcome.usable_images] == ["b.jpg"]  # the good box leaves with its image


def test_degenerate_box_after_clipping_is_an_error() -> None:
    thin = xyxy(0, (10, 10, 10.5, 60), "a.txt", line=1)
    inverted = xyxy(0, (50, 60, 40, 70), "a.txt", line=2)
    sliver = xyxy(0, (199.5, 0, 201, 50), "a.txt", line=3)  # 0.5 px wide once clipped to the edge
    outcome = run(labelled("a.jpg", thin, inverted, sliver), min_box_px=1.0)

    flagged = [(i.code, i.file, i.line) for i in outcome.issues if i.severity is Severity.ERROR]
    assert flagged == [("box.degenerate", "a.txt", n) for n in (1, 2, 3)]
    assert outcome.images[0].quarantined


def test_unknown_class_and_non_finite_coordinates_are_errors() -> None:
    outcome = run(
        labelled("a.jpg", xyxy(7, (0, 0, 10, 10), "a.txt", 1), xyxy(0, (0, float("nan"), 10, 10), "a.txt", 2))
    )
    located = sorted((i.code, i.file, i.line) for i in outcome.issues if i.severity is Severity.ERROR)
    assert located == [("box.not_finite", "a.txt", 2), ("box.unknown_class", "a.txt", 1)]


def test_exact_duplicate_boxes_warn_and_keep_one() -> None:
    box = xyxy(0, (10, 10, 50, 50), "a.txt", line=1)
    copy = xyxy(0, (10, 10, 50, 50 + 1e-9), "a.txt", line=2)
    other_class = xyxy(1, (10, 10, 50, 50), "a.txt", line=3)
    outcome = run(
        labelled("a.jpg", box, copy, other_class), labelled("b.jpg", xyxy(0, (10, 10, 50, 50), "b.txt"))
    )

    (issue,) = [i for i in outcome.issues if i.code == "box.duplicate"]
    assert (issue.severity, issue.file, issue.line, issue.image) == (Severity.WARNING, "a.txt", 2, "a.jpg")
    assert [b.class_index for b in outcome.images[0].boxes] == [0, 1]
    assert len(outcome.images[1].boxes) == 1  # the same box on another image is no duplicate
    assert outcome.quarantined == []


def test_declared_size_mismatch_names_both_sizes() -> None:
    image = labelled("a.jpg", xyxy(0, (0, 0, 10, 10), "a.txt"), declared_width=640, declared_height=480)
    outcome = run(image, facts={"a.jpg": facts_for("a.jpg", 200, 100)})
    (issue,) = [i for i in outcome.issues if i.code == "image.size_mismatch"]
    assert issue.severity is Severity.ERROR and "640x480" in issue.message and "200x100" in issue.message
    assert "EXIF" not in issue.message
    assert outcome.quarantined == ["a.jpg"]


def test_declared_raw_size_points_at_exif_orientation() -> None:
    image = labelled("a.jpg", xyxy(0, (0, 0, 10, 10), "a.txt"), declared_width=100, declared_height=200)
    outcome = run(image, facts={"a.jpg": facts_for("a.jpg", 200, 100, orientation=6)})
    (issue,) = [i for i in outcome.issues if i.code == "image.size_mismatch"]
    assert "EXIF orientation 6" in issue.message


def test_matching_declared_size_is_fine() -> None:
    image = labelled("a.jpg", xyxy(0, (0, 0, 10, 10), "a.txt"), declared_width=200, declared_height=100)
    assert "image.size_mismatch" not in codes(run(image))


def test_unlabelled_images_warn_and_are_excluded_but_background_is_kept() -> None:
    unlabelled = SourceImage("u.jpg", "train", LabelState.UNLABELLED)
    background = SourceImage("bg.jpg", "train", LabelState.BACKGROUND, label_file="bg.txt")
    outcome = run(unlabelled, background)

    (issue,) = [i for i in outcome.issues if i.code == "image.unlabelled"]
    assert issue.severity is Severity.WARNING and issue.image == "u.jpg"
    assert [image.path for image in outcome.usable_images] == ["bg.jpg"]
    assert outcome.quarantined == []  # excluded, not quarantined: nothing is wrong with it


def test_exact_duplicate_images_warn_with_their_group() -> None:
    images = [
        SourceImage(p, None, LabelState.BACKGROUND, label_file=p + ".txt")
        for p in ("a.jpg", "b.jpg", "c.jpg")
    ]
    facts = {
        "a.jpg": facts_for("a.jpg", sha256="same", dhash=1),
        "b.jpg": facts_for("b.jpg"),
        "c.jpg": facts_for("c.jpg", sha256="same", dhash=1),
    }
    outcome = run(*images, facts=facts)

    (issue,) = [i for i in outcome.issues if i.code == "image.duplicate"]
    assert issue.severity is Severity.WARNING and "a.jpg, c.jpg" in issue.message
    assert outcome.exact_duplicate_groups == [["a.jpg", "c.jpg"]]
    assert outcome.near_duplicate_groups == []
    assert outcome.duplicate_groups == [["a.jpg", "c.jpg"]]


def test_near_duplicates_within_hamming_distance_are_grouped() -> None:
    base = 0x0F0F_0F0F_0F0F_0F0F
    hashes = {
        "a.jpg": base,
        "b.jpg": base ^ 0b1111,  # 4 bits from a
        "c.jpg": base ^ (0b1111 << 40) ^ 0b1111,  # 4 bits from b, 8 from a: joined through b
        "d.jpg": base ^ 0b11111,  # 5 bits from a, 1 from b
        "e.jpg": ~base & ((1 << 63) - 1),  # far from everything
        "f.jpg": -1,  # signed int64, as stored in PostgreSQL
    }
    images = [SourceImage(p, None, LabelState.BACKGROUND, label_file=p + ".txt") for p in hashes]
    facts = {p: facts_for(p, dhash=h) for p, h in hashes.items()}
    facts["g.jpg"] = facts_for("g.jpg", sha256=facts["a.jpg"].sha256, dhash=base)
    images.append(SourceImage("g.jpg", None, LabelState.BACKGROUND, label_file="g.txt"))

    outcome = run(*images, facts=facts, near_duplicate_distance=4)

    assert outcome.near_duplicate_groups == [["a.jpg", "b.jpg", "c.jpg", "d.jpg", "g.jpg"]]
    assert outcome.exact_duplicate_groups == [["a.jpg", "g.jpg"]]
    assert outcome.duplicate_groups == [["a.jpg", "b.jpg", "c.jpg", "d.jpg", "g.jpg"]]
    (issue,) = [i for i in outcome.issues if i.code == "image.near_duplicate"]
    assert issue.severity is Severity.WARNING
    assert run(*images, facts=facts, near_duplicate_distance=-1).near_duplicate_groups == []


def test_near_duplicate_groups_by_key_accepts_signed_hashes() -> None:
    hashes = {"x": -1, "y": -1 ^ 0b11, "z": 0, "w": 0b1, "v": 0x00FF_00FF_00FF_00FF}
    assert near_duplicate_groups(hashes, 2) == [["w", "z"], ["x", "y"]]
    assert near_duplicate_groups(hashes, 1) == [["w", "z"]]
    assert near_duplicate_groups(hashes, -1) == []


def _brute_force_pairs(hashes: np.ndarray, distance: int) -> list[tuple[int, int]]:
    values = [int(h) for h in hashes.astype(np.uint64)]
    return [
        (i, j)
        for i in range(len(values))
        for j in range(i + 1, len(values))
        if (values[i] ^ values[j]).bit_count() <= distance
    ]


@settings(max_examples=40, deadline=None)
@given(
    seeds=st.lists(st.integers(0, (1 << 64) - 1), min_size=2, max_size=40),
    flips=st.lists(st.integers(0, 63), max_size=200),
    distance=st.integers(0, 10),
)
def test_banded_search_finds_exactly_the_brute_force_pairs(
    seeds: list[int], flips: list[int], distance: int
) -> None:
    # Clustered hashes: each seed plus variants a few bit flips away, so there are pairs to find.
    values = list(seeds)
    for n, bit in enumerate(flips):
        values.append(values[n % len(values)] ^ (1 << bit))
    hashes = np.array(values, dtype=np.uint64)
    assert _hamming_pairs(hashes, distance).tolist() == [
        list(p) for p in _brute_force_pairs(hashes, distance)
    ]


def test_near_duplicate_search_scales_to_100k_images() -> None:
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=100_000, dtype=np.int64)
    hashes[:100] = hashes[100:200] ^ 0b101  # 100 planted pairs, 2 bits apart
    facts = [facts_for(f"{i}.jpg", dhash=int(h)) for i, h in enumerate(hashes)]

    exact, near = find_duplicates(facts, 4)

    assert exact == [] and len(near) == 100
    assert all(any(f"{i}.jpg" in group and f"{i + 100}.jpg" in group for group in near) for i in range(100))
    # its speed is measured by `make bench` (validation), not asserted here


def _class_boxes(path: str, sizes: Sequence[tuple[int, float, float]]) -> SourceImage:
    boxes = [xyxy(c, (0, 0, w, h), path + ".txt", line=n + 1) for n, (c, w, h) in enumerate(sizes)]
    return labelled(path, *boxes)


def test_box_far_from_its_class_distribution_is_a_statistical_outlier() -> None:
    rng = np.random.default_rng(1)
    normal = [(0, float(w), float(w)) for w in rng.uniform(18, 22, size=30)]
    images = [_class_boxes(f"{n}.jpg", [size]) for n, size in enumerate(normal)]
    images.append(_class_boxes("huge.jpg", [(0, 190.0, 95.0)]))
    images += [_class_boxes(f"d{n}.jpg", [(1, 20, 20)]) for n in range(5)]  # too few for outliers
    images.append(_class_boxes("dog-huge.jpg", [(1, 190.0, 95.0)]))
    facts = {image.path: facts_for(image.path, 200, 100) for image in images}
    outcome = run(*images, facts=facts)

    (issue,) = [i for i in outcome.issues if i.code == "stats.box_outlier"]
    assert issue.severity is Severity.WARNING and issue.image == "huge.jpg" and issue.file == "huge.jpg.txt"
    assert issue.line == 1
    assert "area" in issue.message and "aspect ratio" in issue.message
    assert outcome.quarantined == []


def test_classes_with_few_samples_and_imbalance_are_dataset_warnings() -> None:
    images = [_class_boxes(f"{n}.jpg", [(0, 20, 20)]) for n in range(102)]
    images += [_class_boxes(f"d{n}.jpg", [(1, 20, 20)]) for n in range(2)]
    facts = {image.path: facts_for(image.path) for image in images}
    outcome = run(*images, facts=facts)

    few = [i for i in outcome.issues if i.code == "stats.few_samples"]
    assert [("'dog'" in i.message, "'bird'" in i.message) for i in few] == [(True, False), (False, True)]
    assert all(i.file == "" and i.severity is Severity.WARNING for i in few)
    (imbalance,) = [i for i in outcome.issues if i.code == "stats.imbalance"]
    assert imbalance.file == "" and "51:1" in imbalance.message


def test_statistics_ignore_quarantined_boxes() -> None:
    images = [_class_boxes(f"{n}.jpg", [(0, 20, 20)]) for n in range(5)]
    images.append(
        labelled("bad.jpg", xyxy(1, (0, 0, 20, 20), "bad.txt"), xyxy(1, (0, 0, 500, 20), "bad.txt", 2))
    )
    outcome = run(*images)
    assert any(i.code == "stats.few_samples" and "'dog' has 0" in i.message for i in outcome.issues)


def test_errors_not_charged_to_an_image_quarantine_nothing() -> None:
    issues = [
        Issue(Severity.ERROR, "yolo.orphan_label", "labels/ghost.txt", "no image for this label file"),
        Issue(Severity.ERROR, "dataset.bad_yaml", "", "names is not a list"),
        Issue(
            Severity.ERROR, "coco.bad_annotation", "instances.json", "bbox has 3 numbers", annotation_id="9"
        ),
    ]
    shared = [
        SourceImage(
            p, "train", LabelState.LABELLED, [xyxy(0, (0, 0, 9, 9), "instances.json")], "instances.json"
        )
        for p in ("a.jpg", "b.jpg")
    ]
    outcome = validate(dataset(*shared, issues=issues), {p: facts_for(p) for p in ("a.jpg", "b.jpg")})
    assert outcome.quarantined == [] and len(outcome.usable_images) == 2 and not outcome.failed


def test_error_in_an_images_own_label_file_quarantines_it() -> None:
    issue = Issue(Severity.ERROR, "yolo.bad_line", "a.txt", "class id is not a number", line=2)
    images = [
        labelled("a.jpg", xyxy(0, (0, 0, 9, 9), "a.txt")),
        labelled("b.jpg", xyxy(0, (0, 0, 9, 9), "b.txt")),
    ]
    outcome = validate(
        dataset(*images, issues=[issue]), {image.path: facts_for(image.path) for image in images}
    )
    assert outcome.quarantined == ["a.jpg"]
    assert outcome.error_share == 0.5


def test_strict_policy_fails_on_any_error() -> None:
    images = [
        labelled("a.jpg", xyxy(0, (0, 0, 900, 9), "a.txt")),
        labelled("b.jpg", xyxy(0, (0, 0, 9, 9), "b.txt")),
    ]
    strict = run(*images, policy="strict")
    assert strict.failed and strict.usable_images == []
    relaxed = run(*images)
    assert not relaxed.failed and [image.path for image in relaxed.usable_images] == ["b.jpg"]
    assert not run(images[1], policy="strict").failed


def test_counts_and_markdown_summary() -> None:
    images = [
        labelled("a.jpg", xyxy(0, (0, 0, 900, 9), "a.txt")),
        labelled("b.jpg", xyxy(0, (0, 0, 9, 9), "b.txt")),
        SourceImage("u.jpg", None, LabelState.UNLABELLED),
    ]
    outcome = run(*images)

    assert outcome.counts_by_severity() == {"error": 1, "warning": 4, "info": 0}
    assert outcome.counts_by_code() == {"box.out_of_bounds": 1, "image.unlabelled": 1, "stats.few_samples": 3}
    assert outcome.error_share == pytest.approx(1 / 3)
    text = summarize_markdown(outcome, max_problems=2)
    assert "1 quarantined (33.3%)" in text
    assert "| `box.out_of_bounds` | error | 1 |" in text
    assert "- error `box.out_of_bounds` at `a.txt:1`" in text
    assert "First 2 of 5 problems" in text and text.count("\n- ") == 2
