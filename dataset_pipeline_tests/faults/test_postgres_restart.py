"""PostgreSQL restarted while a step's write is in flight: the transaction rolls back, the step says why and is
retried by its RetryPolicy (a lost connection is the one kind of error that is retried), pooled connections
recover (`pool_pre_ping`), and the dataset ends consistent.

The server restarted is a pgserver of this test's own (never the shared CI server), holding both our tables and
Dagster's storage, as in `make dev`. A table lock held by the test parks the step inside its write, so the restart
hits the transaction in flight every time rather than by luck of timing.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from pgserver import postgres_server
from pgserver._commands import pg_ctl

from dataset_pipeline.assets.ingest import raw_upload
from dataset_pipeline.assets.validation import validated_dataset
from dataset_pipeline.db.database import Database, DatabaseConnectionLost
from dataset_pipeline.domain.model import DatasetFormat
from dataset_pipeline.domain.synthetic import generate_dataset
from dataset_pipeline.embedded_postgres import (
    DAGSTER_SCHEMA,
    EmbeddedPostgres,
    ensure_database,
    ensure_schema,
    start_embedded,
    with_search_path,
)
from dataset_pipeline.local_run import process_upload
from dataset_pipeline.partitions import dataset_partitions
from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import LocalDatasetStorage
from dataset_pipeline.runtime import instance_config_source
from dataset_pipeline_tests.faults.database_locks import table_locked, writers_waiting_on_a_lock

pytestmark = [pytest.mark.slow]


def restart(embedded: EmbeddedPostgres) -> None:
    """`pg_ctl restart -m fast`: every connection is terminated, the server comes back with the same options."""
    server = embedded.server
    pg_ctl(["-w", "-m", "fast", "restart"], pgdata=embedded.pgdata, user=server.system_user, timeout=60)
    # pgserver remembers the old postmaster's pid; point it at the new one so it can stop the server later
    server._postmaster_info = postgres_server.PostmasterInfo.read_from_pgdata(embedded.pgdata)


@pytest.fixture
def own_server() -> Iterator[EmbeddedPostgres]:
    folder = Path(tempfile.mkdtemp(prefix="dp-restart-pg-"))
    embedded = start_embedded(folder / "pgdata")
    try:
        yield embedded
    finally:
        embedded.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def app_url(own_server: EmbeddedPostgres) -> str:
    url = ensure_database(own_server.server_url, "restarted")
    ensure_schema(url, DAGSTER_SCHEMA)
    database = Database(url)
    database.migrate()
    database.dispose()
    return url


@pytest.fixture
def instance(app_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    """Dagster's own storage on the server that will be restarted, from the project's dagster.yaml."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(instance_config_source(), home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_URL", with_search_path(app_url, DAGSTER_SCHEMA))
    instance = dg.DagsterInstance.from_config(str(home))
    yield instance
    instance.dispose()


def snapshot(engine: sa.Engine, key: str) -> tuple:
    """What a reader sees of the dataset: its status and, per version (oldest first), its number, cause and
    run, image and label counts, the smallest image id (new rows get new ids), the verdict and its run, and
    which runs wrote its findings."""
    with engine.connect() as connection:
        status = connection.execute(
            sa.text("SELECT status FROM datasets WHERE partition_key = :key"), {"key": key}
        ).scalar_one()
        versions = connection.execute(
            sa.text(
                "SELECT v.number, v.cause, v.run_id, "
                "(SELECT count(*) FROM images i WHERE i.version_id = v.id), "
                "(SELECT count(*) FROM labels l WHERE l.version_id = v.id), "
                "(SELECT min(i.id) FROM images i WHERE i.version_id = v.id), "
                "(SELECT max(i.id) FROM images i WHERE i.version_id = v.id), "
                "(SELECT passed FROM version_validations vv WHERE vv.version_id = v.id), "
                "(SELECT run_id FROM version_validations vv WHERE vv.version_id = v.id), "
                "(SELECT array_agg(DISTINCT f.run_id) FROM dataset_validations f WHERE f.version_id = v.id) "
                "FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id "
                "WHERE d.partition_key = :key ORDER BY v.number"
            ),
            {"key": key},
        ).all()
    return status, [tuple(version) for version in versions]


def error_messages(error) -> str:
    """Every message in a SerializableErrorInfo chain (Dagster wraps the step's error in its retry request)."""
    messages = []
    while error is not None:
        messages.append(f"{error.cls_name}: {error.message}")
        error = error.cause or error.context
    return "\n".join(messages)


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_restart_during_the_validation_write_rolls_it_back_and_the_retry_completes(
    own_server: EmbeddedPostgres, app_url: str, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    storage_root = tmp_path / "storage"
    resources = {
        "database": DatabaseResource(url=app_url),
        "storage": LocalDatasetStorage(root=str(storage_root)),
    }
    upload = generate_dataset(tmp_path / "upload", n_images=30, fmt=DatasetFormat.YOLO, seed=8, zipped=True)
    key, first = process_upload(
        instance,
        upload,
        user="ann",
        project="cars",
        name="restart",
        resources=resources,
        assets=[raw_upload, validated_dataset],
    )
    assert first.success
    observer = sa.create_engine(app_url, poolclass=sa.pool.NullPool)
    old = snapshot(observer, key)
    status, [(number, cause, run_id, images, labels, _, last_id, passed, verdict_run, findings)] = old
    assert (status, number, cause, run_id, images, passed, verdict_run) == (
        "validated",
        1,
        "upload",
        first.run_id,
        30,
        True,
        first.run_id,
    )
    assert labels > 0 and findings is None  # a clean dataset: no issues

    # Validating again finds version 1 changed on disk: one image is gone, which makes version 2.
    files = next(storage_root.rglob("files"))
    assert files == storage_root / "ann" / "cars" / "restart" / "v1" / "files"
    removed = sorted(p for p in files.rglob("*.jpg"))[0]
    removed.unlink()

    outcome: dict[str, object] = {}

    def validate_again() -> None:
        outcome["result"] = dg.materialize(
            [validated_dataset],
            instance=instance,
            partition_key=key,
            resources=resources,
            raise_on_error=False,
        )

    with table_locked(observer, "dataset_validations"):
        worker = threading.Thread(target=validate_again, daemon=True)
        worker.start()
        wait_until(lambda: writers_waiting_on_a_lock(observer) > 0)
        # The step has added version 2 and its images and waits to write its findings: restart the server now.
        restart(own_server)

    # Right after the restart (the retry waits 5 s), readers see exactly the old state: no version 2.
    assert snapshot(observer, key) == old

    worker.join(timeout=180)
    assert not worker.is_alive()
    result = outcome["result"]
    assert isinstance(result, dg.ExecuteInProcessResult)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retried) == 1
    reported = error_messages(retried[0].event_specific_data.error)
    assert "DatabaseConnectionLost: lost the connection to PostgreSQL" in reported
    assert "during a transaction, which was rolled back" in reported

    status, versions = snapshot(observer, key)
    assert status == "validated"
    assert versions[0] == old[1][0], "version 1 is untouched: its 30 images, labels and verdict stay"
    [(number, cause, run_id, images, labels, new_first_id, _, passed, verdict_run, findings)] = versions[1:]
    assert (number, cause, run_id, passed, verdict_run, findings) == (
        2,
        "revalidation",
        result.run_id,
        True,
        result.run_id,
        [result.run_id],
    ), "exactly one version 2, written by the retry"
    assert images == 29  # the removed image is reported, not stored
    assert labels > 0
    # The killed attempt took ids for its 29 rows and kept none; the retry wrote them once, after those.
    assert new_first_id > last_id + 29
    with observer.connect() as connection:
        missing = (
            connection.execute(
                sa.text(
                    "SELECT f.file FROM dataset_validations f JOIN dataset_versions v ON v.id = f.version_id "
                    "JOIN datasets d ON d.id = v.dataset_id "
                    "WHERE d.partition_key = :key AND v.number = 2 AND f.code = 'file-missing-since-validation'"
                ),
                {"key": key},
            )
            .scalars()
            .all()
        )
    assert missing == [removed.relative_to(files).as_posix()]
    observer.dispose()


def test_pooled_connections_recover_after_a_restart(own_server: EmbeddedPostgres, app_url: str) -> None:
    database = Database(app_url)
    try:
        with database.session() as session:  # fills the pool with a connection
            assert session.execute(sa.text("SELECT 1")).scalar_one() == 1
        restart(own_server)
        with database.session() as session:  # pool_pre_ping notices the dead one and reconnects
            assert session.execute(sa.text("SELECT 2")).scalar_one() == 2
    finally:
        database.dispose()


def test_a_connection_lost_mid_transaction_says_so_and_keeps_nothing(
    own_server: EmbeddedPostgres, app_url: str
) -> None:
    database = Database(app_url)
    try:
        with pytest.raises(DatabaseConnectionLost, match="rolled back"), database.session() as session:
            session.execute(sa.text("INSERT INTO users (name) VALUES ('half-written')"))
            restart(own_server)
            session.execute(sa.text("INSERT INTO users (name) VALUES ('never')"))
        with database.session() as session:
            assert session.execute(sa.text("SELECT count(*) FROM users")).scalar_one() == 0
    finally:
        database.dispose()


def test_dynamic_partitions_survive_too(instance: dg.DagsterInstance, own_server: EmbeddedPostgres) -> None:
    """Dagster's own storage on the same server comes back after a restart as well."""
    instance.add_dynamic_partitions(dataset_partitions.name, ["before-restart"])
    restart(own_server)
    wait_until(lambda: "before-restart" in instance.get_dynamic_partitions(dataset_partitions.name), 30)
