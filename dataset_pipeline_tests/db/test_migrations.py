import uuid

import pytest
import sqlalchemy as sa

from dataset_pipeline.db.bulk import copy_rows
from dataset_pipeline.db.database import Database
from dataset_pipeline.embedded_postgres import drop_database, ensure_database

pytestmark = pytest.mark.db

EXPECTED_TABLES = {
    "users",
    "projects",
    "datasets",
    "images",
    "labels",
    "dataset_validations",
    "class_distributions",
    "split_reports",
    "label_edits",
    "exports",
    "alembic_version",
}


def test_migrations_create_every_table_and_are_idempotent(pg_server_url):
    name = f"dp_mig_{uuid.uuid4().hex[:8]}"
    url = ensure_database(pg_server_url, name)
    try:
        first = Database(url)
        assert sa.inspect(first.engine).get_table_names() == []
        first.migrate()
        assert set(sa.inspect(first.engine).get_table_names()) == EXPECTED_TABLES
        first.dispose()
        second = Database(url)  # a second start finds everything in place and changes nothing
        second.migrate()
        with second.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
        second.dispose()
    finally:
        drop_database(pg_server_url, name)


def test_one_dataset_per_project_and_content_hash(db):
    with db.engine.begin() as conn:
        user = conn.execute(sa.text("INSERT INTO users (name) VALUES ('ann') RETURNING id")).scalar_one()
        project = conn.execute(
            sa.text("INSERT INTO projects (user_id, name) VALUES (:u, 'cars') RETURNING id"), {"u": user}
        ).scalar_one()
    insert = sa.text(
        "INSERT INTO datasets (project_id, name, version, partition_key, source_path, source_kind, "
        "content_sha256, status, class_names, file_count, total_bytes, validation_summary) "
        "VALUES (:p, :n, 1, :k, 'x', 'zip', :h, 'pending', '[]', 0, 0, '{}')"
    )
    with db.engine.begin() as conn:
        conn.execute(insert, {"p": project, "n": "a", "k": "ann-cars-a", "h": "0" * 64})
    with pytest.raises(sa.exc.IntegrityError), db.engine.begin() as conn:
        conn.execute(insert, {"p": project, "n": "b", "k": "ann-cars-b", "h": "0" * 64})


def test_copy_rows_round_trips_awkward_values(db):
    with db.engine.begin() as conn:
        conn.execute(sa.text("CREATE TEMP TABLE t (a text, b int, c double precision, d jsonb, e boolean)"))
        rows = [
            ('say "hi",\nthere', 1, 0.1, {"k": [1, 2]}, True),
            (None, None, None, None, False),
            ("", 0, 1e-9, {}, None),
        ]
        assert copy_rows(conn, "t", ["a", "b", "c", "d", "e"], rows) == 3
        got = conn.execute(sa.text("SELECT a, b, c, d, e FROM t ORDER BY b NULLS FIRST")).all()
    assert got[0] == (None, None, None, None, False)
    assert got[1] == ("", 0, 1e-9, {}, None)
    assert got[2] == ('say "hi",\nthere', 1, 0.1, {"k": [1, 2]}, True)
