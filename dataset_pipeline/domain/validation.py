"""Dataset-level validation rules and the quarantine policy.

Parsers and the image check each report what they can see alone; the rules here need the whole upload (boxes
against decoded image sizes, duplicates across files, class statistics). The policy then decides what a model
may learn from: an image with any error leaves whole, because dropping only its bad box would teach the model
that the object in that box is background.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from dataset_pipeline.domain.model import (
    Box,
    BoxFormat,
    ImageFacts,
    Issue,
    LabelState,
    ParsedDataset,
    Severity,
    SourceBox,
    SourceImage,
)
from dataset_pipeline.domain.splitting import merge_groups

Policy = Literal["quarantine", "strict"]

#: EXIF orientations that swap width and height.
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
#: Boxes whose pixel coordinates agree to this many decimals count as the same box.
_DUPLICATE_DECIMALS = 6
#: Statistical anomaly thresholds (Datumaro-style).
OUTLIER_Z = 3.0
OUTLIER_MIN_BOXES = 10
FEW_SAMPLES = 5
IMBALANCE_RATIO = 50.0
_UINT64 = (1 << 64) - 1
#: How many paths an issue about a group names before it says "and N more".
_SHOWN = 10


@dataclass(slots=True)
class ValidatedImage:
    """An image after validation; `boxes` are in pixels of the upright image, `reasons` are error codes."""

    path: str
    split: str | None
    label_state: LabelState
    boxes: list[Box]
    facts: ImageFacts | None
    quarantined: bool = False
    reasons: list[str] = field(default_factory=list)
    label_file: str | None = None
    source_id: str | None = None

    @property
    def width(self) -> int:
        return self.facts.width if self.facts is not None else 0

    @property
    def height(self) -> int:
        return self.facts.height if self.facts is not None else 0

    @property
    def usable(self) -> bool:
        """Not quarantined and looked at by someone: unlabelled images would teach "nothing here"."""
        return not self.quarantined and self.label_state is not LabelState.UNLABELLED


@dataclass(slots=True)
class ValidationOutcome:
    """Every finding, every image with its verdict, and the duplicate groups splitting must keep together."""

    issues: list[Issue]
    images: list[ValidatedImage]
    class_names: list[str]
    #: Disjoint groups of images that are the same picture (exact or near); splitting keeps each in one split.
    duplicate_groups: list[list[str]] = field(default_factory=list)
    exact_duplicate_groups: list[list[str]] = field(default_factory=list)
    near_duplicate_groups: list[list[str]] = field(default_factory=list)
    policy: Policy = "quarantine"
    failed: bool = False
    clipped_boxes: int = 0

    @property
    def usable_images(self) -> list[ValidatedImage]:
        return [] if self.failed else [image for image in self.images if image.usable]

    @property
    def quarantined(self) -> list[str]:
        return [image.path for image in self.images if image.quarantined]

    @property
    def error_share(self) -> float:
        """Quarantined images / all images: the number to alert on (`GateDecision` says the same)."""
        return error_share(len(self.quarantined), len(self.images))

    def counts_by_severity(self) -> dict[str, int]:
        counts = Counter(issue.severity.value for issue in self.issues)
        return {severity.value: counts.get(severity.value, 0) for severity in Severity}

    def counts_by_code(self) -> dict[str, int]:
        return dict(sorted(Counter(issue.code for issue in self.issues).items()))


def _shown(paths: Sequence[str]) -> str:
    head = ", ".join(paths[:_SHOWN])
    return head + (f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else "")


def _known_size(facts: ImageFacts | None) -> bool:
    return facts is not None and facts.width > 0 and facts.height > 0


def _upright_size(facts: ImageFacts | None) -> tuple[int, int]:
    return (facts.width, facts.height) if facts is not None and _known_size(facts) else (0, 0)


def _image_issues(image: SourceImage, facts: ImageFacts | None) -> list[Issue]:
    """Rules that need one image's labels and its decoded facts."""
    label_file = image.label_file or image.path
    if facts is None:
        return [
            Issue(
                Severity.ERROR,
                "image.missing",
                label_file,
                f"{image.path} is referenced by the labels but is not in the upload; "
                "add the image or remove its labels.",
                image=image.path,
            )
        ]
    found: list[Issue] = []
    if not _known_size(facts) and facts.usable:
        found.append(
            Issue(
                Severity.ERROR,
                "image.size_unknown",
                image.path,
                f"the size of {image.path} could not be read, so its boxes cannot be checked; "
                "re-save the image.",
                image=image.path,
            )
        )
    declared = (image.declared_width, image.declared_height)
    upright = (facts.width, facts.height)
    if _known_size(facts) and None not in declared and declared != upright:
        raw = (facts.height, facts.width) if facts.exif_orientation in _TRANSPOSING_ORIENTATIONS else upright
        message = (
            f"the labels declare {declared[0]}x{declared[1]} for {image.path} "
            f"but the image is {upright[0]}x{upright[1]} (upright)"
        )
        if declared == raw and raw != upright:
            message += (
                f"; {declared[0]}x{declared[1]} is its size before EXIF orientation {facts.exif_orientation} "
                "is applied, so the boxes were likely drawn on the un-rotated image. Re-annotate the upright "
                "image, or save the image rotated with the EXIF orientation removed."
            )
        else:
            message += "; the labels belong to another version of this image: re-export them with this one."
        found.append(Issue(Severity.ERROR, "image.size_mismatch", label_file, message, image=image.path))
    if image.label_state is LabelState.UNLABELLED:
        found.append(
            Issue(
                Severity.WARNING,
                "image.unlabelled",
                image.path,
                f"{image.path} has no label file or entry, so it is left out of training; add an empty label "
                "file if it truly shows no object (a background image).",
                image=image.path,
            )
        )
    return found


@dataclass(slots=True)
class _BoxCheck:
    """Flat arrays over every box of the upload, so the geometry rules run once in numpy."""

    sources: list[SourceBox]
    image_of: np.ndarray  # (n,) index into parsed.images
    xyxy: np.ndarray  # (n, 4) pixels, clipped where within tolerance
    keep: np.ndarray  # (n,) passes every rule and is not a repeat
    issues: list[Issue]
    clipped: int
    clipped_images: int


def _check_boxes(
    parsed: ParsedDataset,
    facts: Mapping[str, ImageFacts],
    clip_tolerance_px: float,
    min_box_px: float,
) -> _BoxCheck:
    images = parsed.images
    sources = [box for image in images for box in image.boxes]
    counts = np.fromiter((len(image.boxes) for image in images), dtype=np.int64, count=len(images))
    image_of = np.repeat(np.arange(len(images)), counts)
    sizes = np.array([_upright_size(facts.get(image.path)) for image in images], dtype=np.float64).reshape(
        -1, 2
    )
    coords = np.array([box.coords for box in sources], dtype=np.float64).reshape(-1, 4)
    classes = np.fromiter((box.class_index for box in sources), dtype=np.int64, count=len(sources))
    normalized = np.fromiter(
        (box.coords_format is BoxFormat.CXCYWH_NORMALIZED for box in sources), dtype=bool, count=len(sources)
    )

    width = sizes[image_of, 0]
    height = sizes[image_of, 1]
    known = (width > 0) & (height > 0)
    xyxy = coords.copy()
    cx, cy, w, h = (coords[normalized, k] for k in range(4))
    wn, hn = width[normalized], height[normalized]
    xyxy[normalized] = np.stack(
        [(cx - w / 2) * wn, (cy - h / 2) * hn, (cx + w / 2) * wn, (cy + h / 2) * hn], 1
    )

    finite = np.isfinite(xyxy).all(axis=1)
    with np.errstate(invalid="ignore"):
        overshoot = np.max(
            np.stack(
                [-xyxy[:, 0], -xyxy[:, 1], xyxy[:, 2] - width, xyxy[:, 3] - height, np.zeros(len(xyxy))], 1
            ),
            axis=1,
        )
    bad_class = (classes < 0) | (classes >= len(parsed.class_names))
    checked = known & ~bad_class
    not_finite = checked & ~finite
    out_of_bounds = checked & finite & (overshoot > clip_tolerance_px)
    in_bounds = checked & finite & ~out_of_bounds
    clipped = in_bounds & (overshoot > 0)
    limits = np.stack([width, height, width, height], 1)
    xyxy[in_bounds] = np.clip(xyxy[in_bounds], 0, limits[in_bounds])
    degenerate = in_bounds & ((xyxy[:, 2] - xyxy[:, 0] < min_box_px) | (xyxy[:, 3] - xyxy[:, 1] < min_box_px))
    valid = in_bounds & ~degenerate

    # Repeats: the same class and coordinates on one image, found with one lexicographic sort.
    candidates = np.nonzero(valid)[0]
    rounded = np.round(xyxy[candidates], _DUPLICATE_DECIMALS)
    order = np.lexsort((*rounded.T[::-1], classes[candidates], image_of[candidates]))
    keys = np.column_stack([image_of[candidates], classes[candidates], rounded])[order]
    repeat_sorted = np.zeros(len(order), dtype=bool)
    if len(order) > 1:
        repeat_sorted[1:] = (keys[1:] == keys[:-1]).all(axis=1)
    duplicate = np.zeros(len(sources), dtype=bool)
    duplicate[candidates[order[repeat_sorted]]] = True  # lexsort is stable: the first box of a run is kept

    issues: list[Issue] = []
    names = parsed.class_names

    def box_issue(index: int, severity: Severity, code: str, message: str) -> None:
        box = sources[index]
        issues.append(
            Issue(
                severity,
                code,
                box.source_file,
                message,
                line=box.line,
                annotation_id=box.annotation_id,
                image=images[image_of[index]].path,
            )
        )

    for index in np.nonzero(bad_class)[0].tolist():
        box_issue(
            index,
            Severity.ERROR,
            "box.unknown_class",
            f"class index {classes[index]} is not one of the {len(names)} classes "
            f"(0..{len(names) - 1}); fix the class id or add the class to the class list.",
        )
    for index in np.nonzero(not_finite)[0].tolist():
        box_issue(
            index,
            Severity.ERROR,
            "box.not_finite",
            f"box coordinates {sources[index].coords} are not all finite numbers; fix or delete the box.",
        )
    for index in np.nonzero(out_of_bounds)[0].tolist():
        x0, y0, x1, y1 = xyxy[index].tolist()
        box_issue(
            index,
            Severity.ERROR,
            "box.out_of_bounds",
            f"box ({x0:.1f}, {y0:.1f}, {x1:.1f}, {y1:.1f}) px reaches {overshoot[index]:.1f} px outside the "
            f"{int(width[index])}x{int(height[index])} image (tolerance {clip_tolerance_px:g} px); "
            "the labels may belong to another image size: correct the box.",
        )
    for index in np.nonzero(degenerate)[0].tolist():
        x0, y0, x1, y1 = xyxy[index].tolist()
        box_issue(
            index,
            Severity.ERROR,
            "box.degenerate",
            f"box ({x0:.1f}, {y0:.1f}, {x1:.1f}, {y1:.1f}) px is {x1 - x0:.2f}x{y1 - y0:.2f} px, under the "
            f"{min_box_px:g} px minimum; delete it or draw it around the object.",
        )
    for index in np.nonzero(duplicate)[0].tolist():
        box_issue(
            index,
            Severity.WARNING,
            "box.duplicate",
            f"box of class {names[classes[index]]!r} repeats another box on the same image exactly; "
            "only one is kept. Delete the copy in the labels.",
        )

    n_clipped = int(clipped.sum())
    clipped_images = int(np.unique(image_of[clipped]).size)
    if n_clipped:
        where = [sources[i] for i in np.nonzero(clipped)[0][:5].tolist()]
        shown = ", ".join(f"{box.source_file}:{box.line}" if box.line else box.source_file for box in where)
        issues.append(
            Issue(
                Severity.INFO,
                "box.clipped",
                "",
                f"{n_clipped} boxes on {clipped_images} images reached up to "
                f"{overshoot[clipped].max():.2f} px past the image edge (tolerance {clip_tolerance_px:g} px) "
                f"and were clipped to it (e.g. {shown}).",
            )
        )
    return _BoxCheck(sources, image_of, xyxy, valid & ~duplicate, issues, n_clipped, clipped_images)


def _hamming_pairs(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Index pairs (i < j, sorted, shape (k, 2)) of 64-bit hashes at most `max_distance` bits apart.

    Pigeonhole: cut the hash into `max_distance + 1` bands; two hashes that close agree on at least one band
    exactly, so only hashes sharing a band value are compared. Within a band, hashes are sorted by the band
    value and compared with their 1st, 2nd, ... neighbour while any neighbour still shares it, so the work
    is the number of candidate pairs (hashes sharing a band), not n².
    """
    n = len(hashes)
    if n < 2 or max_distance < 0:
        return np.empty((0, 2), dtype=np.int64)
    values = np.asarray(hashes, dtype=np.uint64)
    n_bands = min(max_distance + 1, 64)
    edges = np.linspace(0, 64, n_bands + 1).astype(np.uint64)
    found: list[np.ndarray] = []
    for start, stop in itertools.pairwise(edges):
        band = (values >> start) & np.uint64((1 << int(stop - start)) - 1)
        order = np.argsort(band, kind="stable")
        sorted_band = band[order]
        active = np.nonzero(sorted_band[:-1] == sorted_band[1:])[0]
        step = 1
        while active.size:
            left, right = order[active], order[active + step]
            close = np.bitwise_count(values[left] ^ values[right]) <= max_distance
            found.append(np.stack([np.minimum(left, right)[close], np.maximum(left, right)[close]], axis=1))
            step += 1
            active = active[active + step < n]
            active = active[sorted_band[active] == sorted_band[active + step]]
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found).astype(np.int64), axis=0)


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component label (the smallest member index) per node, by min-label propagation in numpy."""
    labels = np.arange(n)
    if not len(pairs):
        return labels
    left, right = pairs[:, 0], pairs[:, 1]
    while True:
        lowest = np.minimum(labels[left], labels[right])
        updated = labels.copy()
        np.minimum.at(updated, left, lowest)
        np.minimum.at(updated, right, lowest)
        updated = updated[updated]  # pointer jumping: labels only ever point to smaller indices
        if np.array_equal(updated, labels):
            return labels
        labels = updated


def near_duplicate_groups(hashes: Mapping[str, int], max_distance: int) -> list[list[str]]:
    """Groups of keys whose 64-bit dHashes (signed or unsigned) are within `max_distance` bits, chained
    transitively: only groups of two or more, each sorted, ordered by first key. Negative distance: none.
    """
    if max_distance < 0 or len(hashes) < 2:
        return []
    by_hash: dict[int, list[str]] = defaultdict(list)
    for key, dhash in hashes.items():
        by_hash[dhash & _UINT64].append(key)
    unique = list(by_hash)
    labels = _components(len(unique), _hamming_pairs(np.array(unique, dtype=np.uint64), max_distance))
    members: dict[int, list[str]] = defaultdict(list)
    for label, dhash in zip(labels.tolist(), unique, strict=True):
        members[label].extend(by_hash[dhash])
    return sorted((sorted(keys) for keys in members.values() if len(keys) > 1), key=lambda g: g[0])


def find_duplicates(
    facts: Sequence[ImageFacts], near_duplicate_distance: int
) -> tuple[list[list[str]], list[list[str]]]:
    """Exact duplicate groups (same sha256) and near-duplicate groups (dHash within the distance).

    Near duplicates are searched among distinct contents; a near group then takes in the exact copies of its
    members, so each copy of a picture shows up in one near group.
    """
    by_sha: dict[str, list[str]] = defaultdict(list)
    for fact in facts:
        by_sha[fact.sha256].append(fact.path)
    exact = sorted((sorted(paths) for paths in by_sha.values() if len(paths) > 1), key=lambda g: g[0])

    dhash_of = {fact.path: fact.dhash for fact in facts}
    copies = {min(paths): paths for paths in by_sha.values()}
    hashes = {path: dhash for path in copies if (dhash := dhash_of[path]) is not None}
    near = [
        sorted(copy for path in group for copy in copies[path])
        for group in near_duplicate_groups(hashes, near_duplicate_distance)
    ]
    return exact, sorted(near, key=lambda g: g[0])


#: Findings about the dataset as a whole that a changed image can move (see `duplicate_issues`).
DUPLICATE_CODES = ("image.duplicate", "image.near_duplicate")


def duplicate_issues(facts: Sequence[ImageFacts], near_duplicate_distance: int) -> list[Issue]:
    """Warnings for exact and near-duplicate groups among the images (their sha256 and dHash)."""
    exact, near = find_duplicates(facts, near_duplicate_distance)
    return _duplicate_issues(exact, near, {fact.path: fact.sha256 for fact in facts})


def _duplicate_issues(
    exact: list[list[str]], near: list[list[str]], sha_of: Mapping[str, str]
) -> list[Issue]:
    issues = [
        Issue(
            Severity.WARNING,
            "image.duplicate",
            group[0],
            f"{len(group)} images have identical bytes (sha256 {sha_of[group[0]][:12]}): {_shown(group)}. "
            "They are kept in one split so they cannot leak between train and test; delete the copies "
            "unless the repetition is intended.",
        )
        for group in exact
    ]
    issues.extend(
        Issue(
            Severity.WARNING,
            "image.near_duplicate",
            group[0],
            f"{len(group)} images look almost the same (perceptual hash): {_shown(group)}. They are kept "
            "in one split so evaluation does not reward memorising; check for re-encoded or resized copies.",
        )
        for group in near
    )
    return issues


def _statistical_issues(
    class_names: Sequence[str],
    sources: Sequence[SourceBox],
    box_index: np.ndarray,
    classes: np.ndarray,
    xyxy: np.ndarray,
    image_paths: Sequence[str],
) -> list[Issue]:
    """Datumaro-style anomalies over the boxes a model would train on; warnings, never quarantine."""
    issues: list[Issue] = []
    n_classes = len(class_names)
    counts = np.bincount(classes, minlength=n_classes)
    widths = xyxy[:, 2] - xyxy[:, 0]
    heights = xyxy[:, 3] - xyxy[:, 1]
    tiny = 1e-9  # boxes are at least min_box_px wide, unless that was set to 0
    features = {
        "area": np.log(np.maximum(widths * heights, tiny)),
        "aspect ratio": np.log(np.maximum(widths, tiny) / np.maximum(heights, tiny)),
    }
    enough = counts >= OUTLIER_MIN_BOXES
    flagged: dict[int, list[str]] = defaultdict(list)
    for name, values in features.items():
        total = np.bincount(classes, weights=values, minlength=n_classes)
        mean = np.divide(total, counts, out=np.zeros(n_classes), where=counts > 0)
        squares = np.bincount(classes, weights=(values - mean[classes]) ** 2, minlength=n_classes)
        std = np.sqrt(np.divide(squares, counts, out=np.zeros(n_classes), where=counts > 0))
        scale = std[classes]
        z = np.divide(values - mean[classes], scale, out=np.zeros_like(values), where=scale > 1e-12)
        for row in np.nonzero(enough[classes] & (np.abs(z) > OUTLIER_Z))[0].tolist():
            flagged[row].append(f"{name} z={z[row]:+.1f}")
    for row in sorted(flagged):
        box = sources[box_index[row]]
        issues.append(
            Issue(
                Severity.WARNING,
                "stats.box_outlier",
                box.source_file,
                f"box of class {class_names[classes[row]]!r} ({widths[row]:.0f}x{heights[row]:.0f} px) "
                f"is far from its class's boxes ({', '.join(flagged[row])}, limit |z| {OUTLIER_Z:g} "
                "on the log scale); check its class and coordinates.",
                line=box.line,
                annotation_id=box.annotation_id,
                image=image_paths[row],
            )
        )
    for index, count in enumerate(counts.tolist()):
        if count < FEW_SAMPLES:
            issues.append(
                Issue(
                    Severity.WARNING,
                    "stats.few_samples",
                    "",
                    f"class {class_names[index]!r} has {count} usable boxes (fewer than {FEW_SAMPLES}); "
                    "a model cannot learn it from so few: add examples or drop the class.",
                )
            )
    present = counts[counts > 0]
    if present.size and present.max() / present.min() > IMBALANCE_RATIO:
        most, fewest = (
            int(np.argmax(counts)),
            int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max))),
        )
        issues.append(
            Issue(
                Severity.WARNING,
                "stats.imbalance",
                "",
                f"classes are imbalanced {present.max() / present.min():.0f}:1 ({class_names[most]!r} has "
                f"{counts[most]} boxes, {class_names[fewest]!r} {counts[fewest]}; "
                f"limit {IMBALANCE_RATIO:g}:1); consider more examples of the rare classes or class "
                "weights in training.",
            )
        )
    return issues


def _charged_image(issue: Issue, paths: set[str], label_owner: Mapping[str, str]) -> str | None:
    """The image an error is charged to: named on the issue, or the one whose file or own label file it is."""
    if issue.image is not None:
        return issue.image if issue.image in paths else None
    if issue.file in paths:
        return issue.file
    return label_owner.get(issue.file)


def validate(
    parsed: ParsedDataset,
    facts: Mapping[str, ImageFacts],
    *,
    policy: Policy = "quarantine",
    clip_tolerance_px: float = 2.0,
    min_box_px: float = 1.0,
    near_duplicate_distance: int = 4,
) -> ValidationOutcome:
    """Apply every dataset-level rule and the policy.

    `quarantine` excludes each image with an error in its file or labels (errors not charged to one image
    quarantine nothing); `strict` fails the whole upload on any error. `near_duplicate_distance` < 0 turns
    the near-duplicate search off.
    """
    if policy not in ("quarantine", "strict"):
        raise ValueError(f"unknown validation policy {policy!r}; use 'quarantine' or 'strict'.")
    if near_duplicate_distance > 63:
        raise ValueError(f"near_duplicate_distance must be at most 63 bits, got {near_duplicate_distance}.")
    images = parsed.images
    issues: list[Issue] = list(parsed.issues)
    for image in images:
        if (fact := facts.get(image.path)) is not None:
            issues.extend(fact.issues)
    for image in images:
        issues.extend(_image_issues(image, facts.get(image.path)))

    boxes = _check_boxes(parsed, facts, clip_tolerance_px, min_box_px)
    issues.extend(boxes.issues)

    present = [fact for image in images if (fact := facts.get(image.path)) is not None]
    exact, near = find_duplicates(present, near_duplicate_distance)
    issues.extend(_duplicate_issues(exact, near, {fact.path: fact.sha256 for fact in present}))

    paths = {image.path for image in images}
    label_files = Counter(image.label_file for image in images if image.label_file)
    label_owner = {
        image.label_file: image.path
        for image in images
        if image.label_file and label_files[image.label_file] == 1
    }
    reasons: dict[str, list[str]] = defaultdict(list)
    for issue in issues:
        if issue.severity is not Severity.ERROR:
            continue
        target = _charged_image(issue, paths, label_owner)
        if target is not None and issue.code not in reasons[target]:
            reasons[target].append(issue.code)

    usable_image = np.array(
        [image.path not in reasons and image.label_state is not LabelState.UNLABELLED for image in images],
        dtype=bool,
    )
    train_rows = np.nonzero(boxes.keep & usable_image[boxes.image_of])[0]
    issues.extend(
        _statistical_issues(
            parsed.class_names,
            boxes.sources,
            train_rows,
            np.fromiter((boxes.sources[i].class_index for i in train_rows.tolist()), dtype=np.int64),
            boxes.xyxy[train_rows],
            [images[i].path for i in boxes.image_of[train_rows].tolist()],
        )
    )

    validated: list[ValidatedImage] = []
    kept_rows = np.nonzero(boxes.keep)[0].tolist()
    per_image: dict[int, list[Box]] = defaultdict(list)
    coordinates = boxes.xyxy.tolist()
    image_of = boxes.image_of.tolist()
    for row in kept_rows:
        source = boxes.sources[row]
        x0, y0, x1, y1 = coordinates[row]
        per_image[image_of[row]].append(Box(source.class_index, x0, y0, x1, y1, dict(source.attributes)))
    for index, image in enumerate(images):
        validated.append(
            ValidatedImage(
                path=image.path,
                split=image.split,
                label_state=image.label_state,
                boxes=per_image.get(index, []),
                facts=facts.get(image.path),
                quarantined=image.path in reasons,
                reasons=reasons.get(image.path, []),
                label_file=image.label_file,
                source_id=image.source_id,
            )
        )

    return ValidationOutcome(
        issues=issues,
        images=validated,
        class_names=list(parsed.class_names),
        duplicate_groups=merge_groups([*exact, *near]) if exact or near else [],
        exact_duplicate_groups=exact,
        near_duplicate_groups=near,
        policy=policy,
        failed=policy == "strict" and any(issue.severity is Severity.ERROR for issue in issues),
        clipped_boxes=boxes.clipped,
    )


def error_share(quarantined: int, images: int, missing: int = 0) -> float:
    """Images a model loses (quarantined, or gone from disk) over all images the version had: one formula."""
    return (quarantined + missing) / max(1, images + missing)


@dataclass(frozen=True, slots=True)
class GateDecision:
    """The one verdict on a version: the blocking check, the UI summary and the dataset status all read it."""

    passed: bool
    reason: str | None
    images: int
    usable: int
    quarantined: int
    missing: int
    error_share: float
    policy: Policy
    max_error_share: float

    def headline(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        line = (
            f"**Validation {verdict}** — {self.images:,} images, {self.usable:,} usable, "
            f"{self.quarantined:,} quarantined"
        )
        if self.missing:
            line += f", {self.missing:,} missing"
        line += f" ({self.error_share:.1%}), policy `{self.policy}`, at most {self.max_error_share:.0%} may be lost."
        return line + (f" {self.reason}." if self.reason else "")


def decide_gate(
    *,
    images: int,
    usable: int,
    quarantined: int,
    missing: int = 0,
    policy: Policy,
    max_error_share: float,
    strict_error: bool = False,
) -> GateDecision:
    """Whether a version may go on: something usable left, not too much lost, and no error under `strict`."""
    share = error_share(quarantined, images, missing)
    problems = []
    if policy == "strict" and (strict_error or missing):
        problems.append("the strict policy rejects any error")
    if usable == 0:
        problems.append("no usable image is left")
    if share > max_error_share:
        problems.append(f"{share:.0%} of the images are lost, over the {max_error_share:.0%} limit")
    return GateDecision(
        passed=not problems,
        reason="; ".join(problems).capitalize() if problems else None,
        images=images,
        usable=usable,
        quarantined=quarantined,
        missing=missing,
        error_share=round(share, 4),
        policy=policy,
        max_error_share=max_error_share,
    )


def decide_for(outcome: ValidationOutcome, max_error_share: float, missing: int = 0) -> GateDecision:
    return decide_gate(
        images=len(outcome.images),
        usable=len(outcome.usable_images),
        quarantined=len(outcome.quarantined),
        missing=missing,
        policy=outcome.policy,
        max_error_share=max_error_share,
        strict_error=outcome.failed,
    )


def summarize_markdown(
    outcome: ValidationOutcome, decision: GateDecision | None = None, max_problems: int = 20
) -> str:
    """A short report for the Dagster UI: the gate's verdict, counts by severity and code, the first problems."""
    decision = decision or decide_for(outcome, max_error_share=1.0)
    lines = [
        decision.headline(),
        "",
        "| severity | issues |",
        "|---|---:|",
        *(f"| {severity} | {count:,} |" for severity, count in outcome.counts_by_severity().items()),
    ]
    by_code = outcome.counts_by_code()
    if by_code:
        severity_of = {issue.code: issue.severity.value for issue in outcome.issues}
        lines += ["", "| code | severity | issues |", "|---|---|---:|"]
        lines += [f"| `{code}` | {severity_of[code]} | {count:,} |" for code, count in by_code.items()]
    rank = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
    problems = sorted(
        (issue for issue in outcome.issues if issue.severity is not Severity.INFO),
        key=lambda i: rank[i.severity],
    )
    if problems:
        lines += ["", f"**First {min(max_problems, len(problems))} of {len(problems):,} problems**", ""]
        for issue in problems[:max_problems]:
            where = issue.location() or "(dataset)"
            message = issue.message.replace("\n", " ")
            lines.append(f"- {issue.severity.value} `{issue.code}` at `{where}`: {message}")
    return "\n".join(lines) + "\n"
