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


@pytest.mark.parametrize("fmt", ["yolo", "coco", "voc"])
def test_whole_graph_for_each_format(fmt, tmp_path, db, dagster_instance, resources, storage_root):
    source = generate_dataset(tmp_path / "upload", n_images=24, fmt=DatasetFormat(fmt), seed=3, zipped=True)
    key, result = _run(dagster_instance, resources, source, name=f"s-{fmt}")
    assert result.success
    with db.session() as session:
        dataset = repository.find_dataset(session, key)
        assert dataset.status == "exported"
        assert dataset.format == fmt
        images = session.execute(
            sa.text("SELECT count(*) FROM images WHERE dataset_id = :d AND NOT is_augmented"),
            {"d": dataset.id},
        ).scalar_one()
        assert images == 24
        distribution = session.execute(
            sa.text("SELECT sum(boxes) FROM class_distributions WHERE dataset_id = :d AND split = 'all'"),
            {"d": dataset.id},
        ).scalar_one()
        labels = session.execute(
            sa.text(
                "SELECT count(*) FROM labels l JOIN images i ON i.id = l.image_id "
                "WHERE l.dataset_id = :d AND NOT i.is_augmented"
            ),
            {"d": dataset.id},
        ).scalar_one()
        assert distribution == labels > 0
        exports = repository.exports_of(session, dataset.id)
    assert {e.format for e in exports} == {"yolo", "coco", "voc"}
    for export in exports:
        path = Path(export.path)
        assert path.is_file() and path.is_relative_to(storage_root)
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
