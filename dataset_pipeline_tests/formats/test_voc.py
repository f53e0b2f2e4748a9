"""Pascal VOC parsing and writing: layouts, and one test per malformed-annotation rule."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

from dataset_pipeline.domain.model import (
    DEFAULT_VOC_PIXEL_ORIGIN,
    Box,
    BoxFormat,
    CanonicalDataset,
    CanonicalImage,
    DatasetFormat,
    FormatDetectionError,
    LabelParseError,
    LabelState,
    ParsedDataset,
    Severity,
    VocPixelOrigin,
)
from dataset_pipeline.formats import detect_format, parse_dataset, voc
from dataset_pipeline.formats.common import CodedParseError
from dataset_pipeline_tests.formats.test_roundtrip import assert_survives_every_writer


def write(root: Path, files: dict[str, bytes | str]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def obj(name: str = "cat", box: tuple[str, ...] = ("1", "2", "10", "20"), extra: str = "") -> str:
    xmin, ymin, xmax, ymax = box
    return (
        f"<object><name>{name}</name>{extra}<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
        f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
    )


def xml(
    *objects: str, filename: str = "a.jpg", size: str = "<size><width>40</width><height>30</height></size>"
) -> str:
    body = "\n".join(objects)
    return f"<annotation>\n<filename>{filename}</filename>\n{size}\n{body}\n</annotation>\n"


def parse_xml(
    text: str | bytes, pixel_origin: VocPixelOrigin = DEFAULT_VOC_PIXEL_ORIGIN
) -> voc.VocAnnotation:
    data = text.encode() if isinstance(text, str) else text
    return voc.parse_annotation(data, "Annotations/a.xml", pixel_origin=pixel_origin)


def codes(parsed: ParsedDataset) -> list[str]:
    return [issue.code for issue in parsed.issues]


def test_valid_annotation_converts_one_based_inclusive_coordinates() -> None:
    annotation = parse_xml(
        xml(obj(extra="<difficult>1</difficult><truncated>0</truncated><pose>Left</pose>")), pixel_origin=1
    )
    assert annotation.issues == []
    assert (annotation.filename, annotation.width, annotation.height) == ("a.jpg", 40, 30)
    (item,) = annotation.objects
    assert item.coords == (0.0, 1.0, 10.0, 20.0)
    assert item.attributes == {"difficult": 1, "truncated": 0, "pose": "Left"}
    assert item.line == 4


def test_unsafe_xml_with_entities_is_refused() -> None:
    bomb = '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx"><!ENTITY y "&x;&x;&x;">]><annotation>&y;</annotation>'
    with pytest.raises(LabelParseError) as caught:
        parse_xml(bomb)
    assert isinstance(caught.value, CodedParseError) and caught.value.code == "voc.xml_unsafe"


def test_external_entity_is_refused() -> None:
    text = '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]><annotation>&e;</annotation>'
    with pytest.raises(CodedParseError, match="DTD") as caught:
        parse_xml(text)
    assert caught.value.code == "voc.xml_unsafe"


@pytest.mark.parametrize(
    "text",
    [
        # billion laughs, nested ten levels deep
        '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY l0 "lol">'
        + "".join(f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' for n in range(1, 10))
        + "]><annotation>&l9;</annotation>",
        '<!DOCTYPE annotation SYSTEM "http://example.invalid/voc.dtd"><annotation/>',  # external DTD
        '<!DOCTYPE a [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><annotation/>',  # parameter entity
        "<!DOCTYPE annotation><annotation><filename>a.jpg</filename></annotation>",  # any DTD at all
    ],
)
def test_every_dtd_is_refused_before_expansion(text: str) -> None:
    with pytest.raises(CodedParseError) as caught:
        parse_xml(text)
    assert (caught.value.code, caught.value.file) == ("voc.xml_unsafe", "Annotations/a.xml")


def test_malformed_xml_reports_line() -> None:
    with pytest.raises(CodedParseError) as caught:
        parse_xml("<annotation>\n<object>\n<name>cat</nam>\n</annotation>")
    assert (caught.value.code, caught.value.line) == ("voc.xml_malformed", 3)


def test_wrong_root_element_is_an_error() -> None:
    with pytest.raises(CodedParseError) as caught:
        parse_xml("<annotations/>")
    assert caught.value.code == "voc.xml_structure"


@pytest.mark.parametrize("value", ["ten", "0x10", "NaN", "1e999", ""])
def test_non_numeric_coordinate_is_an_error(value: str) -> None:
    annotation = parse_xml(xml(obj(box=("1", "2", value, "20"))))
    assert annotation.objects == []
    assert [(i.code, i.annotation_id, i.line) for i in annotation.issues] == [
        ("voc.coordinate_not_numeric", "1", 4)
    ]


@pytest.mark.parametrize("pixel_origin", [0, 1])
def test_inverted_coordinates_are_an_error(pixel_origin: VocPixelOrigin) -> None:
    annotation = parse_xml(xml(obj(), obj(box=("10", "2", "5", "20"))), pixel_origin)
    assert [(i.code, i.file, i.line, i.annotation_id) for i in annotation.issues] == [
        ("voc.coordinate_inverted", "Annotations/a.xml", 5, "2")
    ]
    assert f"pixel origin {pixel_origin}" in annotation.issues[0].message
    assert [o.number for o in annotation.objects] == [1]


def test_equal_coordinates_follow_the_pixel_origin() -> None:
    """Devkit pixels are inclusive, so xmin == xmax is one pixel wide; as edges it is a zero-size box, which is
    kept for the degenerate-box rule; below it is inverted either way."""
    single_pixel = parse_xml(xml(obj(box=("5", "5", "5", "5"))), pixel_origin=1)
    assert single_pixel.objects[0].coords == (4.0, 4.0, 5.0, 5.0)
    zero_size = parse_xml(xml(obj(box=("5", "5", "5", "5"))), pixel_origin=0)
    assert (zero_size.issues, zero_size.objects[0].coords) == ([], (5.0, 5.0, 5.0, 5.0))
    one_based_empty = parse_xml(xml(obj(box=("5", "5", "4", "9"))), pixel_origin=1)
    assert [i.code for i in one_based_empty.issues] == ["voc.coordinate_inverted"]
    below = parse_xml(xml(obj(box=("5", "5", "9", "4.5"))), pixel_origin=0)
    assert [i.code for i in below.issues] == ["voc.coordinate_inverted"]


def test_pixel_origin_shifts_only_the_minimum_corner(tmp_path: Path) -> None:
    text = xml(obj("cat", ("1", "2", "10", "20")), obj("dog", ("3.5", "0", "7.25", "30")))
    edges = parse_xml(text, pixel_origin=0)
    devkit = parse_xml(text, pixel_origin=1)
    assert [o.coords for o in edges.objects] == [(1.0, 2.0, 10.0, 20.0), (3.5, 0.0, 7.25, 30.0)]
    for a, b in zip(edges.objects, devkit.objects, strict=True):
        assert (a.coords[0] - b.coords[0], a.coords[1] - b.coords[1]) == (1.0, 1.0)
        assert a.coords[2:] == b.coords[2:]
    # The default is origin 0, for voc.parse and parse_dataset alike, and both pass the origin through.
    write(tmp_path, {"Annotations/a.xml": text, "JPEGImages/a.jpg": b"x"})
    by_origin = {
        origin: [b.coords for b in parse_dataset(tmp_path, voc_pixel_origin=origin).images[0].boxes]
        for origin in (0, 1)
    }
    assert [b.coords for b in voc.parse(tmp_path).images[0].boxes] == by_origin[0]
    assert [b.coords for b in parse_dataset(tmp_path).images[0].boxes] == by_origin[0]
    assert by_origin[0] == [o.coords for o in edges.objects]
    assert by_origin[1] == [o.coords for o in devkit.objects]


def test_object_without_name_or_bndbox_is_an_error() -> None:
    annotation = parse_xml(xml("<object><name>cat</name></object>", "<object><bndbox/></object>"))
    assert [i.code for i in annotation.issues] == ["voc.bndbox_missing", "voc.name_missing"]
    assert annotation.object_count == 2


def test_bad_flag_value_warns_and_is_dropped() -> None:
    annotation = parse_xml(xml(obj(extra="<difficult>maybe</difficult><occluded>1</occluded>")))
    assert [(i.code, i.severity) for i in annotation.issues] == [("voc.attribute_invalid", Severity.WARNING)]
    assert annotation.objects[0].attributes == {"occluded": 1}


def test_invalid_size_warns() -> None:
    annotation = parse_xml(xml(size="<size><width>0</width><height>abc</height></size>"))
    assert [(i.code, i.file, i.line) for i in annotation.issues] == [
        ("voc.size_invalid", "Annotations/a.xml", 3)
    ]
    assert annotation.width is None


def test_labelmap_reads_names_and_skips_comments() -> None:
    names, issues = voc.parse_labelmap(
        b"# label:color_rgb:parts:actions\ncat:1,2,3::\n\ndog:4,5,6::\ncat:0,0,0::\n", "labelmap.txt"
    )
    assert names == ["cat", "dog"]
    assert [(i.code, i.line) for i in issues] == [("voc.labelmap_duplicate", 5)]


# --- layouts ----------------------------------------------------------------------------------------------


def test_full_layout(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "Annotations/a.xml": xml(obj("dog"), obj("cat", ("3", "3", "8", "8"))),
            "Annotations/b.xml": xml(filename="b.jpg"),
            "JPEGImages/a.jpg": b"x",
            "JPEGImages/b.jpg": b"x",
            "JPEGImages/c.jpg": b"x",
            "ImageSets/Main/train.txt": "a\nc\n",
            "ImageSets/Main/val.txt": "b\n# comment\n\nghost\n",
            "ImageSets/Main/cat_train.txt": "a 1\nc -1\n",
            "ImageSets/Main/trainval.txt": "a\nb\nc\n",
        },
    )
    parsed = voc.parse(tmp_path, pixel_origin=1)
    assert parsed.class_names == ["cat", "dog"]
    summary = [(i.path, i.split, i.label_state, i.source_id) for i in parsed.images]
    assert summary == [
        ("JPEGImages/a.jpg", "train", LabelState.LABELLED, "a"),
        ("JPEGImages/b.jpg", "val", LabelState.BACKGROUND, "b"),
        ("JPEGImages/c.jpg", "train", LabelState.UNLABELLED, None),
    ]
    boxes = parsed.images[0].boxes
    assert [(b.class_index, b.coords, b.coords_format) for b in boxes] == [
        (1, (0.0, 1.0, 10.0, 20.0), BoxFormat.XYXY_PIXELS),
        (0, (2.0, 2.0, 8.0, 8.0), BoxFormat.XYXY_PIXELS),
    ]
    assert parsed.images[0].declared_width == 40
    assert [(i.code, i.file, i.line) for i in parsed.issues] == [
        ("voc.split_entry_missing", "ImageSets/Main/val.txt", 4)
    ]


def test_unknown_class_with_labelmap_is_an_error(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "labelmap.txt": "# label:color_rgb:parts:actions\nbackground:0,0,0::\ncat:1,1,1::\n",
            "Annotations/a.xml": xml(obj("cat"), obj("zebra")),
            "JPEGImages/a.jpg": b"x",
        },
    )
    parsed = voc.parse(tmp_path)
    assert parsed.class_names == ["background", "cat"]
    (issue,) = parsed.issues
    assert (issue.code, issue.severity, issue.file, issue.line, issue.annotation_id, issue.image) == (
        "voc.unknown_class",
        Severity.ERROR,
        "Annotations/a.xml",
        5,
        "2",
        "JPEGImages/a.jpg",
    )
    assert "zebra" in issue.message
    assert [b.class_index for b in parsed.images[0].boxes] == [1]


def test_unsafe_xml_is_an_issue_naming_the_file(tmp_path: Path) -> None:
    bomb = '<!DOCTYPE a [<!ENTITY x "x">]><annotation>&x;</annotation>'
    write(tmp_path, {"Annotations/a.xml": bomb, "JPEGImages/a.jpg": b"x"})
    parsed = voc.parse(tmp_path)
    (issue,) = parsed.issues
    assert (issue.code, issue.file, issue.image) == (
        "voc.xml_unsafe",
        "Annotations/a.xml",
        "JPEGImages/a.jpg",
    )
    assert parsed.images[0].label_state is LabelState.UNLABELLED


def test_malformed_xml_is_an_issue_with_line(tmp_path: Path) -> None:
    write(tmp_path, {"Annotations/a.xml": "<annotation>\n<object>\n</annotation>", "JPEGImages/a.jpg": b"x"})
    (issue,) = voc.parse(tmp_path).issues
    assert (issue.code, issue.line) == ("voc.xml_malformed", 3)


def test_annotation_without_image_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, {"Annotations/a.xml": xml(obj())})
    parsed = voc.parse(tmp_path)
    assert parsed.images == []
    assert [(i.code, i.severity) for i in parsed.issues] == [("voc.image_missing", Severity.ERROR)]


def test_image_found_by_stem_when_filename_differs(tmp_path: Path) -> None:
    write(tmp_path, {"Annotations/a.xml": xml(obj(), filename="a"), "JPEGImages/a.png": b"x"})
    parsed = voc.parse(tmp_path)
    assert [i.path for i in parsed.images] == ["JPEGImages/a.png"]


# --- render -----------------------------------------------------------------------------------------------


def _dataset() -> CanonicalDataset:
    return CanonicalDataset(
        ["cat", "dog"],
        [
            CanonicalImage(
                "a.jpg",
                Path("/s/a.jpg"),
                40,
                30,
                "train",
                [Box(1, 0.0, 1.0, 10.0, 20.0, {"difficult": 1, "pose": "Left"}), Box(0, 2.5, 3.0, 7.25, 9.0)],
            ),
            CanonicalImage("b.jpg", Path("/s/b.jpg"), 40, 30, "val", [], LabelState.BACKGROUND),
            CanonicalImage("c.jpg", Path("/s/c.jpg"), 40, 30, "val", [], LabelState.UNLABELLED),
        ],
    )


def test_render_writes_voc_layout_with_inverse_coordinates() -> None:
    rendered = voc.render(_dataset(), pixel_origin=1)
    assert sorted(rendered.label_files) == [
        "Annotations/a.xml",
        "Annotations/b.xml",
        "ImageSets/Main/train.txt",
        "ImageSets/Main/val.txt",
        "labelmap.txt",
    ]
    root = ET.fromstring(rendered.label_files["Annotations/a.xml"])
    assert root.findtext("size/width") == "40"
    first, second = root.findall("object")
    assert first.findtext("name") == "dog"
    assert [first.findtext(f"bndbox/{t}") for t in ("xmin", "ymin", "xmax", "ymax")] == ["1", "2", "10", "20"]
    assert (first.findtext("difficult"), first.findtext("pose")) == ("1", "Left")
    assert [second.findtext(f"bndbox/{t}") for t in ("xmin", "ymin", "xmax", "ymax")] == [
        "3.5",
        "4",
        "7.25",
        "9",
    ]
    assert rendered.label_files["ImageSets/Main/val.txt"] == b"b\nc\n"
    assert rendered.label_files["labelmap.txt"].decode().splitlines() == [
        "# label:color_rgb:parts:actions",
        "cat:128,0,0::",
        "dog:0,128,0::",
    ]
    assert rendered.image_paths == {
        "a.jpg": "JPEGImages/a.jpg",
        "b.jpg": "JPEGImages/b.jpg",
        "c.jpg": "JPEGImages/c.jpg",
    }


def test_render_is_byte_identical() -> None:
    reordered = _dataset()
    reordered.images.reverse()
    assert voc.render(_dataset()) == voc.render(reordered)


def test_render_refuses_class_names_labelmap_cannot_hold() -> None:
    dataset = _dataset()
    dataset.class_names[0] = "a:b"
    with pytest.raises(ValueError, match="labelmap"):
        voc.render(dataset)


# --- XML beside its image (Roboflow's "Pascal VOC" export) -------------------------------------------------


def roboflow_voc(root: Path) -> Path:
    files: dict[str, bytes | str] = {
        "train/a.xml": xml(obj("dog", ("10", "5", "30", "25")), obj("cat", ("0", "0", "40", "30"))),
        "train/b.xml": xml(filename="b.jpg"),
        "valid/c.xml": xml(obj("cat", ("2.5", "3", "7", "9.5")), filename="c.jpg"),
        "README.roboflow.txt": "exported",
    }
    write(root, files)
    for rel in ("train/a.jpg", "train/b.jpg", "train/d.jpg", "valid/c.jpg"):
        Image.new("RGB", (40, 30), (10, 20, 30)).save(root / rel)
    return root


def test_side_by_side_split_folders(tmp_path: Path) -> None:
    root = roboflow_voc(tmp_path)
    assert detect_format(root) is DatasetFormat.VOC
    parsed = parse_dataset(root)
    assert (parsed.format, parsed.layout) == (DatasetFormat.VOC, "voc_side_by_side")
    assert parsed.class_names == ["cat", "dog"]  # no labelmap.txt: the names met, sorted, as in the devkit
    summary = [(i.path, i.split, i.label_state, i.label_file, i.source_id) for i in parsed.images]
    assert summary == [
        ("train/a.jpg", "train", LabelState.LABELLED, "train/a.xml", "a"),
        ("train/b.jpg", "train", LabelState.BACKGROUND, "train/b.xml", "b"),
        ("train/d.jpg", "train", LabelState.UNLABELLED, None, None),
        ("valid/c.jpg", "val", LabelState.LABELLED, "valid/c.xml", "c"),
    ]
    dog, cat = parsed.images[0].boxes
    assert [(b.class_index, b.coords, b.line, b.annotation_id) for b in (dog, cat)] == [
        (1, (10.0, 5.0, 30.0, 25.0), 4, "1"),
        (0, (0.0, 0.0, 40.0, 30.0), 5, "2"),
    ]
    assert parsed.images[3].boxes[0].coords == (2.5, 3.0, 7.0, 9.5)
    assert parsed.images[0].declared_width == 40
    assert parsed.issues == []
    # The pixel origin applies to this layout too.
    devkit = parse_dataset(root, voc_pixel_origin=1)
    assert [b.coords for b in devkit.images[0].boxes] == [(9.0, 4.0, 30.0, 25.0), (-1.0, -1.0, 40.0, 30.0)]


def test_side_by_side_flat_folder_and_wrapped(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "export/a.xml": xml(obj("cat"), filename="a.png"),
            "export/a.png": b"x",
            "export/b.jpg": b"x",
            "export/labelmap.txt": "cat:0,0,0::\nzebra:1,1,1::\n",
        },
    )
    parsed = parse_dataset(tmp_path)
    assert (parsed.layout, parsed.class_names) == ("voc_side_by_side", ["cat", "zebra"])
    assert [(i.path, i.split, i.label_state) for i in parsed.images] == [
        ("export/a.png", None, LabelState.LABELLED),
        ("export/b.jpg", None, LabelState.UNLABELLED),
    ]


def test_side_by_side_problems_name_file_and_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "train/a.xml": xml(obj("cat"), obj("cat", ("9", "2", "3", "20"))),
            "train/a.jpg": b"x",
            "train/b.xml": "<annotation>\n<object>\n</annotation>",
            "train/b.jpg": b"x",
            "train/c.xml": xml(filename="c.jpg"),
            "train/e.jpg": b"x",
        },
    )
    parsed = voc.parse(tmp_path)
    found = [(i.code, i.file, i.line, i.annotation_id, i.image) for i in parsed.issues]
    assert found == [
        ("voc.xml_malformed", "train/b.xml", 3, None, "train/b.jpg"),
        ("voc.image_missing", "train/c.xml", None, None, None),
        ("voc.coordinate_inverted", "train/a.xml", 5, "2", "train/a.jpg"),
    ]
    assert "train/c.jpg" in parsed.issues[1].message
    states = {i.path: i.label_state for i in parsed.images}
    assert states == {
        "train/a.jpg": LabelState.LABELLED,
        "train/b.jpg": LabelState.UNLABELLED,
        "train/e.jpg": LabelState.UNLABELLED,
    }


def test_xml_beside_images_that_is_not_voc_is_not_detected(tmp_path: Path) -> None:
    write(tmp_path, {"a.xml": "<metadata><camera>x</camera></metadata>", "a.jpg": b"x"})
    assert not voc.looks_side_by_side(tmp_path, ["a.jpg", "a.xml"])
    with pytest.raises(FormatDetectionError):
        detect_format(tmp_path)


def test_side_by_side_survives_every_writer(tmp_path: Path) -> None:
    root = roboflow_voc(tmp_path / "upload")
    dataset = assert_survives_every_writer(parse_dataset(root), root, tmp_path / "out")
    assert {i.file_name: len(i.boxes) for i in dataset.images} == {
        "a.jpg": 2,
        "b.jpg": 0,
        "c.jpg": 1,
        "d.jpg": 0,
    }


def _elementtree_annotation(image: CanonicalImage, class_names: list[str], origin: int) -> bytes:
    """The annotation as ElementTree writes it: the reference the text template must equal byte for byte."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = image.file_name
    size = ET.SubElement(root, "size")
    for tag, value in (("width", image.width), ("height", image.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for box in image.boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = class_names[box.class_index]
        ET.SubElement(obj, "pose").text = str(box.attributes.get("pose", "Unspecified"))
        for flag in ("truncated", "occluded", "difficult"):
            ET.SubElement(obj, flag).text = str(int(bool(box.attributes.get(flag, 0))))
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in zip(
            ("xmin", "ymin", "xmax", "ymax"),
            (box.x_min + origin, box.y_min + origin, box.x_max, box.y_max),
            strict=True,
        ):
            ET.SubElement(bndbox, tag).text = voc._number_text(value)
    ET.indent(root, space="  ")
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
    ).encode()


@pytest.mark.parametrize("origin", [0, 1])
def test_the_xml_template_writes_what_elementtree_would(origin: int) -> None:
    hostile = [
        "a&b",
        "<tag>",
        "x > y",
        'quote"s',
        "it's",
        "ümlaut 日本",
    ]  # labelmap.txt refuses control characters
    names = ["car", *hostile]
    boxes = [
        Box(
            i % len(names),
            0.5 * i,
            1.0,
            10.123456 + i,
            20.0,
            {"pose": pose, "truncated": i % 2, "occluded": 1},
        )
        for i, pose in enumerate(["Left", "", "a&b<c>", "Unspecified", 7])
    ]
    images = [
        CanonicalImage("a&b <1>.jpg", Path("/s/a.jpg"), 40, 30, "train", boxes),
        CanonicalImage("bg.jpg", Path("/s/bg.jpg"), 64, 48, "train", [], LabelState.BACKGROUND),
    ]
    dataset = CanonicalDataset(names, images)
    rendered = voc.render(dataset, pixel_origin=origin)
    for image in images:
        stem = image.file_name.rsplit(".", 1)[0]
        assert rendered.label_files[f"Annotations/{stem}.xml"] == _elementtree_annotation(
            image, names, origin
        )
