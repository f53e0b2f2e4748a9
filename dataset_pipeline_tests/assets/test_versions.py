"""Versions end to end: a changed re-upload is a new version of the same partition, old versions stay whole
and downloadable, the diff says what changed, and the storage root can move."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from dataset_pipeline import cli
from dataset_pipeline.assets import ALL_ASSETS
from dataset_pipeline.db import repository
from dataset_pipeline.db.version_content import load_version_content
from dataset_pipeline.domain.model import DatasetFormat
from dataset_pipeline.domain.synthetic import generate_dataset
from dataset_pipeline.domain.version_diff import diff_versions
from dataset_pipeline.local_run import process_upload
from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import LocalDatasetStorage


def _rows_of_version(db, version_id: int) -> dict[str, list[tuple]]:
    """Every row any stage wrote for a version, table by table (ids included)."""
    tables = ("images", "labels", "dataset_validations", "class_distributions", "augmentations")
    tables += ("split_reports", "exports", "version_validations")
    with db.engine.connect() as connection:
        rows = {
            table: [
                tuple(row)
                for row in connection.execute(
                    sa.text(f"SELECT * FROM {table} WHERE version_id = :v ORDER BY 1"), {"v": version_id}
                )
            ]
            for table in tables
        }
        rows["split_assignments"] = [
            tuple(row)
            for row in connection.execute(
                sa.text(
                    "SELECT a.* FROM split_assignments a JOIN split_reports s ON s.id = a.split_report_id "
                    "WHERE s.version_id = :v ORDER BY 1, 2"
                ),
                {"v": version_id},
            )
        ]
    return rows


def _changed_copy(source: Path, target: Path) -> Path:
    """The same upload with one image replaced by another's bytes and one label file emptied."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as changed:
        names = original.namelist()
        images = sorted(n for n in names if n.endswith(".jpg"))
        labels = sorted(n for n in names if n.endswith(".txt") and n.startswith("labels/"))
        for name in names:
            data = original.read(name)
            if name == images[0]:  # new bytes that still decode (a JPEG may carry data after its end)
                data = original.read(images[1]) + b"\0" * 16
            if name == labels[-1]:
                data = b""
            changed.writestr(name, data)
    return target


@pytest.fixture
def resources(db, storage_root):
    return {"database": DatabaseResource(url=db.url), "storage": LocalDatasetStorage(root=str(storage_root))}


def test_a_changed_reupload_is_version_2_of_the_same_partition_and_version_1_stays_whole(
    tmp_path, db, dagster_instance, resources, storage_root, monkeypatch, capsys
):
    first = generate_dataset(tmp_path / "a", n_images=14, fmt=DatasetFormat.YOLO, seed=21, zipped=True)
    key, result = process_upload(
        dagster_instance, first, user="ann", project="traffic", name="trucks", resources=resources
    )
    assert result.success
    with db.session() as session:
        dataset = repository.find_dataset(session, key)
        v1 = repository.version_of(session, dataset)
    v1_rows = _rows_of_version(db, v1.id)
    assert v1_rows["exports"] and v1_rows["split_assignments"] and v1_rows["augmentations"]

    blobs_before = {p.name for p in (storage_root / "blobs").rglob("*") if p.is_file()}
    second = _changed_copy(first, tmp_path / "trucks.zip")
    key_again, result = process_upload(
        dagster_instance, second, user="ann", project="traffic", name="trucks", resources=resources
    )
    assert result.success and key_again == key
    assert dagster_instance.get_dynamic_partitions("datasets").count(key) == 1

    with db.session() as session:
        dataset = repository.find_dataset(session, key)
        versions = repository.versions_of(session, dataset.id)
        assert [(v.number, v.cause) for v in versions] == [(1, "upload"), (2, "upload")]
        assert versions[1].parent_id == versions[0].id
        diff = diff_versions(
            load_version_content(session, versions[0]), load_version_content(session, versions[1])
        ).to_json()
    assert _rows_of_version(db, v1.id) == v1_rows, "nothing of version 1 was updated or deleted"
    assert (diff["from"], diff["to"]) == (1, 2)
    assert len(diff["images"]["changed"]) == 1 and diff["images"]["added"] == diff["images"]["removed"] == []
    assert diff["boxes"]["removed"] > 0

    # the materialisation history of the one partition is the version history
    records = dagster_instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("validated_dataset"), asset_partitions=[key]), limit=10
    ).records
    by_version = {r.asset_materialization.metadata["version"].value: r.asset_materialization for r in records}
    assert sorted(by_version) == [1, 2]
    # only the one image with new bytes was decoded again; the other 13 came from the content-addressed checks
    assert by_version[2].metadata["decoded"].value == 1
    assert by_version[2].metadata["checked_before"].value == 13
    # and only new contents were stored: the changed image and the emptied label file, at most
    added = {p.name for p in (storage_root / "blobs").rglob("*") if p.is_file()} - blobs_before
    assert 1 <= len(added) <= 2
    v2_files = {p for p in (storage_root / versions[1].files_path).rglob("*") if p.is_file()}
    assert sum(p.stat().st_nlink > 1 for p in v2_files) == len(v2_files), "every file is a link to its blob"

    monkeypatch.setenv("DATABASE_URL", db.url)
    monkeypatch.setenv("DATASET_STORAGE_ROOT", str(storage_root))
    for number, fmt in ((1, "coco"), (2, "coco")):
        target = tmp_path / f"v{number}.zip"
        assert cli.main(["download", key, "--version", str(number), "--format", fmt, "-o", str(target)]) == 0
        with zipfile.ZipFile(target) as archive:
            assert archive.testzip() is None
    assert (tmp_path / "v1.zip").read_bytes() != (tmp_path / "v2.zip").read_bytes()
    capsys.readouterr()
    assert cli.main(["diff", key, "--from", "1", "--to", "2", "--json"]) == 0
    assert '"changed"' in capsys.readouterr().out

    # pruning version 1 frees what only it held: its folder, and the bytes of the image version 2 replaced
    assert cli.main(["prune", key, "--keep", "1", "--yes"]) == 0
    with db.session() as session:
        assert [v.number for v in repository.versions_of(session, dataset.id)] == [2]
    assert not (storage_root / v1.files_path).exists()
    blobs_after = {p.name for p in (storage_root / "blobs").rglob("*") if p.is_file()}
    v2_shas = {
        path.name
        for path in (storage_root / "blobs").rglob("*")
        if path.is_file() and path.stat().st_nlink > 1
    }
    assert blobs_after == v2_shas, "every blob left is linked from version 2's files"
    target = tmp_path / "v2-again.zip"
    assert cli.main(["download", key, "--version", "2", "--format", "yolo", "-o", str(target)]) == 0


def test_moving_the_storage_root_keeps_every_dataset_working(tmp_path, db, dagster_instance, resources):
    source = generate_dataset(tmp_path / "a", n_images=10, fmt=DatasetFormat.VOC, seed=22, zipped=True)
    key, result = process_upload(
        dagster_instance, source, user="ann", project="moves", name="boxes", resources=resources
    )
    assert result.success
    moved = tmp_path / "elsewhere" / "storage"
    shutil.move(resources["storage"].root, moved)
    relocated = {"database": resources["database"], "storage": LocalDatasetStorage(root=str(moved))}

    again = dg.materialize(
        ALL_ASSETS,
        selection=["validated_dataset", "dataset_splits", "dataset_export"],
        instance=dagster_instance,
        partition_key=key,
        resources=relocated,
    )
    assert again.success
    with db.session() as session:
        dataset = repository.find_dataset(session, key)
        versions = repository.versions_of(session, dataset.id)
        assert len(versions) == 1, "the moved files are unchanged, so re-validation found nothing new"
        exports = repository.exports_of(session, versions[0].id)
    assert exports and all((moved / export.path).is_file() for export in exports)
