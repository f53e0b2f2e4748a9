"""YOLO parsing and writing: layouts, and one test per malformed-label rule."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dataset_pipeline.domain.model import (
    Box,
    BoxFormat,
    CanonicalDataset,
    CanonicalImage,
    DatasetError,
    LabelParseError,
    LabelState,
    ParsedDataset,
    Severity,
)
from dataset_pipeline.formats import yolo

NAMES_YAML = b"names: [cat, dog]\ntrain: images/train\nval: images/val\n"
TRAIN_YAML = b"names: [cat, dog]\ntrain: images/train\n"


def write(root: Path, files: dict[str, bytes | str]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def codes(parsed: ParsedDataset) -> list[str]:
    return [issue.code for issue in parsed.issues]


def label(data: bytes | str, num_classes: int = 2):
    raw = data.encode() if isinstance(data, str) else data
    return yolo.parse_label_text(raw, "labels/train/a.txt", num_classes)


def only_issue(data: bytes | str, num_classes: int = 2, line: int = 1):
    """The single issue of a label text; it must name the label file and the line it is about."""
    boxes, issues = label(data, num_classes)
    assert len(issues) == 1, issues
    assert (issues[0].file, issues[0].line) == ("labels/train/a.txt", line)
    assert issues[0].message
    return boxes, issues[0]


# --- label lines ------------------------------------------------------------------------------------------


def test_valid_line_gives_normalised_box() -> None:
    boxes, issues = label("1 0.5 0.25 0.2 0.1\n")
    assert issues == []
    assert boxes[0].class_index == 1
    assert boxes[0].coords == (0.5, 0.25, 0.2, 0.1)
    assert boxes[0].coords_format is BoxFormat.CXCYWH_NORMALIZED
    assert boxes[0].line == 1


def test_crlf_bom_and_trailing_blank_lines_are_accepted() -> None:
    boxes, issues = label(b"\xef\xbb\xbf0 0.5 0.5 0.2 0.2\r\n1 0.3 0.3 0.1 0.1\r\n\r\n  \n")
    assert issues == []
    assert [b.line for b in boxes] == [1, 2]


def test_too_many_columns_is_an_error() -> None:
    boxes, issue = only_issue("0 0.5 0.5 0.2 0.2 0.9\n")
    assert boxes == []
    assert (issue.code, issue.severity, issue.line) == ("yolo.column_count", Severity.ERROR, 1)
    assert "confidence" in issue.message


def test_polygon_line_is_reported_as_unsupported() -> None:
    _, issue = only_issue("0 0.1 0.1 0.5 0.1 0.5 0.5 0.1 0.5\n")
    assert issue.code == "yolo.column_count"
    assert "polygon" in issue.message and "unsupported" in issue.message


def test_too_few_columns_is_an_error() -> None:
    _, issue = only_issue("0 0.5 0.5 0.2\n")
    assert issue.code == "yolo.column_count"


@pytest.mark.parametrize("token", ["0x1", "nan", "inf", "-Infinity", "1_0", "0,5", "abc", "1e", ".", "+-1"])
def test_non_decimal_values_are_errors(token: str) -> None:
    _, issue = only_issue(f"0 {token} 0.5 0.2 0.2\n")
    assert issue.code == "yolo.not_numeric"


def test_huge_exponent_is_not_finite() -> None:
    _, issue = only_issue("0 1e400 0.5 0.2 0.2\n")
    assert issue.code == "yolo.not_finite"


def test_arabic_indic_digits_are_rejected() -> None:
    _, issue = only_issue("٠ ٠.٥ 0.5 0.2 0.2\n")
    assert issue.code == "yolo.non_ascii"


def test_class_id_outside_names_is_an_error() -> None:
    _, issue = only_issue("2 0.5 0.5 0.2 0.2\n", num_classes=2)
    assert issue.code == "yolo.class_out_of_range"
    _, issue = only_issue("-1 0.5 0.5 0.2 0.2\n", num_classes=2)
    assert issue.code == "yolo.class_out_of_range"


def test_fractional_class_id_is_an_error_but_integral_float_is_fine() -> None:
    _, issue = only_issue("0.5 0.5 0.5 0.2 0.2\n")
    assert issue.code == "yolo.class_not_integer"
    boxes, issues = label("1.0 0.5 0.5 0.2 0.2\n")
    assert issues == [] and boxes[0].class_index == 1


def test_pixel_coordinates_are_far_out_of_range() -> None:
    boxes, issue = only_issue("0 320 240 50 40\n")
    assert boxes == []
    assert (issue.code, issue.severity) == ("yolo.out_of_range", Severity.ERROR)


def test_slightly_out_of_range_is_a_warning_and_keeps_the_box() -> None:
    boxes, issue = only_issue("0 1.004 0.5 0.2 0.2\n")
    assert (issue.code, issue.severity) == ("yolo.slightly_out_of_range", Severity.WARNING)
    assert len(boxes) == 1


def test_float_noise_within_tolerance_passes_silently() -> None:
    boxes, issues = label("0 0.5 0.5 1.0000004 0.2\n")
    assert issues == [] and len(boxes) == 1


def test_box_reaching_past_the_edge_is_left_to_validation() -> None:
    boxes, issues = label("0 0.95 0.5 0.2 0.2\n")
    assert issues == [] and len(boxes) == 1


@pytest.mark.parametrize("size", ["0 0.2", "0.2 0", "-0.1 0.2"])
def test_non_positive_width_or_height_is_an_error(size: str) -> None:
    _, issue = only_issue(f"0 0.5 0.5 {size}\n")
    assert issue.code == "yolo.non_positive_size"


def test_duplicate_lines_are_kept_for_validation_to_judge() -> None:
    boxes, issues = label("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n")
    assert issues == [] and len(boxes) == 2


def test_bad_line_does_not_hide_the_good_ones() -> None:
    boxes, issues = label("0 0.5 0.5 0.2 0.2\nrubbish\n1 0.3 0.3 0.1 0.1\n")
    assert [b.line for b in boxes] == [1, 3]
    assert [(i.code, i.line) for i in issues] == [("yolo.column_count", 2)]


def test_non_utf8_label_raises_label_parse_error() -> None:
    with pytest.raises(LabelParseError) as caught:
        label(b"0 0.5 0.5 0.2 0.2\n\xff\xfe\n")
    assert caught.value.line == 2


def test_non_utf8_after_a_bom_names_the_right_line_and_byte() -> None:
    with pytest.raises(LabelParseError) as caught:
        label(b"\xef\xbb\xbf0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n\xff\n")
    assert (caught.value.file, caught.value.line) == ("labels/train/a.txt", 3)
    assert "byte 0xff at offset 39" in str(caught.value)


def test_bad_line_after_good_ones_names_its_own_line() -> None:
    _, issue = only_issue("0 0.5 0.5 0.2 0.2\n\n1 0.5 0.5 0.2\n", line=3)
    assert issue.code == "yolo.column_count"


# --- data.yaml / names ------------------------------------------------------------------------------------


def test_names_as_dict_with_gap_are_filled_and_warned() -> None:
    _, names, issues = yolo.parse_data_yaml(b"names: {0: cat, 2: dog}\n", "data.yaml")
    assert names == ["cat", "class_1", "dog"]
    assert [i.code for i in issues] == ["yolo.names_gap"]


def test_names_dict_with_string_keys() -> None:
    _, names, issues = yolo.parse_data_yaml(b"names:\n  '0': cat\n  '1': dog\nnc: 2\n", "data.yaml")
    assert names == ["cat", "dog"] and issues == []


def test_nc_mismatch_warns() -> None:
    _, names, issues = yolo.parse_data_yaml(b"nc: 3\nnames: [a, b]\n", "data.yaml")
    assert names == ["a", "b"]
    assert [i.code for i in issues] == ["yolo.nc_mismatch"]


def test_invalid_yaml_is_a_dataset_error(tmp_path: Path) -> None:
    write(tmp_path, {"data.yaml": "names: [a, b\n", "images/a.jpg": b"x", "labels/a.txt": ""})
    with pytest.raises(DatasetError, match=r"data.yaml.*YAML"):
        yolo.parse(tmp_path)


def test_no_class_names_at_all_is_a_dataset_error(tmp_path: Path) -> None:
    write(tmp_path, {"images/a.jpg": b"x", "labels/a.txt": "0 0.5 0.5 0.1 0.1\n"})
    with pytest.raises(DatasetError, match=r"classes\.txt"):
        yolo.parse(tmp_path)


# --- layouts ----------------------------------------------------------------------------------------------


def test_ultralytics_layout_with_states(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "data.yaml": NAMES_YAML,
            "images/train/a.jpg": b"x",
            "images/train/b.png": b"x",
            "images/train/c.jpg": b"x",
            "images/val/d.jpg": b"x",
            "labels/train/a.txt": "1 0.5 0.5 0.2 0.2\n",
            "labels/train/b.txt": "",
            "labels/val/d.txt": " \n\n",
            "labels/train/orphan.txt": "0 0.5 0.5 0.2 0.2\n",
        },
    )
    parsed = yolo.parse(tmp_path)
    assert parsed.layout == "ultralytics"
    assert parsed.class_names == ["cat", "dog"]
    by_path = {image.path: image for image in parsed.images}
    assert by_path["images/train/a.jpg"].label_state is LabelState.LABELLED
    assert by_path["images/train/a.jpg"].label_file == "labels/train/a.txt"
    assert by_path["images/train/b.png"].label_state is LabelState.BACKGROUND
    assert by_path["images/train/c.jpg"].label_state is LabelState.UNLABELLED
    assert by_path["images/val/d.jpg"].label_state is LabelState.BACKGROUND
    assert {i.split for i in parsed.images} == {"train", "val"}
    orphan = [i for i in parsed.issues if i.code == "yolo.orphan_label"]
    assert [i.file for i in orphan] == ["labels/train/orphan.txt"]


def test_label_issues_name_file_line_and_image(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "data.yaml": TRAIN_YAML,
            "images/train/a.jpg": b"x",
            "labels/train/a.txt": "0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.2 0.2\n",
        },
    )
    (issue,) = yolo.parse(tmp_path).issues
    assert (issue.file, issue.line, issue.image) == ("labels/train/a.txt", 2, "images/train/a.jpg")
    assert issue.code == "yolo.class_out_of_range"


def test_non_utf8_label_file_is_an_issue_not_an_exception(tmp_path: Path) -> None:
    write(
        tmp_path, {"data.yaml": TRAIN_YAML, "images/train/a.jpg": b"x", "labels/train/a.txt": b"\xff\xfe0 1"}
    )
    parsed = yolo.parse(tmp_path)
    assert codes(parsed) == ["text.not_utf8"]
    assert parsed.issues[0].image == "images/train/a.jpg"


def test_txt_split_lists_and_path_key(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "data.yaml": "path: ds\ntrain: train.txt\nval: [images/v]\nnames: {0: cat}\n",
            "ds/train.txt": "./images/t/a.jpg\nimages/t/b.jpg\n/abs/elsewhere/images/t/c.jpg\nmissing.jpg\n",
            "ds/images/t/a.jpg": b"x",
            "ds/images/t/b.jpg": b"x",
            "ds/images/t/c.jpg": b"x",
            "ds/images/v/d.jpg": b"x",
            "ds/labels/t/a.txt": "0 0.5 0.5 0.2 0.2\n",
        },
    )
    parsed = yolo.parse(tmp_path)
    splits = {image.path: image.split for image in parsed.images}
    assert splits == {
        "ds/images/t/a.jpg": "train",
        "ds/images/t/b.jpg": "train",
        "ds/images/t/c.jpg": "train",
        "ds/images/v/d.jpg": "val",
    }
    missing = [i for i in parsed.issues if i.code == "yolo.list_entry_missing"]
    assert [(i.file, i.line) for i in missing] == [("ds/train.txt", 4)]


def test_roboflow_parent_relative_paths(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "data.yaml": "train: ../train/images\nval: ../valid/images\nnc: 1\nnames: ['cat']\n",
            "train/images/a.jpg": b"x",
            "train/labels/a.txt": "0 0.5 0.5 0.2 0.2\n",
            "valid/images/b.jpg": b"x",
            "valid/labels/b.txt": "",
        },
    )
    parsed = yolo.parse(tmp_path)
    assert [(i.path, i.split, i.label_state) for i in parsed.images] == [
        ("train/images/a.jpg", "train", LabelState.LABELLED),
        ("valid/images/b.jpg", "val", LabelState.BACKGROUND),
    ]
    assert parsed.issues == []


def test_images_outside_declared_splits_are_reported(tmp_path: Path) -> None:
    write(tmp_path, {"data.yaml": TRAIN_YAML, "images/train/a.jpg": b"x", "images/other/b.jpg": b"x"})
    parsed = yolo.parse(tmp_path)
    assert [i.path for i in parsed.images] == ["images/train/a.jpg"]
    assert "yolo.images_not_in_split" in codes(parsed)


def test_unresolvable_splits_fall_back_to_folder_names(tmp_path: Path) -> None:
    write(
        tmp_path,
        {"data.yaml": "train: nowhere\nnames: [a]\n", "images/train/a.jpg": b"x", "images/valid/b.jpg": b"x"},
    )
    parsed = yolo.parse(tmp_path)
    assert {i.path: i.split for i in parsed.images} == {
        "images/train/a.jpg": "train",
        "images/valid/b.jpg": "val",
    }
    assert "yolo.split_path_missing" in codes(parsed) and "yolo.splits_unresolved" in codes(parsed)


def test_flat_images_and_labels_without_split(tmp_path: Path) -> None:
    write(
        tmp_path,
        {"data.yaml": "names: [a]\n", "images/a.jpg": b"x", "labels/a.txt": "0 0.5 0.5 0.2 0.2\n"},
    )
    (image,) = yolo.parse(tmp_path).images
    assert (image.path, image.split, image.label_file) == ("images/a.jpg", None, "labels/a.txt")


def test_darknet_obj_data_and_train_list(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "obj.data": "classes = 2\ntrain = data/train.txt\nnames = data/obj.names\nbackup = backup/\n",
            "obj.names": "cat\ndog\n\n",
            "train.txt": "data/obj_train_data/a.jpg\ndata/obj_train_data/b.jpg\n",
            "obj_train_data/a.jpg": b"x",
            "obj_train_data/a.txt": "1 0.5 0.5 0.2 0.2\n",
            "obj_train_data/b.jpg": b"x",
        },
    )
    parsed = yolo.parse(tmp_path)
    assert parsed.layout == "darknet"
    assert parsed.class_names == ["cat", "dog"]
    assert [(i.path, i.split, i.label_state) for i in parsed.images] == [
        ("obj_train_data/a.jpg", "train", LabelState.LABELLED),
        ("obj_train_data/b.jpg", "train", LabelState.UNLABELLED),
    ]
    assert parsed.issues == []


def test_classes_txt_with_labels_beside_images(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "classes.txt": "a\nb\n",
            "pics/x.jpg": b"x",
            "pics/x.txt": "1 0.5 0.5 0.2 0.2\n",
            "pics/lost.txt": "",
        },
    )
    parsed = yolo.parse(tmp_path)
    assert parsed.images[0].boxes[0].class_index == 1
    assert [(i.code, i.file) for i in parsed.issues] == [("yolo.orphan_label", "pics/lost.txt")]


def test_two_images_sharing_one_label_file_warn(tmp_path: Path) -> None:
    write(tmp_path, {"data.yaml": TRAIN_YAML, "images/train/a.jpg": b"x", "images/train/a.png": b"x"})
    write(tmp_path, {"labels/train/a.txt": "0 0.5 0.5 0.2 0.2\n"})
    assert "yolo.shared_label" in codes(yolo.parse(tmp_path))


# --- render -----------------------------------------------------------------------------------------------


def _dataset() -> CanonicalDataset:
    return CanonicalDataset(
        ["cat", "dog"],
        [
            CanonicalImage("b.jpg", Path("/src/b.jpg"), 100, 50, "val", [], LabelState.BACKGROUND),
            CanonicalImage("a.jpg", Path("/src/a.jpg"), 100, 50, "train", [Box(1, 10, 5, 30, 25)]),
            CanonicalImage("c.jpg", Path("/src/c.jpg"), 100, 50, "train", [], LabelState.UNLABELLED),
        ],
    )


def test_render_writes_ultralytics_layout() -> None:
    rendered = yolo.render(_dataset())
    config = yaml.safe_load(rendered.label_files["data.yaml"])
    assert config == {  # no `path`: Ultralytics resolves the folders against the yaml's own folder
        "train": "images/train",
        "val": "images/val",
        "nc": 2,
        "names": {0: "cat", 1: "dog"},
    }
    assert rendered.label_files["labels/train/a.txt"] == b"1 0.2 0.3 0.2 0.4\n"
    assert rendered.label_files["labels/val/b.txt"] == b""
    assert "labels/train/c.txt" not in rendered.label_files
    assert rendered.image_paths == {
        "a.jpg": "images/train/a.jpg",
        "c.jpg": "images/train/c.jpg",
        "b.jpg": "images/val/b.jpg",
    }


def test_render_is_byte_identical_and_order_independent() -> None:
    first = yolo.render(_dataset())
    reordered = _dataset()
    reordered.images.reverse()
    second = yolo.render(reordered)
    assert first.label_files == second.label_files
    assert list(first.label_files) == list(second.label_files)


def test_render_refuses_colliding_stems() -> None:
    dataset = _dataset()
    dataset.images.append(CanonicalImage("a.png", Path("/src/a.png"), 10, 10, "train", []))
    with pytest.raises(ValueError, match="stem"):
        yolo.render(dataset)


def test_list_entries_cannot_reach_outside_the_upload(tmp_path: Path) -> None:
    (tmp_path / "outside.jpg").write_bytes(b"x")
    root = write(
        tmp_path / "upload",
        {
            "data.yaml": "train: train.txt\nnames: [a]\n",
            "train.txt": "../outside.jpg\n",
            "images/a.jpg": b"x",
        },
    )
    parsed = yolo.parse(root)
    assert all(not image.path.startswith("..") for image in parsed.images)
    assert "yolo.list_entry_missing" in codes(parsed)


def test_render_never_writes_exponent_notation() -> None:
    tiny = CanonicalDataset(
        ["cat"], [CanonicalImage("a.jpg", Path("/src/a.jpg"), 100000, 100000, "train", [Box(0, 0, 0, 5, 5)])]
    )
    (line,) = yolo.render(tiny).label_files["labels/train/a.txt"].decode().splitlines()
    assert line == "0 0.000025 0.000025 0.00005 0.00005"  # Datumaro drops a file with 5e-05 in it
