"""`dataset-pipeline dev` for real: webserver, daemon, sensor and PostgreSQL, driven through the inbox and
checked through GraphQL, the database and the export zips; then Ctrl-C must leave no process behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from dataset_pipeline.domain.model import DatasetFormat
from dataset_pipeline.domain.synthetic import generate_dataset
from dataset_pipeline.embedded_postgres import APP_DATABASE, ensure_database, start_embedded
from dataset_pipeline_tests.chromium import PICTURE_PAGES, chromium, rendered_dom
from dataset_pipeline_tests.databases import fresh_database
from dataset_pipeline_tests.dev_server import CLI, running_dev_server

pytestmark = [pytest.mark.slow, pytest.mark.db]

SENSOR_QUERY = """
{ sensorsOrError(repositorySelector: {repositoryLocationName: "dataset_pipeline", repositoryName: "__repository__"}) {
    ... on Sensors { results { name sensorState { status } } } } }
"""


EXPORT_QUERY = """
query Export($partitions: [String!]) {
  assetNodeOrError(assetKey: {path: ["dataset_export"]}) { ... on AssetNode { partitionKeys } }
  assetOrError(assetKey: {path: ["dataset_export"]}) {
    ... on Asset { assetMaterializations(partitions: $partitions, limit: 1) {
      partition metadataEntries { label ... on PathMetadataEntry { path } } } }
  }
}"""


CHART_QUERY = """
query Chart($partitions: [String!]) {
  assetOrError(assetKey: {path: ["class_distribution"]}) {
    ... on Asset { assetMaterializations(partitions: $partitions, limit: 1) {
      metadataEntries { label ... on MarkdownMetadataEntry { mdStr } } } }
  }
}"""


def written_by_design(relative: Path) -> bool:
    """dagster.yaml, the embedded PostgreSQL's data folder, and the compute logs of runs and sensor ticks."""
    if relative.parts[0] == "pgdata" or relative == Path("dagster.yaml"):
        return True
    return relative.parts[0] == "storage" and relative.suffix in (".out", ".err", ".complete")


@pytest.fixture
def external_database() -> Iterator[str | None]:
    """With DATABASE_URL set (CI's second pass), a fresh database on that server; else None (embedded)."""
    with fresh_database(os.environ.get("DATABASE_URL")) as url:
        yield url


def test_a_dropped_dataset_goes_through_the_graph_under_dagster_dev(tmp_path, external_database):
    """Started as in a checkout (only DATASET_PIPELINE_HOME); the CLI runs from an unrelated folder and must
    find the same storage and database by itself."""
    project = tmp_path / "project"
    storage, home = project / "storage", project / ".dagster_home"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with running_dev_server(project, external_database, as_project_home=True) as server:

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            done = subprocess.run(
                [*CLI, *args], cwd=elsewhere, env=server.env, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, f"dataset-pipeline {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
            return done

        server.wait_until_loaded()
        sensors = server.graphql(SENSOR_QUERY)["sensorsOrError"]["results"]
        states = {s["name"]: s["sensorState"]["status"] for s in sensors}
        assert states["inbox_sensor"] == states["dataset_automation"] == "RUNNING"
        # ... and the job pages' "Auto-materialize" badge says so too
        server.wait_for(
            "automation shown as on",
            lambda: (
                server.graphql("{ instance { autoMaterializePaused } }")["instance"]["autoMaterializePaused"]
                is False
            ),
            60,
        )

        # First start on an empty storage: the sample dataset was dropped; then a user's own drop.
        upload = generate_dataset(
            tmp_path / "upload",
            n_images=12,
            fmt=DatasetFormat.COCO,
            seed=11,
            image_size=(160, 120),
            zipped=True,
        )
        cli("submit", str(upload), "--user", "e2e", "--project", "cars", "--name", "trucks")
        assert not list((storage / "inbox").rglob("*.part"))
        assert not (elsewhere / "storage").exists()
        bad_drop = storage / "inbox" / "e2e" / "cars" / "bad name.zip"
        bad_drop.write_bytes(upload.read_bytes())

        run_ids = {}
        for key in ("e2e-cars-trucks", "demo-samples-sample-yolo"):

            def finished(key=key):
                runs = server.runs({"dagster/partition": key})
                statuses = {run["status"] for run in runs}
                if statuses & {"FAILURE", "CANCELED"}:
                    pytest.fail(f"run for {key} ended {statuses}:\n{server.log_tail()}")
                return runs if runs and statuses == {"SUCCESS"} else None

            runs = server.wait_for(f"the run of {key}", finished, 420)
            assert [run["jobName"] for run in runs] == ["process_dataset"]  # automation adds no second run
            run_ids[key] = runs[0]["runId"]

        # The CLI, from elsewhere, sees what the UI shows: the same partitions, each exported to the same zip
        ui = server.graphql(EXPORT_QUERY, {"partitions": sorted(run_ids)})
        [ui_zip] = [
            entry["path"]
            for entry in ui["assetOrError"]["assetMaterializations"][0]["metadataEntries"]
            if entry["label"] == "coco_zip"
        ]
        listing = cli("list")
        assert f"storage {storage}" in listing.stderr  # it says where it looks
        listed = listing.stdout
        listed_keys = sorted(line.split()[1] for line in listed.splitlines() if line[:4].strip().isdigit())
        assert listed_keys == sorted(ui["assetNodeOrError"]["partitionKeys"]) == sorted(run_ids)
        assert listed.count("exported") == 2 and ui_zip in listed
        # The chart shows inline: short markdown whose image the preview server beside the UI serves
        entries = server.graphql(CHART_QUERY, {"partitions": ["e2e-cars-trucks"]})["assetOrError"][
            "assetMaterializations"
        ][0]["metadataEntries"]
        charts = {entry["label"]: entry.get("mdStr") for entry in entries}
        assert len(charts["class_chart"]) < 1000 and "|" in charts["boxes_per_class"]
        chart_url = charts["class_chart"].split("](", 1)[1].rstrip(")")
        with urllib.request.urlopen(chart_url, timeout=10) as response:
            assert response.read()[:8] == b"\x89PNG\r\n\x1a\n"
        report = cli("report", "e2e-cars-trucks").stdout
        assert "findings: 0 error" in report
        cli("download", "e2e-cars-trucks", "--format", "coco", "-o", "trucks-coco.zip")
        assert (elsewhere / "trucks-coco.zip").read_bytes() == Path(ui_zip).read_bytes()
        rejected = cli("list", "--rejected").stdout
        assert "bad name.zip" in rejected and "dataset name 'bad name' is not allowed" in rejected
        assert not list((storage / "inbox" / "e2e").rglob("*.zip"))  # moved to source/ or _rejected/
        assert sorted(p.name for p in elsewhere.iterdir()) == ["trucks-coco.zip"]
    assert server.process.returncode is not None
    console = server.log.read_text(errors="replace")
    assert "will not be used" not in console  # dagster dev found dagster.yaml where DAGSTER_HOME is
    assert "Checking for new runs for sensor" not in console  # no line per sensor tick
    assert "Sensor function returned an empty result" not in console
    assert server.survivors == [], (
        f"processes outlived `dataset-pipeline dev`: {server.survivors}\n{server.log_tail()}"
    )
    # PostgreSQL only: DAGSTER_HOME holds the config, the embedded server's data and compute logs, nothing
    # else (no database file of the webserver, the daemon or the runs)
    assert [p for p in home.rglob("*") if p.is_file() and not written_by_design(p.relative_to(home))] == []

    # Version 1 of the dataset, its export in a folder of the run that wrote it
    version_dir = storage / "e2e" / "cars" / "trucks" / "v1"
    export_dir = version_dir / "exports" / run_ids["e2e-cars-trucks"]
    assert sorted(p.name for p in export_dir.iterdir()) == [
        f"e2e-cars-trucks-v1-{fmt}.zip" for fmt in ("coco", "voc", "yolo")
    ]
    assert (version_dir / "source" / "trucks.zip").is_file() and (version_dir / "files").is_dir()
    export = export_dir / "e2e-cars-trucks-v1-coco.zip"
    with zipfile.ZipFile(export) as archive:
        assert archive.testzip() is None
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["dataset"] == "e2e-cars-trucks"
    assert manifest["run_id"] == run_ids["e2e-cars-trucks"]

    embedded = None
    url = external_database
    if url is None:  # the embedded server kept its data in DAGSTER_HOME: start it again and look
        embedded = start_embedded(home / "pgdata")
        url = ensure_database(embedded.server_url, APP_DATABASE)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            status = connection.execute(
                sa.text("SELECT status FROM datasets WHERE partition_key = 'e2e-cars-trucks'")
            ).scalar_one()
            versions = connection.execute(
                sa.text(
                    "SELECT v.number, v.cause, v.run_id, v.format, v.source_path, v.files_path, vv.passed, "
                    "(SELECT count(*) FROM images i WHERE i.version_id = v.id AND NOT i.is_augmented) "
                    "FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id "
                    "LEFT JOIN version_validations vv ON vv.version_id = v.id "
                    "WHERE d.partition_key = 'e2e-cars-trucks' ORDER BY v.number"
                )
            ).all()
            exports = connection.execute(
                sa.text(
                    "SELECT e.format, e.path, e.run_id, v.number FROM exports e "
                    "JOIN dataset_versions v ON v.id = e.version_id JOIN datasets d ON d.id = v.dataset_id "
                    "WHERE d.partition_key = 'e2e-cars-trucks' ORDER BY 1"
                )
            ).all()
            dagster_runs = connection.execute(sa.text("SELECT count(*) FROM dagster.runs")).scalar_one()
    finally:
        engine.dispose()
        if embedded is not None:
            embedded.stop()
    run_id = run_ids["e2e-cars-trucks"]
    assert status == "exported"
    assert [tuple(v) for v in versions] == [
        (
            1,
            "upload",
            run_id,
            "coco",
            "e2e/cars/trucks/v1/source/trucks.zip",
            "e2e/cars/trucks/v1/files",
            True,
            12,
        )
    ]
    # Paths in the database are relative to the storage root
    assert [tuple(e) for e in exports] == [
        (fmt, (export_dir / f"e2e-cars-trucks-v1-{fmt}.zip").relative_to(storage).as_posix(), run_id, 1)
        for fmt in ("coco", "voc", "yolo")
    ]
    assert dagster_runs >= 2  # Dagster's own storage is in PostgreSQL too


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_charts_and_the_sample_grid_show_without_a_click(tmp_path, external_database):
    """What a browser renders of the asset pages: the pictures as <img> elements (not behind "[Show
    Markdown]"), each loading from the preview server."""
    with running_dev_server(tmp_path, external_database) as server:
        server.wait_until_loaded()
        server.wait_for(
            "the sample's run",
            lambda: [r for r in server.runs() if r["status"] == "SUCCESS"],
            300,
        )
        base = f"http://127.0.0.1:{server.port}"
        for asset, pictures in (
            ("class_distribution", ["class_chart", "box_size_chart"]),
            ("augmented_dataset", ["samples"]),
        ):
            dom = rendered_dom(base + PICTURE_PAGES[asset])
            sources = dict(re.findall(r'<img src="([^"]+)" alt="([a-z_]+)">', dom))
            shown = {alt: src for src, alt in sources.items()}
            assert set(pictures) <= set(shown), f"{asset} shows {sorted(shown)} inline"
            for name in pictures:
                assert shown[name].endswith(f"/{name}.preview.png"), shown[name]
                with urllib.request.urlopen(shown[name], timeout=10) as response:
                    assert response.read()[:8] == b"\x89PNG\r\n\x1a\n"
