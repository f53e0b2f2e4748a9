"""Everything a process needs before Dagster starts: the database URLs, schemas, DAGSTER_HOME and its config.

`dataset-pipeline dev`, `dataset-pipeline demo` and the tests all go through `prepare_runtime`, so the embedded
PostgreSQL, the migrations and Dagster's instance storage are set up the same way everywhere.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from dataset_pipeline.db.database import Database
from dataset_pipeline.embedded_postgres import (
    DAGSTER_SCHEMA,
    EmbeddedPostgres,
    ensure_schema,
    resolve_database_url,
    with_search_path,
)
from dataset_pipeline.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Runtime:
    settings: Settings
    database_url: str
    dagster_url: str
    embedded: EmbeddedPostgres | None

    def environment(self) -> dict[str, str]:
        """Variables for child processes (webserver, daemon, run workers): they reuse this server."""
        return {
            "DATABASE_URL": self.database_url,
            "DAGSTER_PG_URL": self.dagster_url,
            "DAGSTER_HOME": str(self.settings.home),
            "DATASET_STORAGE_ROOT": str(self.settings.storage_root),
            "ENVIRONMENT": self.settings.environment,
        }

    def stop(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()


def instance_config_source() -> Path:
    for candidate in (PROJECT_ROOT / "dagster.yaml", Path.cwd() / "dagster.yaml"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("dagster.yaml not found next to the project; run from the repository root")


def prepare_runtime(settings: Settings | None = None, *, export: bool = True) -> Runtime:
    """Start/join PostgreSQL, migrate, give Dagster its schema and DAGSTER_HOME (with the repo's dagster.yaml).

    With `export`, the variables are also set in this process so in-process Dagster code sees them.
    """
    settings = settings or Settings.from_env()
    database_url, embedded = resolve_database_url(settings)
    ensure_schema(database_url, DAGSTER_SCHEMA)
    database = Database(database_url)
    try:
        database.migrate()
    finally:
        database.dispose()
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.storage_root.mkdir(parents=True, exist_ok=True)
    # dagster only reads dagster.yaml from DAGSTER_HOME; the repository's copy is the one source of truth.
    shutil.copyfile(instance_config_source(), settings.home / "dagster.yaml")
    runtime = Runtime(settings, database_url, with_search_path(database_url, DAGSTER_SCHEMA), embedded)
    if export:
        os.environ.update(runtime.environment())
    return runtime
