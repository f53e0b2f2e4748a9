"""The application database outside Dagster: one engine, a session per unit of work, migrations on open.

`DatabaseResource` wraps this for assets; the CLI and tests use it directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.orm import Session

from dataset_pipeline.embedded_postgres import normalize_url, redact

MIGRATIONS = Path(__file__).with_name("migrations")
_MIGRATION_LOCK = 7_202_611  # pg_advisory_lock key: two processes starting at once migrate one after another


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def create_app_engine(url: str) -> sa.Engine:
    """`pool_pre_ping` survives server restarts; `hide_parameters` keeps values out of logs and errors."""
    return sa.create_engine(
        normalize_url(url),
        pool_pre_ping=True,
        hide_parameters=True,
        pool_size=5,
        max_overflow=5,
        connect_args={"application_name": "dataset_pipeline"},
    )


class DatabaseConnectionLost(RuntimeError):
    """PostgreSQL went away mid-transaction (restart, failover, network); nothing of that transaction was kept."""


class Database:
    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.engine = create_app_engine(self.url)

    def __repr__(self) -> str:
        return f"Database({redact(self.url)})"

    def migrate(self) -> None:
        """Bring the schema to the newest migration; idempotent, safe to call from every process."""
        with self.engine.begin() as connection:
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back when it raises.

        A lost connection is reported as `DatabaseConnectionLost`; the pool (`pool_pre_ping`) replaces the dead
        connections, so the caller can simply try again (the assets' retry policy does).
        """
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                yield session
        except sa.exc.DBAPIError as error:
            if not error.connection_invalidated:
                raise
            reason = (str(error.orig).strip().splitlines() or ["connection closed"])[0]
            raise DatabaseConnectionLost(
                f"lost the connection to PostgreSQL ({redact(self.url)}) during a transaction, which was rolled "
                f"back: {reason}"
            ) from error

    def dispose(self) -> None:
        self.engine.dispose()
