"""The command line: submit, help, and list and download after the whole graph ran (see test_cli_versions.py for
the version commands on data written directly)."""

import zipfile

import pytest
import sqlalchemy as sa

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
    for command in ("dev", "demo", "submit", "list", "download", "diff", "prune"):
        assert command in out


def test_list_and_download(tmp_path, db, dagster_instance, storage_root, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", db.url)
    monkeypatch.setenv("DATASET_STORAGE_ROOT", str(storage_root))  # export paths are relative to it
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
    listing = capsys.readouterr().out
    assert key in listing and "v1 upload by bo" in listing and "images=10 usable=10 passed" in listing

    out = tmp_path / "out.zip"
    assert cli.main(["download", key, "--format", "coco", "-o", str(out)]) == cli.EXIT_OK
    with zipfile.ZipFile(out) as archive:
        assert "manifest.json" in archive.namelist()
        assert any(name.startswith("annotations/instances_") for name in archive.namelist())

    assert cli.main(["download", "no-such-dataset"]) == cli.EXIT_NOT_FOUND
    assert "no dataset" in capsys.readouterr().err


def test_submit_copies_into_the_inbox_under_a_part_name_then_renames(tmp_path, monkeypatch, capsys):
    storage = tmp_path / "storage"
    monkeypatch.setenv("DATASET_STORAGE_ROOT", str(storage))
    source = generate_dataset(tmp_path / "up", n_images=3, fmt=DatasetFormat.YOLO, seed=1, zipped=True)

    assert (
        cli.main(["submit", str(source), "--user", "ann", "--project", "cars", "--name", "fleet"])
        == cli.EXIT_OK
    )
    target = storage / "inbox" / "ann" / "cars" / "fleet.zip"
    assert target.read_bytes() == source.read_bytes()
    assert str(target) in capsys.readouterr().out
    assert not list(storage.rglob("*.part"))

    again = cli.main(["submit", str(source), "--user", "ann", "--project", "cars", "--name", "fleet"])
    assert again == cli.EXIT_USAGE and "already waiting" in capsys.readouterr().err
    assert cli.main(["submit", str(source), "--user", "../x", "--project", "cars"]) == cli.EXIT_USAGE
    assert "user name '../x' is not allowed" in capsys.readouterr().err
    assert (
        cli.main(["submit", str(tmp_path / "nope.zip"), "--user", "a", "--project", "b"])
        == cli.EXIT_NOT_FOUND
    )


@pytest.mark.slow
def test_make_demo_runs_the_whole_graph_and_prints_the_summary_and_exports(tmp_path, pg_server_url):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from dataset_pipeline_tests.databases import fresh_database

    with fresh_database(pg_server_url, prefix="dp_demo") as database_url:  # its rows stay out of other tests
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "DAGSTER_HOME": str(tmp_path / "home"),
            "DATASET_STORAGE_ROOT": str(tmp_path / "storage"),
        }
        done = subprocess.run(
            [sys.executable, "-m", "dataset_pipeline.cli", "demo", "--images", "12", "--seed", "7"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
        with engine.connect() as connection:  # Dagster's own tables, in the same database
            runs = connection.execute(
                sa.text(
                    "SELECT r.pipeline_name, t.value FROM dagster.runs r LEFT JOIN dagster.run_tags t "
                    "ON t.run_id = r.run_id AND t.key = 'dataset_pipeline/launched_by'"
                )
            ).all()
        engine.dispose()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert [tuple(run) for run in runs] == [("process_dataset", "demo")]  # a named job, not __ephemeral…
    assert "status exported" in done.stdout and "usable 12" in done.stdout
    paths = [
        Path(line.split()[1])
        for line in done.stdout.splitlines()
        if line.strip().startswith(("yolo ", "coco ", "voc "))
    ]
    assert len(paths) == 3 and all(path.is_file() and path.suffix == ".zip" for path in paths)
    assert all(path.is_relative_to(tmp_path / "storage") for path in paths)


def test_list_rejected_prints_each_rejected_drop_with_its_reason(tmp_path, monkeypatch, capsys):
    storage_root = tmp_path / "storage"
    monkeypatch.setenv("DATASET_STORAGE_ROOT", str(storage_root))
    storage = LocalDatasetStorage(root=str(storage_root))
    assert cli.main(["list", "--rejected"]) == cli.EXIT_OK
    assert "no rejected drops" in capsys.readouterr().out

    for name, reason in (("bad name.zip", "dataset name 'bad name' is not allowed"), ("x.rar", "not a zip")):
        drop = storage.inbox_dir() / "ann" / "cars" / name
        drop.parent.mkdir(parents=True, exist_ok=True)
        drop.write_bytes(b"whatever")
        storage.reject_drop(drop, f"{reason}\nsecond line")

    assert cli.main(["list", "--rejected"]) == cli.EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    paths = [line.split("  ", 1)[1] for line in lines if not line.startswith(" ")]
    assert sorted(paths) == sorted(str(storage.rejected_dir() / name) for name in ("bad name.zip", "x.rar"))
    assert "      not a zip" in lines and "      dataset name 'bad name' is not allowed" in lines
    assert lines.count("      second line") == 2
