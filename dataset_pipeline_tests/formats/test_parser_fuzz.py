"""Per-file parsers fed arbitrary input: the only exception allowed out is `LabelParseError`."""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from dataset_pipeline.domain.model import (
    SEGMENTATION,
    DatasetError,
    LabelParseError,
    SourceBox,
    VocPixelOrigin,
)
from dataset_pipeline.formats import coco, createml, kitti, voc, yolo
from dataset_pipeline.formats.common import decode_text

FUZZ = settings(max_examples=150, deadline=None, database=None)

# Bytes that mostly look like the format, so the fuzzer gets past the first check.
YOLO_TOKENS = st.sampled_from(
    [
        "0",
        "1",
        "7",
        "-1",
        "0.5",
        "1e400",
        "nan",
        "0x1",
        "٣",
        " ",
        "\t",
        "\n",
        "\r\n",
        "1.0",
        ".5",
        "1e-3",
        "\ufeff",
        "#",
    ]
)
XML_TOKENS = st.sampled_from(
    [
        "<annotation>",
        "</annotation>",
        "<object>",
        "</object>",
        "<name>cat</name>",
        "<bndbox>",
        "</bndbox>",
        "<xmin>1</xmin>",
        "<xmax>0</xmax>",
        "<ymin>NaN</ymin>",
        "<ymax>1e999</ymax>",
        "<size><width>5</width><height>x</height></size>",
        "<difficult>2</difficult>",
        "<!DOCTYPE a>",
        '<!ENTITY e "x">',
        "&e;",
        "<?xml version='1.0' encoding='latin-1'?>",
        "<?xml version='1.0' encoding='nope'?>",
        "\xe9",
    ]
)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)
COCO_ANNOTATION = st.fixed_dictionaries(
    {},
    optional={
        "id": JSON_VALUES,
        "image_id": st.sampled_from([1, 2, "1", None, 1.0]),
        "category_id": st.sampled_from([1, 2, 0, "1", None]),
        "bbox": st.lists(JSON_SCALARS, max_size=5) | JSON_VALUES,
        "iscrowd": JSON_VALUES,
        "attributes": JSON_VALUES,
        "area": JSON_SCALARS,
        "segmentation": JSON_VALUES
        | st.lists(st.lists(JSON_SCALARS, max_size=8), max_size=2)
        | st.fixed_dictionaries({}, optional={"counts": JSON_VALUES, "size": JSON_VALUES}),
    },
)
COCO_DOCUMENT = st.fixed_dictionaries(
    {
        "images": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "id": st.sampled_from([1, 2, "1", True, None]),
                    "file_name": JSON_VALUES,
                    "width": JSON_SCALARS,
                    "height": JSON_SCALARS,
                },
            ),
            max_size=3,
        ),
        "annotations": st.lists(COCO_ANNOTATION | JSON_VALUES, max_size=4),
        "categories": st.lists(
            st.fixed_dictionaries(
                {}, optional={"id": st.sampled_from([0, 1, 2, 1.0, "1", None]), "name": JSON_VALUES}
            )
            | JSON_VALUES,
            max_size=3,
        ),
    }
)


def only_label_parse_error(parse: Callable[[], object]) -> None:
    with contextlib.suppress(LabelParseError):
        parse()


@FUZZ
@given(data=st.binary(max_size=300))
def test_text_helpers_on_arbitrary_bytes(data: bytes) -> None:
    only_label_parse_error(lambda: decode_text(data, "x.txt"))
    only_label_parse_error(lambda: yolo.parse_names_text(data, "obj.names"))
    only_label_parse_error(lambda: yolo.parse_obj_data(data, "obj.data"))
    only_label_parse_error(lambda: yolo.parse_data_yaml(data, "data.yaml"))
    only_label_parse_error(lambda: voc.parse_labelmap(data, "labelmap.txt"))
    only_label_parse_error(lambda: voc.parse_split_list(data, "ImageSets/Main/train.txt"))


@FUZZ
@given(data=st.binary(max_size=300) | st.lists(YOLO_TOKENS, max_size=40).map(lambda t: "".join(t).encode()))
def test_yolo_label_text(data: bytes) -> None:
    try:
        boxes, issues = yolo.parse_label_text(data, "labels/a.txt", 3)
    except LabelParseError:
        return
    assert all(isinstance(box, SourceBox) and 0 <= box.class_index < 3 for box in boxes)
    for box in boxes:  # what passes is finite, has an area and is normalised within the margin
        width, height = box.coords[2:]
        assert all(math.isfinite(v) for v in box.coords) and width > 0 and height > 0
        assert all(-yolo.SLIGHT_MARGIN <= v <= 1 + yolo.SLIGHT_MARGIN for v in box.coords)
    assert all(issue.file == "labels/a.txt" and issue.line is not None for issue in issues)


@FUZZ
@given(
    data=st.binary(max_size=300)
    | st.lists(YOLO_TOKENS | st.just(": "), max_size=30).map(lambda t: "names" + "".join(t)).map(str.encode)
)
def test_yolo_data_yaml(data: bytes) -> None:
    only_label_parse_error(lambda: yolo.parse_data_yaml(data, "data.yaml"))


@FUZZ
@given(
    data=st.binary(max_size=400)
    | st.lists(XML_TOKENS, max_size=30).map(lambda t: "".join(t).encode("utf-8")),
    pixel_origin=st.sampled_from([0, 1]),
)
def test_voc_annotation(data: bytes, pixel_origin: VocPixelOrigin) -> None:
    try:
        annotation = voc.parse_annotation(data, "Annotations/a.xml", pixel_origin=pixel_origin)
    except LabelParseError:
        return
    assert annotation.object_count >= len(annotation.objects)
    for obj in annotation.objects:  # origin 1 boxes have an area; origin 0 may be zero-size, never inverted
        x0, y0, x1, y1 = obj.coords
        if pixel_origin == 1:
            assert x1 > x0 and y1 > y0
        else:
            assert x1 >= x0 and y1 >= y0


@FUZZ
@given(data=st.binary(max_size=300) | JSON_VALUES.map(lambda v: json.dumps(v).encode()))
def test_coco_instances_on_arbitrary_json(data: bytes) -> None:
    only_label_parse_error(lambda: coco.parse_instances(data, "instances.json"))


@FUZZ
@given(document=COCO_DOCUMENT)
def test_coco_instances_on_structured_documents(document: dict[str, object]) -> None:
    parsed = coco.parse_instances(json.dumps(document).encode(), "instances.json")
    for image in parsed.images:
        for box in image.boxes:
            x0, y0, x1, y1 = box.coords
            assert 0 <= box.class_index < len(parsed.class_names)
            assert x1 > x0 and y1 > y0
            assert box.attributes["iscrowd"] in (0, 1)
            area = box.attributes.get("area")
            assert area is None or (type(area) is float and math.isfinite(area) and area >= 0)
            segmentation = box.attributes.get(SEGMENTATION)
            if segmentation is not None:  # only what is valid is kept, and never an empty list
                assert segmentation != [] and isinstance(segmentation, list | dict)
                if isinstance(segmentation, list):
                    assert all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in segmentation)
                    assert all(type(v) in (int, float) and math.isfinite(v) for p in segmentation for v in p)
                else:
                    assert isinstance(segmentation["counts"], str | list) and len(segmentation["size"]) == 2


@settings(max_examples=40, deadline=None, database=None)
@given(label=st.binary(max_size=120), names=st.binary(max_size=60))
def test_whole_yolo_parse_never_raises_on_label_content(label: bytes, names: bytes) -> None:
    with tempfile.TemporaryDirectory() as scratch:  # hypothesis re-runs the body; one folder per example
        root = Path(scratch)
        (root / "images").mkdir()
        (root / "labels").mkdir()
        (root / "classes.txt").write_bytes(names)
        (root / "images/a.jpg").write_bytes(b"x")
        (root / "labels/a.txt").write_bytes(label)
        try:
            parsed = yolo.parse(root)
        except DatasetError as error:  # only a names file that cannot be read may stop the parse
            assert "classes.txt" in str(error)
            return
        assert [image.path for image in parsed.images] == ["images/a.jpg"]


@settings(max_examples=40, deadline=None, database=None)
@given(
    xml=st.binary(max_size=200) | st.lists(XML_TOKENS, max_size=30).map(lambda t: "".join(t).encode("utf-8")),
    labelmap=st.none() | st.binary(max_size=60),
    split_list=st.none() | st.binary(max_size=60),
)
def test_whole_voc_parse_never_raises_on_file_content(
    xml: bytes, labelmap: bytes | None, split_list: bytes | None
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "Annotations").mkdir()
        (root / "JPEGImages").mkdir()
        (root / "Annotations/a.xml").write_bytes(xml)
        (root / "JPEGImages/a.jpg").write_bytes(b"x")
        if labelmap is not None:
            (root / "labelmap.txt").write_bytes(labelmap)
        if split_list is not None:
            (root / "ImageSets/Main").mkdir(parents=True)
            (root / "ImageSets/Main/train.txt").write_bytes(split_list)
        parsed = voc.parse(root)  # per-file problems are issues; nothing may escape
        assert [image.path for image in parsed.images] == ["JPEGImages/a.jpg"]
        for box in parsed.images[0].boxes:
            assert 0 <= box.class_index < len(parsed.class_names)
        assert all(issue.file for issue in parsed.issues)


@settings(max_examples=40, deadline=None, database=None)
@given(data=st.binary(max_size=200) | (COCO_DOCUMENT | JSON_VALUES).map(lambda v: json.dumps(v).encode()))
def test_whole_coco_parse_raises_only_dataset_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "annotations").mkdir()
        (root / "images").mkdir()
        (root / "annotations/instances_train.json").write_bytes(data)
        (root / "images/a.jpg").write_bytes(b"x")
        try:
            parsed = coco.parse(root)
        except DatasetError as error:  # only when the one annotation file is no COCO file or unreadable
            assert "no JSON file" in str(error) or "instances_train.json" in str(error)
            return
        for image in parsed.images:
            for box in image.boxes:
                assert 0 <= box.class_index < len(parsed.class_names)


KITTI_TOKENS = YOLO_TOKENS | st.sampled_from(["Car", "DontCare", "Pedestrian", "-10", "3", "4.5", "1e999"])
CREATEML_DOCUMENT = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "image": st.sampled_from(["a.jpg", "b.jpg", "", None, 1]) | JSON_VALUES,
            "annotations": st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "label": st.sampled_from(["cat", "", " ", None]) | JSON_VALUES,
                        "coordinates": st.fixed_dictionaries(
                            {}, optional={key: JSON_SCALARS for key in ("x", "y", "width", "height")}
                        )
                        | JSON_VALUES,
                    },
                )
                | JSON_VALUES,
                max_size=4,
            )
            | JSON_VALUES,
        },
    )
    | JSON_VALUES,
    max_size=4,
)


@FUZZ
@given(data=st.binary(max_size=300) | st.lists(KITTI_TOKENS, max_size=60).map(lambda t: " ".join(t).encode()))
def test_kitti_label_text(data: bytes) -> None:
    try:
        label = kitti.parse_label_text(data, "label_2/a.txt")
    except LabelParseError:
        return
    for obj in label.objects:  # what passes is finite and not inverted; DontCare is never an object
        x0, y0, x1, y1 = obj.coords
        assert all(math.isfinite(v) for v in obj.coords) and x1 >= x0 and y1 >= y0
        assert obj.type != kitti.DONT_CARE
    assert all(issue.file == "label_2/a.txt" and issue.line is not None for issue in label.issues)


@FUZZ
@given(data=st.binary(max_size=300) | (CREATEML_DOCUMENT | JSON_VALUES).map(lambda v: json.dumps(v).encode()))
def test_createml_annotations(data: bytes) -> None:
    try:
        parsed = createml.parse_annotations(data, "_annotations.createml.json")
    except LabelParseError:
        return
    for entry in parsed.entries:
        for box in entry.boxes:
            x0, y0, x1, y1 = box.coords
            assert all(math.isfinite(v) for v in box.coords) and x1 > x0 and y1 > y0
            assert box.label.strip()
    issues = parsed.issues + [i for e in parsed.entries for i in e.issues]
    assert all(i.file == "_annotations.createml.json" and i.annotation_id for i in issues)


@settings(max_examples=40, deadline=None, database=None)
@given(
    label=st.binary(max_size=160) | st.lists(KITTI_TOKENS, max_size=40).map(lambda t: " ".join(t).encode())
)
def test_whole_kitti_parse_never_raises_on_label_content(label: bytes) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "image_2").mkdir()
        (root / "label_2").mkdir()
        (root / "image_2/a.png").write_bytes(b"x")
        (root / "label_2/a.txt").write_bytes(label)
        parsed = kitti.parse(root)
        assert [image.path for image in parsed.images] == ["image_2/a.png"]
        for box in parsed.images[0].boxes:
            assert 0 <= box.class_index < len(parsed.class_names)


@settings(max_examples=40, deadline=None, database=None)
@given(data=st.binary(max_size=200) | (CREATEML_DOCUMENT | JSON_VALUES).map(lambda v: json.dumps(v).encode()))
def test_whole_createml_parse_raises_only_dataset_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "train").mkdir()
        (root / "train/_annotations.createml.json").write_bytes(data)
        (root / "train/a.jpg").write_bytes(b"x")
        try:
            parsed = createml.parse(root)
        except DatasetError as error:  # only when the one annotation file is no CreateML list or unreadable
            assert "_annotations.createml.json" in str(error)
            return
        assert [image.path for image in parsed.images] == ["train/a.jpg"]
        for box in parsed.images[0].boxes:
            assert 0 <= box.class_index < len(parsed.class_names)
