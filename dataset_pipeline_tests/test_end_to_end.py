"""`dataset-pipeline dev` for real: webserver, daemon, sensor and PostgreSQL, driven through the inbox and
checked through GraphQL, the database and the export zips; then Ctrl-C must leave no process behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from dataset_pipeline.domain.model import DatasetFormat
from dataset_pipeline.domain.synthetic import generate_dataset
from dataset_pipeline.embedded_postgres import APP_DATABASE, drop_database, ensure_database, start_embedded

pytestmark = [pytest.mark.slow, pytest.mark.db]

MARKER = "DATASET_PIPELINE_E2E_MARKER"
RUN_QUERY = """
query Runs($key: String!) {
  runsOrError(filter: {tags: [{key: "dagster/partition", value: $key}]}) {
    ... on Runs { results { runId status jobName } }
  }
}"""
LOCATION_QUERY = """
{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError { __typename } } } } }
"""
SENSOR_QUERY = """
{ sensorsOrError(repositorySelector: {repositoryLocationName: "dataset_pipeline", repositoryName: "__repository__"}) {
    ... on Sensors { results { name sensorState { status } } } } }
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["data"]


def processes_with(marker: str) -> list[int]:
    """PIDs of live processes whose environment carries `marker`: everything the server started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker.encode() in (entry / "environ").read_bytes():
                status = (entry / "status").read_text()
                if "State:\tZ" not in status:
                    found.append(int(entry.name))
    return found


def wait_for(what: str, condition, timeout: float, server: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(
                f"dataset-pipeline dev exited ({server.returncode}) while waiting for {what}:\n{log.read_text()[-4000:]}"
            )
        with contextlib.suppress(OSError, KeyError, TypeError, ValueError):
            value = condition()
            if value:
                return value
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}:\n{log.read_text()[-4000:]}")


@pytest.fixture
def external_database() -> Iterator[str | None]:
    """With DATABASE_URL set (CI's second pass), a fresh database on that server; else None (embedded)."""
    server = os.environ.get("DATABASE_URL")
    if not server:
        yield None
        return
    from dataset_pipeline.embedded_postgres import normalize_url

    name = f"dp_e2e_{uuid.uuid4().hex[:8]}"
    url = ensure_database(normalize_url(server), name)
    yield url
    drop_database(normalize_url(server), name)


def test_a_dropped_dataset_goes_through_the_graph_under_dagster_dev(tmp_path, external_database):
    home, storage = tmp_path / "home", tmp_path / "storage"
    port, marker = free_port(), uuid.uuid4().hex
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DATASET_STORAGE_ROOT": str(storage),
        "INBOX_SENSOR_INTERVAL_SECONDS": "2",
        MARKER: marker,
    }
    env.pop("DATABASE_URL", None)
    if external_database:
        env["DATABASE_URL"] = external_database
    log = tmp_path / "dev.log"
    cli = [sys.executable, "-m", "dataset_pipeline.cli"]
    with log.open("wb") as output:
        server = subprocess.Popen(
            [*cli, "dev", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        locations = wait_for(
            "the code location",
            lambda: graphql(port, LOCATION_QUERY)["workspaceOrError"]["locationEntries"],
            180,
            server,
            log,
        )
        assert [(e["name"], e["locationOrLoadError"]["__typename"]) for e in locations] == [
            ("dataset_pipeline", "RepositoryLocation")
        ]
        sensors = graphql(port, SENSOR_QUERY)["sensorsOrError"]["results"]
        assert {s["name"]: s["sensorState"]["status"] for s in sensors}["inbox_sensor"] == "RUNNING"

        # First start on an empty storage: the sample dataset was dropped; then a user's own drop.
        upload = generate_dataset(
            tmp_path / "upload",
            n_images=12,
            fmt=DatasetFormat.COCO,
            seed=11,
            image_size=(160, 120),
            zipped=True,
        )
        submitted = subprocess.run(
            [*cli, "submit", str(upload), "--user", "e2e", "--project", "cars", "--name", "trucks"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert submitted.returncode == 0, submitted.stderr
        assert not list((storage / "inbox").rglob("*.part"))

        for key in ("e2e-cars-trucks", "demo-samples-sample-yolo"):

            def finished(key=key):
                runs = graphql(port, RUN_QUERY, {"key": key})["runsOrError"]["results"]
                statuses = {run["status"] for run in runs}
                if statuses & {"FAILURE", "CANCELED"}:
                    pytest.fail(f"run for {key} ended {statuses}:\n{log.read_text()[-4000:]}")
                return runs if runs and statuses == {"SUCCESS"} else None

            runs = wait_for(f"the run of {key}", finished, 420, server, log)
            assert [run["jobName"] for run in runs] == ["process_dataset"]  # automation adds no second run

        listed = subprocess.run([*cli, "list"], env=env, capture_output=True, text=True, timeout=120)
        assert listed.returncode == 0, listed.stderr
        assert "e2e-cars-trucks" in listed.stdout and "exported" in listed.stdout
        assert not list((storage / "inbox" / "e2e").rglob("*.zip"))  # moved to the dataset's source/
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGINT)  # what Ctrl-C in `make dev` sends
        try:
            server.wait(timeout=60)
        finally:
            survivors = processes_with(marker)
            for pid in survivors:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    assert server.returncode is not None
    assert survivors == [], (
        f"processes outlived `dataset-pipeline dev`: {survivors}\n{log.read_text()[-3000:]}"
    )
    # PostgreSQL only: no database file was created anywhere by the webserver, the daemon or the runs
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".db", ".sqlite", ".sqlite3")]

    export = storage / "e2e" / "cars" / "trucks" / "exports" / "e2e-cars-trucks-coco.zip"
    with zipfile.ZipFile(export) as archive:
        assert archive.testzip() is None
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["dataset"] == "e2e-cars-trucks"

    embedded = None
    url = external_database
    if url is None:  # the embedded server kept its data in DAGSTER_HOME: start it again and look
        embedded = start_embedded(home / "pgdata")
        url = ensure_database(embedded.server_url, APP_DATABASE)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                sa.text(
                    "SELECT d.status, d.format, count(i.id) AS images FROM datasets d "
                    "JOIN images i ON i.dataset_id = d.id AND NOT i.is_augmented "
                    "WHERE d.partition_key = 'e2e-cars-trucks' GROUP BY d.status, d.format"
                )
            ).one()
            exports = connection.execute(
                sa.text(
                    "SELECT e.format, e.path FROM exports e JOIN datasets d ON d.id = e.dataset_id "
                    "WHERE d.partition_key = 'e2e-cars-trucks' ORDER BY 1"
                )
            ).all()
            dagster_runs = connection.execute(sa.text("SELECT count(*) FROM dagster.runs")).scalar_one()
    finally:
        engine.dispose()
        if embedded is not None:
            embedded.stop()
    assert (row.status, row.format, row.images) == ("exported", "coco", 12)
    assert [e.format for e in exports] == ["coco", "voc", "yolo"] and str(export) in {e.path for e in exports}
    assert dagster_runs >= 2  # Dagster's own storage is in PostgreSQL too
