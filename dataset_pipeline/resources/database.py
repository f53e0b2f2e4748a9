"""The application database as a Dagster resource: PostgreSQL from DATABASE_URL, or the embedded server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import sqlalchemy as sa
from pydantic import PrivateAttr
from sqlalchemy.orm import Session

from dataset_pipeline.db.database import Database
from dataset_pipeline.embedded_postgres import EmbeddedPostgres, resolve_database_url
from dataset_pipeline.settings import Settings


class DatabaseResource(dg.ConfigurableResource):
    """Opens the database once per run process and applies migrations, as the old backend did on start-up.

    The URL is not resource config on purpose: config is shown in the UI, and DATABASE_URL may hold a password.
    `url` exists for tests that point at a throwaway database without a password.
    """

    url: str | None = None

    _database: Database | None = PrivateAttr(default=None)
    _embedded: EmbeddedPostgres | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        url = self.url
        if url is None:
            url, self._embedded = resolve_database_url(Settings.from_env())
        self._database = Database(url)
        self._database.migrate()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._database is not None:
            self._database.dispose()

    @property
    def database(self) -> Database:
        if self._database is None:
            raise RuntimeError("DatabaseResource used before setup_for_execution")
        return self._database

    @property
    def engine(self) -> sa.Engine:
        return self.database.engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.database.session() as session:
            yield session
