"""Label edits as pure functions: every operation, its refusals, the audit-trail round trip and all-or-nothing."""

from __future__ import annotations

import copy
import itertools
import json

import pytest

from dataset_pipeline.domain.label_edits import (
    BORDER_TOLERANCE_PX,
    OPERATIONS,
    EditEffect,
    ImageLabels,
    LabelEdit,
    LabelEditError,
    LabelSet,
    apply_edit,
    apply_edits,
)
from dataset_pipeline.domain.model import Box, LabelState

CLASSES = ["car", "truck", "bus", "bike"]


def make_labels() -> LabelSet:
    """Six boxes on three labelled images, plus a background and an unlabelled image."""
    return LabelSet(
        list(CLASSES),
        {
            "a.jpg": ImageLabels(
                100,
                80,
                [Box(0, 1, 1, 10, 10), Box(1, 20, 20, 30, 30, {"occluded": True}), Box(2, 40, 40, 50, 50)],
            ),
            "b.jpg": ImageLabels(100, 80, [Box(1, 5, 5, 15, 15)]),
            "sub/c.jpg": ImageLabels(50, 50, [Box(3, 0, 0, 5, 5), Box(3, 10, 10, 20, 20)]),
            "bg.jpg": ImageLabels(64, 64, [], LabelState.BACKGROUND),
            "un.jpg": ImageLabels(64, 64, [], LabelState.UNLABELLED),
        },
    )


def named_boxes(labels: LabelSet) -> dict[str, list[tuple[str, float, float, float, float]]]:
    """Each image's boxes by class name, so an edit that only renumbers classes leaves this unchanged."""
    return {
        path: [
            (labels.class_names[box.class_index], box.x_min, box.y_min, box.x_max, box.y_max)
            for box in image.boxes
        ]
        for path, image in labels.images.items()
    }


def indices(labels: LabelSet, path: str) -> list[int]:
    return [box.class_index for box in labels.images[path].boxes]


def states(labels: LabelSet) -> dict[str, LabelState]:
    return {path: image.label_state for path, image in labels.images.items()}


@pytest.fixture
def labels() -> LabelSet:
    return make_labels()


# --- params / from_params --------------------------------------------------------------------------------

EXAMPLES = [
    LabelEdit("rename_class", class_name="car", new_name="auto"),
    LabelEdit("merge_classes", sources=("truck", "bus"), into="heavy"),
    LabelEdit("delete_class", class_name="bike"),
    LabelEdit("replace_boxes", image="a.jpg", boxes=(("car", 1.0, 2.0, 3.5, 4.25), ("bus", 0, 0, 10, 10))),
    LabelEdit("remap_class_ids", mapping={3: 0, 0: 3}),
]


def test_examples_cover_every_operation() -> None:
    assert sorted(edit.operation for edit in EXAMPLES) == sorted(OPERATIONS)


@pytest.mark.parametrize("edit", EXAMPLES, ids=lambda edit: edit.operation)
def test_params_round_trip_through_json(edit: LabelEdit) -> None:
    params = json.loads(json.dumps(edit.params()))
    assert params["operation"] == edit.operation
    back = LabelEdit.from_params(params)
    assert back == edit
    assert back.params() == edit.params()


def test_params_shape() -> None:
    params = LabelEdit("remap_class_ids", mapping={2: 0, 0: 1, 1: 2}).params()
    assert params["mapping"] == {"0": 1, "1": 2, "2": 0}
    boxes = LabelEdit("replace_boxes", image="a.jpg", boxes=(("car", 1, 2, 3, 4),)).params()["boxes"]
    assert boxes == [["car", 1, 2, 3, 4]]


def test_from_params_fills_defaults() -> None:
    edit = LabelEdit.from_params({"operation": "delete_class", "class_name": "bike"})
    assert edit == LabelEdit("delete_class", class_name="bike")


@pytest.mark.parametrize("operation", [None, "", "drop_class", "RENAME_CLASS"])
def test_from_params_refuses_unknown_operation(operation: str | None) -> None:
    with pytest.raises(LabelEditError, match="unknown label edit"):
        LabelEdit.from_params({"operation": operation})


@pytest.mark.parametrize(
    "params",
    [
        {"operation": "replace_boxes", "image": "a.jpg", "boxes": [["car", 1, 2, 3]]},
        {"operation": "replace_boxes", "image": "a.jpg", "boxes": [["car", "x", 2, 3, 4]]},
        {"operation": "replace_boxes", "image": "a.jpg", "boxes": None},
        {"operation": "remap_class_ids", "mapping": {"zero": 1}},
        {"operation": "remap_class_ids", "mapping": 5},
        {"operation": "merge_classes", "sources": 3, "into": "x"},
    ],
)
def test_from_params_refuses_malformed_parameters(params: dict[str, object]) -> None:
    with pytest.raises(LabelEditError, match=f"{params['operation']}: malformed parameters"):
        LabelEdit.from_params(params)


# --- rename_class ----------------------------------------------------------------------------------------


def test_rename_class(labels: LabelSet) -> None:
    before = named_boxes(labels)
    edited, effect = apply_edit(labels, LabelEdit("rename_class", class_name="truck", new_name="lorry"))
    assert edited.class_names == ["car", "lorry", "bus", "bike"]
    assert indices(edited, "a.jpg") == [0, 1, 2]
    renamed = {
        path: [("lorry" if name == "truck" else name, *xyxy) for name, *xyxy in boxes]
        for path, boxes in before.items()
    }
    assert named_boxes(edited) == renamed
    assert states(edited) == states(labels)
    assert effect == EditEffect(6, 6, CLASSES, ["car", "lorry", "bus", "bike"])
    assert labels.class_names == CLASSES  # the input is not changed


@pytest.mark.parametrize("new_name", ["bus", "truck"])
def test_rename_refuses_an_existing_name(labels: LabelSet, new_name: str) -> None:
    with pytest.raises(LabelEditError, match="already exists; use merge_classes"):
        apply_edit(labels, LabelEdit("rename_class", class_name="truck", new_name=new_name))


def test_rename_refuses_an_unknown_class(labels: LabelSet) -> None:
    with pytest.raises(
        LabelEditError, match=r"rename_class: there is no class 'plane' \(classes: car, truck"
    ):
        apply_edit(labels, LabelEdit("rename_class", class_name="plane", new_name="jet"))


@pytest.mark.parametrize("new_name", ["", "   "])
def test_rename_refuses_an_empty_name(labels: LabelSet, new_name: str) -> None:
    with pytest.raises(LabelEditError, match="new_name is empty"):
        apply_edit(labels, LabelEdit("rename_class", class_name="car", new_name=new_name))


# --- merge_classes ---------------------------------------------------------------------------------------


def test_merge_into_a_new_name_takes_the_first_sources_place(labels: LabelSet) -> None:
    edited, effect = apply_edit(labels, LabelEdit("merge_classes", sources=("bus", "truck"), into="heavy"))
    assert edited.class_names == ["car", "heavy", "bike"]
    assert indices(edited, "a.jpg") == [0, 1, 1]
    assert indices(edited, "b.jpg") == [1]
    assert indices(edited, "sub/c.jpg") == [2, 2]
    heavy = {"truck", "bus"}
    expected = {
        path: [("heavy" if name in heavy else name, *xyxy) for name, *xyxy in boxes]
        for path, boxes in named_boxes(labels).items()
    }
    assert named_boxes(edited) == expected
    assert edited.images["a.jpg"].boxes[1].attributes == {"occluded": True}
    assert (effect.boxes_before, effect.boxes_after) == (6, 6)
    assert effect.classes_after == ["car", "heavy", "bike"]
    assert states(edited) == states(labels)


def test_merge_into_an_existing_class(labels: LabelSet) -> None:
    edited, effect = apply_edit(labels, LabelEdit("merge_classes", sources=("car", "bike"), into="bus"))
    assert edited.class_names == ["truck", "bus"]
    assert indices(edited, "a.jpg") == [1, 0, 1]
    assert indices(edited, "b.jpg") == [0]
    assert indices(edited, "sub/c.jpg") == [1, 1]
    assert edited.box_count() == labels.box_count() == 6
    assert effect == EditEffect(6, 6, CLASSES, ["truck", "bus"])


def test_merge_into_one_of_its_sources(labels: LabelSet) -> None:
    edited, _ = apply_edit(labels, LabelEdit("merge_classes", sources=("bike", "truck"), into="bike"))
    assert edited.class_names == ["car", "bus", "bike"]
    assert indices(edited, "a.jpg") == [0, 2, 1]
    assert indices(edited, "b.jpg") == [2]
    assert indices(edited, "sub/c.jpg") == [2, 2]


def test_merge_of_one_class_into_a_new_name_is_a_rename(labels: LabelSet) -> None:
    merged, _ = apply_edit(labels, LabelEdit("merge_classes", sources=("bus",), into="coach"))
    renamed, _ = apply_edit(labels, LabelEdit("rename_class", class_name="bus", new_name="coach"))
    assert merged == renamed


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (LabelEdit("merge_classes", sources=("car", "plane"), into="x"), "there is no class 'plane'"),
        (LabelEdit("merge_classes", sources=(), into="x"), "give sources"),
        (LabelEdit("merge_classes", sources=("car",), into=""), "give sources"),
        (LabelEdit("merge_classes", sources=("car",), into="  "), "give sources"),
    ],
)
def test_merge_refusals(labels: LabelSet, edit: LabelEdit, message: str) -> None:
    with pytest.raises(LabelEditError, match=f"merge_classes: .*{message}"):
        apply_edit(labels, edit)


# --- delete_class ----------------------------------------------------------------------------------------


def test_delete_class_removes_boxes_and_shifts_later_indices(labels: LabelSet) -> None:
    edited, effect = apply_edit(labels, LabelEdit("delete_class", class_name="truck"))
    assert edited.class_names == ["car", "bus", "bike"]
    assert indices(edited, "a.jpg") == [0, 1]
    assert indices(edited, "sub/c.jpg") == [2, 2]
    assert named_boxes(edited)["a.jpg"] == [("car", 1, 1, 10, 10), ("bus", 40, 40, 50, 50)]
    assert edited.images["b.jpg"].boxes == []
    assert states(edited) == {
        "a.jpg": LabelState.LABELLED,
        "b.jpg": LabelState.BACKGROUND,  # lost its last box: someone labelled it, nothing is left
        "sub/c.jpg": LabelState.LABELLED,
        "bg.jpg": LabelState.BACKGROUND,
        "un.jpg": LabelState.UNLABELLED,  # nobody looked at it; deleting a class does not change that
    }
    assert effect == EditEffect(6, 4, CLASSES, ["car", "bus", "bike"])


def test_delete_first_and_last_class(labels: LabelSet) -> None:
    first, _ = apply_edit(labels, LabelEdit("delete_class", class_name="car"))
    assert first.class_names == ["truck", "bus", "bike"]
    assert indices(first, "a.jpg") == [0, 1] and indices(first, "sub/c.jpg") == [2, 2]
    last, effect = apply_edit(labels, LabelEdit("delete_class", class_name="bike"))
    assert last.class_names == ["car", "truck", "bus"]
    assert indices(last, "a.jpg") == [0, 1, 2]
    assert last.images["sub/c.jpg"].label_state is LabelState.BACKGROUND
    assert (effect.boxes_before, effect.boxes_after) == (6, 4)


def test_delete_refuses_an_unknown_class(labels: LabelSet) -> None:
    with pytest.raises(LabelEditError, match="delete_class: there is no class 'plane'"):
        apply_edit(labels, LabelEdit("delete_class", class_name="plane"))


# --- replace_boxes ---------------------------------------------------------------------------------------


def test_replace_boxes_in_pixels(labels: LabelSet) -> None:
    edit = LabelEdit("replace_boxes", image="a.jpg", boxes=(("bike", 1, 2, 3, 4), ("car", 10.5, 0, 100, 80)))
    edited, effect = apply_edit(labels, edit)
    assert edited.images["a.jpg"].boxes == [Box(3, 1, 2, 3, 4), Box(0, 10.5, 0, 100, 80)]
    assert edited.images["a.jpg"].label_state is LabelState.LABELLED
    assert (edited.images["a.jpg"].width, edited.images["a.jpg"].height) == (100, 80)
    for path in ("b.jpg", "sub/c.jpg", "bg.jpg", "un.jpg"):
        assert edited.images[path] == labels.images[path]
    assert edited.class_names == CLASSES
    assert effect == EditEffect(6, 5, CLASSES, CLASSES)
    assert len(labels.images["a.jpg"].boxes) == 3  # the input is not changed


def test_replace_boxes_with_none_makes_background(labels: LabelSet) -> None:
    edited, effect = apply_edit(labels, LabelEdit("replace_boxes", image="sub/c.jpg", boxes=()))
    assert edited.images["sub/c.jpg"].boxes == []
    assert edited.images["sub/c.jpg"].label_state is LabelState.BACKGROUND
    assert (effect.boxes_before, effect.boxes_after) == (6, 4)


def test_replace_boxes_on_unlabelled_image(labels: LabelSet) -> None:
    empty, _ = apply_edit(labels, LabelEdit("replace_boxes", image="un.jpg", boxes=()))
    assert empty.images["un.jpg"].label_state is LabelState.BACKGROUND  # someone looked at it
    boxed, _ = apply_edit(labels, LabelEdit("replace_boxes", image="un.jpg", boxes=(("bus", 0, 0, 64, 64),)))
    assert boxed.images["un.jpg"].label_state is LabelState.LABELLED
    assert boxed.images["un.jpg"].boxes == [Box(2, 0, 0, 64, 64)]


def test_replace_boxes_refuses_an_unknown_image(labels: LabelSet) -> None:
    with pytest.raises(LabelEditError, match=r"replace_boxes: the dataset has no image 'c\.jpg'"):
        apply_edit(labels, LabelEdit("replace_boxes", image="c.jpg", boxes=()))


def test_replace_boxes_refuses_an_unknown_class(labels: LabelSet) -> None:
    edit = LabelEdit("replace_boxes", image="a.jpg", boxes=(("car", 0, 0, 1, 1), ("plane", 0, 0, 1, 1)))
    with pytest.raises(LabelEditError, match=r"replace_boxes a\.jpg box 2: there is no class 'plane'"):
        apply_edit(labels, edit)


@pytest.mark.parametrize(
    "xyxy",
    [
        (0, 0, 100.6, 80),  # past the right border
        (0, 0, 100, 81),  # past the bottom
        (-1, 0, 10, 10),  # left of the image
        (0, -0.6, 10, 10),  # above the image
        (10, 10, 10, 20),  # no width
        (10, 20, 20, 10),  # y_min > y_max
        (20, 10, 10, 20),  # x_min > x_max
        (200, 10, 210, 20),  # entirely outside
        (float("nan"), 0, 10, 10),
        (0, 0, float("inf"), 10),
    ],
)
def test_replace_boxes_refuses_a_box_not_inside_the_image(
    labels: LabelSet, xyxy: tuple[float, float, float, float]
) -> None:
    edit = LabelEdit("replace_boxes", image="a.jpg", boxes=(("car", 1, 1, 2, 2), ("car", *xyxy)))
    with pytest.raises(LabelEditError, match=r"replace_boxes a.jpg box 2: .* 100x80 image"):
        apply_edit(labels, edit)


def test_replace_boxes_clips_within_tolerance(labels: LabelSet) -> None:
    assert BORDER_TOLERANCE_PX == 0.5
    edit = LabelEdit("replace_boxes", image="a.jpg", boxes=(("car", -0.5, -0.2, 100.5, 80.4),))
    edited, _ = apply_edit(labels, edit)
    assert edited.images["a.jpg"].boxes == [Box(0, 0.0, 0.0, 100.0, 80.0)]


@pytest.mark.parametrize(
    "xyxy",
    [
        (100.1, 10, 100.4, 20),  # within the tolerance, but nothing is left inside the image after clipping
        (10, -0.4, 20, -0.1),
        (10, 80.0, 20, 80.3),
        (-0.5, 10, 0.0, 20),
    ],
)
def test_replace_boxes_refuses_a_box_that_clips_to_nothing(
    labels: LabelSet, xyxy: tuple[float, float, float, float]
) -> None:
    with pytest.raises(LabelEditError, match="not a box inside"):
        apply_edit(labels, LabelEdit("replace_boxes", image="a.jpg", boxes=(("car", *xyxy),)))


# --- remap_class_ids -------------------------------------------------------------------------------------


def test_remap_swaps_names_and_box_indices(labels: LabelSet) -> None:
    edited, effect = apply_edit(labels, LabelEdit("remap_class_ids", mapping={0: 3, 3: 0}))
    assert edited.class_names == ["bike", "truck", "bus", "car"]
    assert indices(edited, "a.jpg") == [3, 1, 2]
    assert indices(edited, "sub/c.jpg") == [0, 0]
    assert named_boxes(edited) == named_boxes(labels)  # every box keeps its class, only the ids move
    assert effect == EditEffect(6, 6, CLASSES, ["bike", "truck", "bus", "car"])


def test_remap_cycle(labels: LabelSet) -> None:
    edited, _ = apply_edit(labels, LabelEdit("remap_class_ids", mapping={0: 1, 1: 2, 2: 3, 3: 0}))
    assert edited.class_names == ["bike", "car", "truck", "bus"]
    assert indices(edited, "a.jpg") == [1, 2, 3]
    assert indices(edited, "b.jpg") == [2]
    assert named_boxes(edited) == named_boxes(labels)
    assert states(edited) == states(labels)


def test_remap_identity_and_empty_mapping_change_nothing(labels: LabelSet) -> None:
    assert apply_edit(labels, LabelEdit("remap_class_ids", mapping={}))[0] == labels
    assert apply_edit(labels, LabelEdit("remap_class_ids", mapping={1: 1}))[0] == labels


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({0: 1}, "one to one"),  # two classes would land on 1
        ({0: 1, 1: 1}, "one to one"),
        ({0: 4, 4: 0}, "unknown ids \\[4\\]"),
        ({7: 0}, "unknown ids \\[7\\]"),
        ({-1: 0}, "unknown ids \\[-1\\]"),
        ({0: -1, 3: 0}, "one to one"),
        ({0: 4}, "one to one"),
    ],
)
def test_remap_refuses_a_non_permutation(labels: LabelSet, mapping: dict[int, int], message: str) -> None:
    with pytest.raises(LabelEditError, match=f"remap_class_ids: .*{message}"):
        apply_edit(labels, LabelEdit("remap_class_ids", mapping=mapping))


# --- apply_edit / apply_edits ----------------------------------------------------------------------------


@pytest.mark.parametrize("edit", EXAMPLES, ids=lambda edit: edit.operation)
def test_apply_edit_never_changes_its_input(labels: LabelSet, edit: LabelEdit) -> None:
    before = copy.deepcopy(labels)
    edited, _ = apply_edit(labels, edit)
    assert labels == before
    assert edited != before


def test_apply_edits_in_order_with_effects(labels: LabelSet) -> None:
    edits = [
        LabelEdit("rename_class", class_name="car", new_name="auto"),
        LabelEdit("merge_classes", sources=("truck", "bus"), into="heavy"),
        LabelEdit("delete_class", class_name="bike"),
        LabelEdit("replace_boxes", image="b.jpg", boxes=(("auto", 0, 0, 50, 50), ("auto", 50, 0, 100, 50))),
        LabelEdit("remap_class_ids", mapping={0: 1, 1: 0}),
    ]
    edited, effects = apply_edits(labels, edits)
    assert edited.class_names == ["heavy", "auto"]
    assert named_boxes(edited) == {
        "a.jpg": [("auto", 1, 1, 10, 10), ("heavy", 20, 20, 30, 30), ("heavy", 40, 40, 50, 50)],
        "b.jpg": [("auto", 0, 0, 50, 50), ("auto", 50, 0, 100, 50)],
        "sub/c.jpg": [],
        "bg.jpg": [],
        "un.jpg": [],
    }
    assert edited.images["sub/c.jpg"].label_state is LabelState.BACKGROUND
    assert [(effect.boxes_before, effect.boxes_after) for effect in effects] == [
        (6, 6),
        (6, 6),
        (6, 4),
        (4, 5),
        (5, 5),
    ]
    assert [effect.classes_after for effect in effects] == [
        ["auto", "truck", "bus", "bike"],
        ["auto", "heavy", "bike"],
        ["auto", "heavy"],
        ["auto", "heavy"],
        ["heavy", "auto"],
    ]
    assert effects[0].classes_before == CLASSES
    assert all(a.classes_after == b.classes_before for a, b in itertools.pairwise(effects))
    assert labels == make_labels()


def test_apply_edits_later_edits_see_earlier_ones(labels: LabelSet) -> None:
    edits = [
        LabelEdit("rename_class", class_name="car", new_name="auto"),
        LabelEdit("delete_class", class_name="car"),  # no longer exists
    ]
    with pytest.raises(LabelEditError, match="there is no class 'car'"):
        apply_edits(labels, edits)


def test_apply_edits_is_all_or_nothing(labels: LabelSet) -> None:
    before = copy.deepcopy(labels)
    edits = [
        LabelEdit("delete_class", class_name="truck"),
        LabelEdit("replace_boxes", image="a.jpg", boxes=(("car", 0, 0, 500, 10),)),
        LabelEdit("rename_class", class_name="bus", new_name="coach"),
    ]
    with pytest.raises(LabelEditError, match=r"replace_boxes a\.jpg box 1"):
        apply_edits(labels, edits)
    assert labels == before


def test_apply_no_edits(labels: LabelSet) -> None:
    edited, effects = apply_edits(labels, [])
    assert edited == labels and effects == []


# --- class info (COCO ids) follows the classes ---------------------------------------------------------


def test_coco_ids_follow_their_classes_through_every_edit(labels: LabelSet) -> None:
    from dataset_pipeline.domain.model import ClassInfo

    info = [ClassInfo(coco_id=10 * (i + 1), supercategory=f"s{i}") for i in range(len(labels.class_names))]
    labels = LabelSet(labels.class_names, labels.images, info)
    id_of = dict(zip(labels.class_names, (i.coco_id for i in info), strict=True))

    def ids(edited: LabelSet) -> dict[str, int | None]:
        assert len(edited.class_info) == len(edited.class_names)
        return {name: i.coco_id for name, i in zip(edited.class_names, edited.class_info, strict=True)}

    renamed, _ = apply_edit(labels, LabelEdit("rename_class", class_name="car", new_name="auto"))
    assert ids(renamed)["auto"] == id_of["car"]  # a renamed class is the same category
    deleted, _ = apply_edit(labels, LabelEdit("delete_class", class_name="bike"))
    assert ids(deleted) == {name: i for name, i in id_of.items() if name != "bike"}
    merged, _ = apply_edit(labels, LabelEdit("merge_classes", sources=("truck", "bus"), into="heavy"))
    first = min(labels.class_names.index("truck"), labels.class_names.index("bus"))
    assert ids(merged)["heavy"] == info[first].coco_id  # takes the place (and id) of the first source
    remapped, _ = apply_edit(labels, LabelEdit("remap_class_ids", mapping={3: 0, 0: 3}))
    assert ids(remapped) == id_of
    boxes, _ = apply_edit(labels, LabelEdit("replace_boxes", image="a.jpg", boxes=(("car", 1, 2, 3, 4),)))
    assert ids(boxes) == id_of
    plain, _ = apply_edit(LabelSet(labels.class_names, labels.images), EXAMPLES[0])
    assert plain.class_info == []  # nothing declared, nothing made up
