"""PostgreSQL URLs, and the embedded server (pgserver) used when DATABASE_URL is unset.

pgserver ships PostgreSQL binaries inside a wheel, so a fresh machine needs nothing but Python. The server
listens on a Unix socket only (no TCP port to collide with) and keeps its data under DAGSTER_HOME/pgdata.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from dataset_pipeline.settings import ConfigurationError, Settings

APP_DATABASE = "dataset_pipeline"
DAGSTER_SCHEMA = "dagster"
_DRIVER = "postgresql+psycopg2"

log = logging.getLogger(__name__)


def normalize_url(url: str) -> str:
    """Spell the driver out: SQLAlchemy 2.1 maps bare `postgresql://` to psycopg 3, which is not installed."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername=_DRIVER)
    if parsed.drivername != _DRIVER:
        raise ConfigurationError(
            f"DATABASE_URL uses driver {parsed.drivername!r}; dataset_pipeline needs PostgreSQL through psycopg2: "
            "postgresql+psycopg2://user:password@host:5432/database"
        )
    return parsed.render_as_string(hide_password=False)


def redact(url: str) -> str:
    """The URL as it may appear in logs and the UI: the password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def with_search_path(url: str, schema: str) -> str:
    """Point every connection of `url` at `schema` first; Dagster's tables then live apart from ours."""
    parsed = make_url(url)
    query: dict[str, Any] = dict(parsed.query)
    query["options"] = f"-csearch_path={schema}"
    return parsed.set(query=query).render_as_string(hide_password=False)


def quote_identifier(engine: sa.Engine, name: str) -> str:
    """A schema or database name as SQL: identifiers cannot be bound parameters, so they are always quoted."""
    return engine.dialect.identifier_preparer.quote_identifier(name)


def ensure_schema(url: str, schema: str) -> None:
    engine = sa.create_engine(url, hide_parameters=True, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(engine, schema)}"))
    finally:
        engine.dispose()


def ensure_database(server_url: str, database: str) -> str:
    """Create `database` on the server of `server_url` if missing; return the URL of that database."""
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": database}
            ).first()
            if not exists:
                conn.execute(sa.text(f"CREATE DATABASE {quote_identifier(engine, database)}"))
    finally:
        engine.dispose()
    return make_url(server_url).set(database=database).render_as_string(hide_password=False)


def drop_database(server_url: str, database: str) -> None:
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(
                sa.text(f"DROP DATABASE IF EXISTS {quote_identifier(engine, database)} WITH (FORCE)")
            )
    finally:
        engine.dispose()


@dataclass
class EmbeddedPostgres:
    """A handle on the pgserver instance; the server stops when the last process holding a handle exits."""

    pgdata: Path
    server: Any  # pgserver.PostgresServer

    @property
    def server_url(self) -> str:
        """URL of the maintenance database `postgres` on the embedded server, with the psycopg2 driver."""
        return normalize_url(self.server.get_uri())

    def stop(self) -> None:
        self.server.cleanup()


def start_embedded(pgdata: Path) -> EmbeddedPostgres:
    import pgserver  # imported lazily: only development without DATABASE_URL needs it

    pgdata.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
    log.info("embedded PostgreSQL running with data in %s", pgdata)
    return EmbeddedPostgres(pgdata=pgdata, server=server)


def resolve_database_url(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    """DATABASE_URL when set; otherwise start (or join) the embedded server and use its application database."""
    if settings.database_url:
        return normalize_url(settings.database_url), None
    if settings.environment == "production":
        raise ConfigurationError(
            "ENVIRONMENT=production needs DATABASE_URL; no embedded database in production."
        )
    embedded = start_embedded(settings.embedded_pgdata)
    return ensure_database(embedded.server_url, APP_DATABASE), embedded
