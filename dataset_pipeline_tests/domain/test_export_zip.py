"""Export zips are byte-for-byte reproducible, verifiable by their manifest, and never left half-written."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest

from dataset_pipeline.domain.export_zip import (
    FIXED_DATE_TIME,
    MANIFEST_NAME,
    ZipEntry,
    build_manifest,
    export_dataset_zip,
    sha256_of,
    write_deterministic_zip,
)
from dataset_pipeline.domain.model import RenderedDataset

MANIFEST_FIELDS: dict[str, Any] = {
    "dataset": "birds",
    "version": 1,
    "owner": "ana",
    "project": "wildlife",
    "dataset_format": "yolo",
    "class_table": [
        {"name": "sparrow", "yolo_index": 0, "coco_id": 1},
        {"name": "owl", "yolo_index": 1, "coco_id": 3},
    ],
    "voc_pixel_origin": 0,
    "split_counts": {"train": {"images": 2, "boxes": 3}, "val": {"images": 1, "boxes": 1}},
    "split_metrics": {"class_balance_jsd": 0.01},
    "validation_summary": {"errors": 0, "warnings": 2},
    "run_id": "run-123",
    "pipeline_version": "0.1.0",
}


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path | bytes]:
    folder = tmp_path / "images"
    folder.mkdir()
    files: dict[str, Path | bytes] = {}
    for i, name in enumerate(["a.jpg", "b.jpg"]):
        path = folder / name
        path.write_bytes(b"\xff\xd8\xff" + bytes([i]) * 1_500_000)  # more than one 1 MiB read chunk
        files[name] = path
    files["c.jpg"] = b"\xff\xd8\xff" + b"re-encoded upright" * 100
    return files


@pytest.fixture
def rendered() -> RenderedDataset:
    return RenderedDataset(
        label_files={
            "data.yaml": b"names:\n  0: sparrow\n  1: owl\n",
            "labels/train/a.txt": b"0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.1 0.1\n" * 50,
            "labels/train/b.txt": b"0 0.5 0.5 0.2 0.2\n",
            "labels/val/c.txt": b"1 0.3 0.3 0.1 0.1\n",
        },
        image_paths={
            "a.jpg": "images/train/a.jpg",
            "b.jpg": "images/train/b.jpg",
            "c.jpg": "images/val/c.jpg",
        },
    )


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_same_inputs_give_byte_identical_zips(
    tmp_path: Path, rendered: RenderedDataset, images: dict[str, Path | bytes]
) -> None:
    first = export_dataset_zip(tmp_path / "one.zip", rendered, images, MANIFEST_FIELDS)
    shuffled = RenderedDataset(
        label_files=dict(reversed(rendered.label_files.items())),
        image_paths=dict(reversed(rendered.image_paths.items())),
    )
    os.utime(images["a.jpg"], (0, 0))  # a source's mtime must not leak into the zip
    second = export_dataset_zip(tmp_path / "two.zip", shuffled, images, MANIFEST_FIELDS)

    assert (tmp_path / "one.zip").read_bytes() == (tmp_path / "two.zip").read_bytes()
    assert first.sha256 == second.sha256 == sha256_of(tmp_path / "one.zip")
    assert first.size_bytes == (tmp_path / "one.zip").stat().st_size
    assert first.count == 8  # 4 label files, 3 images, the manifest
    assert _leftovers(tmp_path) == []


def test_images_are_stored_labels_deflated_with_fixed_metadata(
    tmp_path: Path, rendered: RenderedDataset, images: dict[str, Path | bytes]
) -> None:
    export_dataset_zip(tmp_path / "out.zip", rendered, images, MANIFEST_FIELDS)
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        infos = archive.infolist()
        assert archive.testzip() is None
    names = [info.filename for info in infos]
    assert names == [*sorted(names[:-1]), MANIFEST_NAME]  # sorted, the manifest last
    assert not any(name.endswith("/") for name in names)
    for info in infos:
        expected = zipfile.ZIP_STORED if info.filename.startswith("images/") else zipfile.ZIP_DEFLATED
        assert info.compress_type == expected, info.filename
        assert info.date_time == FIXED_DATE_TIME
        assert stat.S_IMODE(info.external_attr >> 16) == 0o644
        assert stat.S_ISREG(info.external_attr >> 16)
    assert stat.S_IMODE((tmp_path / "out.zip").stat().st_mode) == 0o644


def test_manifest_hashes_match_the_zip_contents(
    tmp_path: Path, rendered: RenderedDataset, images: dict[str, Path | bytes]
) -> None:
    origins = {"a.jpg": {"original": "birds/train/a.jpg"}, "c.jpg": {"augmented_from": "x/a.jpg", "copy": 1}}
    report = export_dataset_zip(tmp_path / "out.zip", rendered, images, MANIFEST_FIELDS, origins)
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        manifest_bytes = archive.read(MANIFEST_NAME)
        contents = {name: archive.read(name) for name in archive.namelist() if name != MANIFEST_NAME}

    manifest = json.loads(manifest_bytes)
    assert manifest["files"] == {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
    assert manifest["files"]["images/train/a.jpg"] == sha256_of(images["a.jpg"])
    assert manifest["files"]["images/val/c.jpg"] == sha256_of(images["c.jpg"])
    assert report.entry_sha256[MANIFEST_NAME] == hashlib.sha256(manifest_bytes).hexdigest()
    assert manifest["classes"] == MANIFEST_FIELDS["class_table"]
    assert manifest["voc_pixel_origin"] == 0
    # every image under its path in this zip, with where it came from
    assert manifest["images"] == {
        "images/train/a.jpg": {"original": "birds/train/a.jpg"},
        "images/val/c.jpg": {"augmented_from": "x/a.jpg", "copy": 1},
    }
    assert manifest["run_id"] == "run-123" and manifest["pipeline_version"] == "0.1.0"
    assert manifest["splits"]["train"] == {"images": 2, "boxes": 3}
    assert manifest["format"] == "yolo" and manifest["dataset"] == "birds" and manifest["version"] == 1


def test_build_manifest_is_stable_json() -> None:
    files = {"b.txt": "2" * 64, "a.txt": "1" * 64}
    text = build_manifest(**MANIFEST_FIELDS, files=files, images={})
    assert text == build_manifest(**MANIFEST_FIELDS, files=dict(reversed(files.items())), images={})
    assert text.endswith(b"}\n") and b'\n  "classes"' in text
    assert list(json.loads(text)) == sorted(json.loads(text))
    with pytest.raises(ValueError):
        build_manifest(**{**MANIFEST_FIELDS, "split_metrics": {"jsd": float("nan")}}, files=files)


def test_failure_mid_write_leaves_no_target_and_no_temp_file(tmp_path: Path) -> None:
    entries = [
        ZipEntry("a.txt", b"first", compress=True),
        ZipEntry("b.jpg", tmp_path / "missing.jpg", compress=False),  # sorts between the other two
        ZipEntry("c.txt", b"last", compress=True),
    ]
    with pytest.raises(FileNotFoundError) as raised:
        write_deterministic_zip(tmp_path / "out.zip", entries)
    assert "b.jpg" in "".join(getattr(raised.value, "__notes__", []))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_failure_keeps_the_previous_export_intact(tmp_path: Path) -> None:
    target = tmp_path / "out.zip"
    write_deterministic_zip(target, [ZipEntry("a.txt", b"previous export", compress=True)])
    before = target.read_bytes()

    entries = [
        ZipEntry("a.txt", b"new", compress=True),
        ZipEntry("b.jpg", tmp_path / "missing.jpg", compress=False),
        ZipEntry("c.txt", b"new", compress=True),
    ]
    with pytest.raises(FileNotFoundError):
        write_deterministic_zip(target, entries)

    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zip"]


@pytest.mark.parametrize("bad", ["/etc/passwd", "../up.txt", "a/../b.txt", "dir/", "a\\b.txt", ""])
def test_unsafe_archive_paths_are_refused_before_writing(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="archive path"):
        write_deterministic_zip(tmp_path / "out.zip", [ZipEntry(bad, b"x", compress=True)])
    assert list(tmp_path.iterdir()) == []


def test_duplicates_and_missing_images_are_refused(tmp_path: Path, rendered: RenderedDataset) -> None:
    with pytest.raises(ValueError, match="twice"):
        write_deterministic_zip(
            tmp_path / "out.zip",
            [ZipEntry("a.txt", b"1", compress=True), ZipEntry("a.txt", b"2", compress=True)],
        )
    with pytest.raises(ValueError, match=r"a\.jpg"):
        export_dataset_zip(tmp_path / "out.zip", rendered, {"b.jpg": b"", "c.jpg": b""}, MANIFEST_FIELDS)
    assert list(tmp_path.iterdir()) == []


def test_sha256_of_path_and_bytes_agree(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_of(path) == sha256_of(data) == hashlib.sha256(data).hexdigest()
