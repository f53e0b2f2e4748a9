"""Label edits (the old POST /label) as pure functions over a dataset's classes and boxes.

The `labels` asset applies them to a version's labels and stores the result as a new version; the parent
version keeps its labels. The audit trail stores each edit as `params()`, which `from_params` reads back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from dataset_pipeline.domain.model import Box, ClassInfo, LabelState

Operation = Literal["rename_class", "merge_classes", "delete_class", "replace_boxes", "remap_class_ids"]
OPERATIONS: tuple[str, ...] = Operation.__args__  # type: ignore[attr-defined]
#: A replaced box may reach this far past the image border (pixels) before it is refused.
BORDER_TOLERANCE_PX = 0.5


class LabelEditError(ValueError):
    """An edit that cannot be applied as given; the message names the edit and what to change."""


@dataclass(slots=True)
class ImageLabels:
    width: int
    height: int
    boxes: list[Box]
    label_state: LabelState = LabelState.LABELLED


def _state_after(previous: LabelState, boxes: Sequence[Box]) -> LabelState:
    """An image that loses its last box is background (someone labelled it); unlabelled stays unlabelled."""
    if boxes:
        return LabelState.LABELLED
    return LabelState.UNLABELLED if previous is LabelState.UNLABELLED else LabelState.BACKGROUND


@dataclass(slots=True)
class LabelSet:
    """Classes and boxes of a dataset's original (not augmented) images, keyed by relative path."""

    class_names: list[str]
    images: dict[str, ImageLabels]
    #: Aligned with class_names when the upload declared COCO ids; a class keeps its id through renames.
    class_info: list[ClassInfo] = field(default_factory=list)

    def info_of(self, old_indices: Sequence[int]) -> list[ClassInfo]:
        """The class info of the classes that stay, in their new order (empty when there is none)."""
        return [self.class_info[old] for old in old_indices] if self.class_info else []

    def box_count(self) -> int:
        return sum(len(image.boxes) for image in self.images.values())


@dataclass(frozen=True, slots=True)
class LabelEdit:
    """One edit, as stored in the audit trail (`label_edits.params`) and given in the job's config."""

    operation: Operation
    class_name: str = ""  # rename_class, delete_class
    new_name: str = ""  # rename_class
    sources: tuple[str, ...] = ()  # merge_classes
    into: str = ""  # merge_classes: an existing or a new class
    image: str = ""  # replace_boxes: the image's relative path
    boxes: tuple[tuple[str, float, float, float, float], ...] = ()  # replace_boxes: (class, xyxy pixels)
    mapping: Mapping[int, int] = field(default_factory=dict)  # remap_class_ids: old id -> new id

    def params(self) -> dict[str, Any]:
        """The edit as JSON for the audit trail; `from_params` reads it back."""
        return {
            "operation": self.operation,
            "class_name": self.class_name,
            "new_name": self.new_name,
            "sources": list(self.sources),
            "into": self.into,
            "image": self.image,
            "boxes": [list(box) for box in self.boxes],
            "mapping": {str(old): new for old, new in sorted(self.mapping.items())},
        }

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> LabelEdit:
        operation = params.get("operation")
        if operation not in OPERATIONS:
            raise LabelEditError(f"unknown label edit {operation!r}; use one of {', '.join(OPERATIONS)}")
        try:
            return cls(
                operation=operation,
                class_name=str(params.get("class_name", "")),
                new_name=str(params.get("new_name", "")),
                sources=tuple(str(name) for name in params.get("sources", ())),
                into=str(params.get("into", "")),
                image=str(params.get("image", "")),
                boxes=tuple(
                    (str(c), float(x0), float(y0), float(x1), float(y1))
                    for c, x0, y0, x1, y1 in params.get("boxes", ())
                ),
                mapping={int(old): int(new) for old, new in dict(params.get("mapping", {})).items()},
            )
        except (TypeError, ValueError) as error:
            raise LabelEditError(f"{operation}: malformed parameters ({error})") from error


@dataclass(frozen=True, slots=True)
class EditEffect:
    """Before/after counts of one edit, for the audit trail."""

    boxes_before: int
    boxes_after: int
    classes_before: list[str]
    classes_after: list[str]


def _index_of(labels: LabelSet, name: str, edit: str) -> int:
    try:
        return labels.class_names.index(name)
    except ValueError:
        known = ", ".join(labels.class_names) or "none"
        raise LabelEditError(f"{edit}: there is no class {name!r} (classes: {known})") from None


def _reindexed(
    labels: LabelSet, new_index: Sequence[int | None], class_names: list[str], class_info: list[ClassInfo]
) -> LabelSet:
    """Give every box its class's new index; boxes whose class maps to None are removed."""
    images = {}
    for path, image in labels.images.items():
        boxes = [
            replace(box, class_index=target)
            for box in image.boxes
            if (target := new_index[box.class_index]) is not None
        ]
        images[path] = ImageLabels(image.width, image.height, boxes, _state_after(image.label_state, boxes))
    return LabelSet(class_names, images, class_info)


def _rename(labels: LabelSet, edit: LabelEdit) -> LabelSet:
    index = _index_of(labels, edit.class_name, "rename_class")
    if not edit.new_name.strip():
        raise LabelEditError("rename_class: new_name is empty")
    if edit.new_name in labels.class_names:
        raise LabelEditError(
            f"rename_class: {edit.new_name!r} already exists; use merge_classes to combine two classes"
        )
    names = list(labels.class_names)
    names[index] = edit.new_name
    return LabelSet(names, labels.images, list(labels.class_info))


def _merge(labels: LabelSet, edit: LabelEdit) -> LabelSet:
    if not edit.sources or not edit.into.strip():
        raise LabelEditError("merge_classes: give sources (at least one class) and into")
    merged = {_index_of(labels, name, "merge_classes") for name in edit.sources}
    names = list(labels.class_names)
    if edit.into not in names:  # merging into a new name: it takes the place of the first source
        names[min(merged)] = edit.into
    target_old = names.index(edit.into)
    merged.discard(target_old)
    kept = [old for old in range(len(names)) if old not in merged]
    position = {old: new for new, old in enumerate(kept)}
    new_index = [position[target_old] if old in merged else position[old] for old in range(len(names))]
    return _reindexed(labels, new_index, [names[old] for old in kept], labels.info_of(kept))


def _delete(labels: LabelSet, edit: LabelEdit) -> LabelSet:
    deleted = _index_of(labels, edit.class_name, "delete_class")
    new_index: list[int | None] = [
        None if old == deleted else old - (old > deleted) for old in range(len(labels.class_names))
    ]
    kept = [old for old in range(len(labels.class_names)) if old != deleted]
    return _reindexed(labels, new_index, [labels.class_names[old] for old in kept], labels.info_of(kept))


def _replace_boxes(labels: LabelSet, edit: LabelEdit) -> LabelSet:
    image = labels.images.get(edit.image)
    if image is None:
        raise LabelEditError(f"replace_boxes: the dataset has no image {edit.image!r}")
    boxes = []
    for number, (name, x_min, y_min, x_max, y_max) in enumerate(edit.boxes, start=1):
        where = f"replace_boxes {edit.image} box {number}"
        index = _index_of(labels, name, where)
        tolerance = BORDER_TOLERANCE_PX
        clipped = (
            max(0.0, x_min),
            max(0.0, y_min),
            min(float(image.width), x_max),
            min(float(image.height), y_max),
        )
        inside = (
            -tolerance <= x_min < x_max <= image.width + tolerance
            and -tolerance <= y_min < y_max <= image.height + tolerance
            and clipped[0] < clipped[2]  # a box just past the border would clip to nothing
            and clipped[1] < clipped[3]
        )
        if not inside:
            raise LabelEditError(
                f"{where}: ({x_min}, {y_min}, {x_max}, {y_max}) is not a box inside the "
                f"{image.width}x{image.height} image (xyxy pixels, x_min < x_max, y_min < y_max)"
            )
        boxes.append(Box(index, *clipped))
    images = dict(labels.images)
    state = LabelState.LABELLED if boxes else LabelState.BACKGROUND  # someone looked at it: not unlabelled
    images[edit.image] = ImageLabels(image.width, image.height, boxes, state)
    return LabelSet(labels.class_names, images, list(labels.class_info))


def _remap(labels: LabelSet, edit: LabelEdit) -> LabelSet:
    count = len(labels.class_names)
    new_index = [edit.mapping.get(old, old) for old in range(count)]
    unknown = sorted(old for old in edit.mapping if not 0 <= old < count)
    if unknown or sorted(new_index) != list(range(count)):
        raise LabelEditError(
            f"remap_class_ids: {dict(edit.mapping)} must reorder the ids 0..{count - 1} one to one"
            + (f"; unknown ids {unknown}" if unknown else "")
        )
    old_of = [0] * count
    for old, new in enumerate(new_index):
        old_of[new] = old
    return _reindexed(labels, new_index, [labels.class_names[old] for old in old_of], labels.info_of(old_of))


_APPLY = {
    "rename_class": _rename,
    "merge_classes": _merge,
    "delete_class": _delete,
    "replace_boxes": _replace_boxes,
    "remap_class_ids": _remap,
}


def apply_edit(labels: LabelSet, edit: LabelEdit) -> tuple[LabelSet, EditEffect]:
    """Apply one edit, returning new labels (the input is not changed) and its before/after counts."""
    edited = _APPLY[edit.operation](labels, edit)
    effect = EditEffect(labels.box_count(), edited.box_count(), list(labels.class_names), edited.class_names)
    return edited, effect


def apply_edits(labels: LabelSet, edits: Sequence[LabelEdit]) -> tuple[LabelSet, list[EditEffect]]:
    """Apply edits in order; all or nothing (the first error stops it and nothing is returned)."""
    effects = []
    for edit in edits:
        labels, effect = apply_edit(labels, edit)
        effects.append(effect)
    return labels, effects
