"""The command line against a real database: list and download after the graph ran."""

import zipfile

import pytest

from dataset_pipeline import cli
from dataset_pipeline.domain.model import DatasetFormat
from dataset_pipeline.domain.synthetic import generate_dataset
from dataset_pipeline.local_run import process_upload
from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import LocalDatasetStorage


def test_help_reads_well(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("dev", "demo", "list", "download"):
        assert command in out


def test_list_and_download(tmp_path, db, dagster_instance, storage_root, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", db.url)
    source = generate_dataset(tmp_path / "up", n_images=10, fmt=DatasetFormat.COCO, seed=2, zipped=True)
    resources = {
        "database": DatabaseResource(url=db.url),
        "storage": LocalDatasetStorage(root=str(storage_root)),
    }
    key, result = process_upload(
        dagster_instance, source, user="bo", project="p", name="d", resources=resources
    )
    assert result.success

    assert cli.main(["list"]) == cli.EXIT_OK
    assert key in capsys.readouterr().out

    out = tmp_path / "out.zip"
    assert cli.main(["download", key, "--format", "coco", "-o", str(out)]) == cli.EXIT_OK
    with zipfile.ZipFile(out) as archive:
        assert "manifest.json" in archive.namelist()
        assert any(name.startswith("annotations/instances_") for name in archive.namelist())

    assert cli.main(["download", "no-such-dataset"]) == cli.EXIT_NOT_FOUND
    assert "no dataset" in capsys.readouterr().err
