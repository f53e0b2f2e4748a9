"""Shared fixtures: one PostgreSQL for the session (embedded, or DATABASE_URL), a fresh database per session.

Set DATABASE_URL to run every database test against that server instead of the embedded one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from dataset_pipeline.db.database import Database
from dataset_pipeline.embedded_postgres import (
    DAGSTER_SCHEMA,
    ensure_schema,
    normalize_url,
    start_embedded,
    with_search_path,
)
from dataset_pipeline.runtime import instance_config_source
from dataset_pipeline_tests.databases import fresh_database

#: Every application table (what `db` empties after each test); test_migrations checks it against the schema.
APP_TABLES = (
    "image_checks",
    "version_files",
    "exports",
    "label_edits",
    "split_assignments",
    "split_reports",
    "augmentations",
    "class_distributions",
    "dataset_validations",
    "labels",
    "images",
    "version_validations",
    "dataset_versions",
    "datasets",
    "projects",
    "users",
)


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a maintenance database on the server the tests use."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield normalize_url(external)
        return
    # Not under pytest's basetemp: pytest prunes old basetemps, which would delete a live server's data
    # when another pytest session starts on the same machine.
    folder = Path(tempfile.mkdtemp(prefix="dp-test-pg-"))
    embedded = start_embedded(folder / "pgdata")
    try:
        yield embedded.server_url
    finally:
        embedded.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(pg_server_url: str) -> Iterator[str]:
    """A database of its own for this test session, dropped afterwards: the CI server's `test` stays clean."""
    with fresh_database(pg_server_url, prefix="dp_test") as url:
        assert url is not None
        yield url


@pytest.fixture(scope="session")
def migrated_database(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def db(migrated_database: Database) -> Iterator[Database]:
    """The session's migrated database, emptied after each test."""
    yield migrated_database
    with migrated_database.engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {', '.join(APP_TABLES)} RESTART IDENTITY CASCADE"))


@pytest.fixture(scope="session")
def dagster_home(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Path]:
    """A DAGSTER_HOME holding the project's real dagster.yaml, with Dagster's storage in PostgreSQL."""
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copyfile(instance_config_source(), home / "dagster.yaml")
    ensure_schema(database_url, DAGSTER_SCHEMA)
    previous = {k: os.environ.get(k) for k in ("DAGSTER_PG_URL", "DAGSTER_HOME")}
    os.environ["DAGSTER_PG_URL"] = with_search_path(database_url, DAGSTER_SCHEMA)
    os.environ["DAGSTER_HOME"] = str(home)
    yield home
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def storage_root(tmp_path: Path) -> Path:
    root = tmp_path / "storage"
    root.mkdir()
    return root


@pytest.fixture
def dagster_instance(dagster_home: Path):
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(dagster_home))
    yield instance
    instance.dispose()


_DB_FIXTURES = {
    "pg_server_url",
    "database_url",
    "migrated_database",
    "db",
    "dagster_home",
    "dagster_instance",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that touches PostgreSQL is marked `db`, so CI can rerun exactly those on its server."""
    for item in items:
        if _DB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.db)
