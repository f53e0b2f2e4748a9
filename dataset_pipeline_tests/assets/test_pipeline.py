"""The six assets materialised on a PostgreSQL-backed instance, against the real database and storage."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from dataset_pipeline.db import repository
from dataset_pipeline.domain.model import DatasetFormat
from dataset_pipeline.domain.synthetic import generate_dataset
from dataset_pipeline.formats import parse_dataset
from dataset_pipeline.local_run import process_upload
from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import LocalDatasetStorage


@pytest.fixture
def resources(db, storage_root):
    return {"database": DatabaseResource(url=db.url), "storage": LocalDatasetStorage(root=str(storage_root))}


def _run(dagster_instance, resources, source, name="sample", **kwargs):
    return process_upload(
        dagster_instance, source, user="ann", project="cars", name=name, resources=resources, **kwargs
    )


def _newest(session, key):
    """(dataset, its newest version, that version's verdict)."""
    dataset = repository.find_dataset(session, key)
    version = repository.version_of(session, dataset)
    return dataset, version, repository.validation_of(session, version.id)


@pytest.mark.parametrize("fmt", ["yolo", "coco", "voc"])
def test_whole_graph_for_each_format(fmt, tmp_path, db, dagster_instance, resources, storage_root):
    source = generate_dataset(tmp_path / "upload", n_images=24, fmt=DatasetFormat(fmt), seed=3, zipped=True)
    key, result = _run(dagster_instance, resources, source, name=f"s-{fmt}")
    assert result.success
    with db.session() as session:
        dataset, version, verdict = _newest(session, key)
        assert dataset.status == "exported"
        assert (version.number, version.cause, version.format) == (1, "upload", fmt)
        assert verdict.passed and verdict.summary["images"] == 24
        images = session.execute(
            sa.text("SELECT count(*) FROM images WHERE version_id = :v AND NOT is_augmented"),
            {"v": version.id},
        ).scalar_one()
        assert images == 24
        distribution = session.execute(
            sa.text("SELECT sum(boxes) FROM class_distributions WHERE version_id = :v AND split = 'all'"),
            {"v": version.id},
        ).scalar_one()
        labels = session.execute(
            sa.text(
                "SELECT count(*) FROM labels l JOIN images i ON i.id = l.image_id "
                "WHERE l.version_id = :v AND NOT i.is_augmented"
            ),
            {"v": version.id},
        ).scalar_one()
        assert distribution == labels > 0
        exports = repository.exports_of(session, version.id)
        stored_paths = [version.files_path, version.source_path, *(e.path for e in exports)]
    assert not any(Path(p).is_absolute() for p in stored_paths), "the database holds root-relative paths only"
    assert {e.format for e in exports} == {"yolo", "coco", "voc"}
    for export in exports:
        path = storage_root / export.path
        assert path.is_file()
        with zipfile.ZipFile(path) as archive:
            manifest = json.loads(archive.read("manifest.json"))
            assert manifest["dataset"] == key and manifest["format"] == export.format
        # an export ingests again as the same number of images
        unpacked = tmp_path / f"re-{export.format}"
        zipfile.ZipFile(path).extractall(unpacked)
        assert len(parse_dataset(unpacked).images) == sum(manifest["splits"]["images"].values())
    assert not list(storage_root.rglob("*.part")), "no temporary file may be left visible"


def test_hostile_upload_fails_cleanly_and_leaves_other_datasets_alone(
    tmp_path, db, dagster_instance, resources, storage_root
):
    good = generate_dataset(tmp_path / "good", n_images=8, fmt=DatasetFormat.YOLO, seed=1, zipped=True)
    key, result = _run(dagster_instance, resources, good, name="good")
    assert result.success
    before = sorted(p.relative_to(storage_root).as_posix() for p in storage_root.rglob("*"))

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("data.yaml", "names: [a]\n")
        archive.writestr("../../escape.txt", "owned")
    bad_key, bad = _run(dagster_instance, resources, evil, name="evil", raise_on_error=False)
    assert not bad.success
    with db.session() as session:
        failed = repository.find_dataset(session, bad_key)
        assert failed.status == "failed" and "escape.txt" in failed.status_reason
        assert repository.versions_of(session, failed.id) == [], "a refused upload makes no version"
        assert repository.find_dataset(session, key).status == "exported"
    after = sorted(p.relative_to(storage_root).as_posix() for p in storage_root.rglob("*"))
    assert not (tmp_path / "escape.txt").exists() and not (storage_root.parent / "escape.txt").exists()
    new_files = [p for p in after if p not in before]
    assert all(p.startswith("ann/cars/evil") for p in new_files)
    assert not any("/files" in p for p in new_files), "nothing of a rejected upload is unpacked"


def test_same_bytes_twice_is_a_duplicate(tmp_path, db, dagster_instance, resources):
    source = generate_dataset(tmp_path / "a", n_images=6, fmt=DatasetFormat.YOLO, seed=5, zipped=True)
    copy = tmp_path / "copy.zip"
    copy.write_bytes(source.read_bytes())
    first, _ = _run(dagster_instance, resources, source, name="first")
    second, result = _run(dagster_instance, resources, copy, name="second")
    assert result.success
    with db.session() as session:
        assert repository.find_dataset(session, second) is None
        assert repository.find_dataset(session, first).status == "exported"


def _zip_entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def test_exporting_again_gives_identical_zips_but_for_the_run_id(tmp_path, db, dagster_instance, resources):
    from dataset_pipeline.assets import ALL_ASSETS

    source = generate_dataset(tmp_path / "up", n_images=10, fmt=DatasetFormat.VOC, seed=6, zipped=True)
    key, first_run = _run(dagster_instance, resources, source, name="again")
    root = Path(resources["storage"].root)

    def newest_exports():
        with db.session() as session:
            _, version, _ = _newest(session, key)
            return {e.format: root / e.path for e in repository.exports_of(session, version.id)}

    exports = newest_exports()
    before = {fmt: (path.read_bytes(), _zip_entries(path)) for fmt, path in exports.items()}

    second_run = dg_materialize_export(dagster_instance, resources, key, ALL_ASSETS)
    again = newest_exports()
    for fmt, path in exports.items():
        assert again[fmt] != path, "a new export is a new file; the first one stays"
        assert path.read_bytes() == before[fmt][0], "an earlier export is never rewritten"
        old_bytes, old_entries = before[fmt]
        new_entries = _zip_entries(again[fmt])
        assert new_entries.keys() == old_entries.keys()
        for name in old_entries:
            if name != "manifest.json":
                assert new_entries[name] == old_entries[name], f"{fmt}: {name} differs between runs"
        old_manifest, new_manifest = (
            json.loads(old_entries["manifest.json"]),
            json.loads(new_entries["manifest.json"]),
        )
        assert (old_manifest.pop("run_id"), new_manifest.pop("run_id")) == (
            first_run.run_id,
            second_run.run_id,
        )
        assert old_manifest == new_manifest
        # same order, timestamps and compression for every entry: the zip is reproducible but for the run id
        assert _zip_layout(again[fmt]) == _zip_layout_of(old_bytes)


def _zip_layout(path: Path) -> list[tuple]:
    with zipfile.ZipFile(path) as archive:
        return [(i.filename, i.date_time, i.compress_type, i.external_attr) for i in archive.infolist()]


def _zip_layout_of(data: bytes) -> list[tuple]:
    import io

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(i.filename, i.date_time, i.compress_type, i.external_attr) for i in archive.infolist()]


def dg_materialize_export(instance, resources, key, assets):
    import dagster as dg

    result = dg.materialize(
        assets, selection=["dataset_export"], instance=instance, partition_key=key, resources=resources
    )
    assert result.success
    return result


def test_the_coco_export_loads_in_pycocotools_with_every_box_on_its_image(
    tmp_path, db, dagster_instance, resources
):
    coco_api = pytest.importorskip("pycocotools.coco")
    source = generate_dataset(tmp_path / "up", n_images=16, fmt=DatasetFormat.YOLO, seed=9, zipped=True)
    key, _ = _run(dagster_instance, resources, source, name="cocoapi")
    with db.session() as session:
        _, version, verdict = _newest(session, key)
        export = next(e for e in repository.exports_of(session, version.id) if e.format == "coco")
        split = repository.latest_split(session, version.id)
        assigned = repository.assignments_of(session, split.id)
        stored = repository.load_images(session, version.id, augmentation_id=split.augmentation_id)
    unpacked = tmp_path / "export"
    zipfile.ZipFile(Path(resources["storage"].root) / export.path).extractall(unpacked)
    manifest = json.loads((unpacked / "manifest.json").read_text())
    by_origin = {  # what the manifest says each exported image came from -> its exported file stem
        (origin.get("original") or origin["augmented_from"], origin.get("copy")): Path(archive_path).stem
        for archive_path, origin in manifest["images"].items()
    }
    by_id = {image.id: image for image in stored}
    expected = {}  # exported file stem -> sorted boxes as (class name, x, y, w, h)
    for image in stored:
        if image.id not in assigned:  # an augmented copy of a val/test image: left out of every split
            continue
        if image.is_augmented:
            origin = (by_id[image.source_image_id].relative_path, image.copy_index)
        else:
            origin = (image.relative_path, None)
        stem = by_origin[origin]
        expected[stem] = sorted(
            (verdict.class_names[b.class_index], b.x_min, b.y_min, b.width, b.height) for b in image.boxes
        )
    seen = {}
    for annotation_file in sorted(unpacked.rglob("instances_*.json")):
        api = coco_api.COCO(str(annotation_file))
        names = {c["id"]: c["name"] for c in api.loadCats(api.getCatIds())}
        assert min(names) == 1  # COCO category ids start at 1
        for image_id in api.getImgIds():
            info = api.loadImgs(image_id)[0]
            image_path = next(unpacked.rglob(info["file_name"]))
            assert image_path.is_file()
            boxes = sorted(
                (names[a["category_id"]], *a["bbox"]) for a in api.loadAnns(api.getAnnIds(imgIds=[image_id]))
            )
            seen[Path(info["file_name"]).stem] = boxes
    assert seen.keys() == expected.keys()  # every image with a split, originals and augmented copies
    for stem, boxes in seen.items():
        assert len(boxes) == len(expected[stem])
        for got, want in zip(boxes, expected[stem], strict=True):
            assert got[0] == want[0]
            assert got[1:] == pytest.approx(want[1:], rel=1e-6, abs=1e-6)


def test_pictures_come_first_as_files_and_the_event_log_holds_no_image_bytes(
    tmp_path, db, dagster_instance, resources, storage_root, monkeypatch
):
    monkeypatch.setenv("DATASET_PIPELINE_PREVIEW_URL", "http://127.0.0.1:3001")
    source = generate_dataset(tmp_path / "upload", n_images=12, fmt=DatasetFormat.YOLO, seed=5, zipped=True)
    _, result = _run(dagster_instance, resources, source, name="pictures")
    assert result.success

    first_entries = {
        "class_distribution": ["boxes_per_class", "class_chart", "class_chart_png", "box_size_chart"],
        "augmented_dataset": ["samples", "samples_png"],
    }
    for asset, expected in first_entries.items():
        [materialization] = result.asset_materializations_for_node(asset)
        metadata = materialization.metadata
        assert list(metadata)[: len(expected)] == expected, list(metadata)
        for name in expected:
            if name.endswith("_png"):
                png = Path(metadata[name].value)
                assert png.is_relative_to(storage_root / "ann" / "cars" / "pictures" / "v1" / "previews")
                assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            else:  # shown inline by the UI only below 1,000 characters
                assert len(metadata[name].value) < 1000, name

    for event in result.all_events:
        text = repr(event.event_specific_data)
        assert "base64" not in text, f"image bytes in the event log: {event.event_type_value}"
    for asset in ("validated_dataset", "class_distribution", "dataset_splits"):
        for materialization in result.asset_materializations_for_node(asset):
            for name, value in materialization.metadata.items():
                if isinstance(value.value, float):
                    assert value.value == round(value.value, 4), f"{asset}.{name} = {value.value}"
