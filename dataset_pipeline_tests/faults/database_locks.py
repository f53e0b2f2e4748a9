"""Park a pipeline step inside its database write, so a fault can be created while the write is in flight."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import sqlalchemy as sa

from dataset_pipeline.embedded_postgres import quote_identifier


@contextlib.contextmanager
def table_locked(engine: sa.Engine, table: str) -> Iterator[sa.Connection]:
    """Hold a SHARE lock on `table`: every write to it waits until the block ends (or the server goes away)."""
    with engine.connect() as connection:
        transaction = connection.begin()
        connection.execute(sa.text(f"LOCK TABLE {quote_identifier(engine, table)} IN SHARE MODE"))
        try:
            yield connection
        finally:
            with contextlib.suppress(sa.exc.DBAPIError):  # gone with a restarted server: nothing to undo
                transaction.rollback()


def writers_waiting_on_a_lock(engine: sa.Engine) -> int:
    """Connections of the pipeline (application_name) that wait for a lock: a write parked by `table_locked`."""
    with engine.connect() as connection:
        return connection.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dataset_pipeline' "
                "AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
