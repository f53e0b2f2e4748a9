"""Alembic environment: runs on the connection Database.migrate() hands over, or on sqlalchemy.url."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from dataset_pipeline.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url"), poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        run_migrations(conn)
    engine.dispose()
