import uuid

import pytest
import sqlalchemy as sa

from dataset_pipeline.db.bulk import copy_rows
from dataset_pipeline.db.database import Database
from dataset_pipeline.db.models import Base
from dataset_pipeline.embedded_postgres import drop_database, ensure_database
from dataset_pipeline_tests.conftest import APP_TABLES

pytestmark = pytest.mark.db

EXPECTED_TABLES = {
    "users",
    "projects",
    "datasets",
    "dataset_versions",
    "version_validations",
    "version_files",
    "image_checks",
    "images",
    "labels",
    "dataset_validations",
    "class_distributions",
    "augmentations",
    "split_reports",
    "split_assignments",
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


def test_every_table_is_modelled_and_emptied_between_tests():
    """A table the models or the `db` fixture's TRUNCATE list forgot would keep rows from one test in the next."""
    assert {table.name for table in Base.metadata.sorted_tables} | {"alembic_version"} == EXPECTED_TABLES
    assert set(APP_TABLES) | {"alembic_version"} == EXPECTED_TABLES
    assert len(APP_TABLES) == len(set(APP_TABLES))


INSERT_VERSION = sa.text(
    "INSERT INTO dataset_versions (dataset_id, number, cause, created_by, upload_sha256, source_path, "
    "source_kind, files_path, file_count, total_bytes) "
    "VALUES (:d, :n, :c, 'ann', :h, 'ann/cars/a/v1/source/a.zip', 'zip', 'ann/cars/a/v1/files', 0, 0) "
    "RETURNING id"
)
INSERT_VERDICT = sa.text(
    "INSERT INTO version_validations (version_id, dataset_id, passed, content_hash, class_names, summary) "
    "VALUES (:v, :d, true, 'h', '[]', '{}')"
)


def test_one_dataset_per_partition_one_number_per_version_and_one_verdict_per_version(db):
    with db.engine.begin() as conn:
        user = conn.execute(sa.text("INSERT INTO users (name) VALUES ('ann') RETURNING id")).scalar_one()
        project = conn.execute(
            sa.text("INSERT INTO projects (user_id, name) VALUES (:u, 'cars') RETURNING id"), {"u": user}
        ).scalar_one()
    insert_dataset = sa.text(
        "INSERT INTO datasets (project_id, name, partition_key, status) VALUES (:p, :n, :k, 'pending') "
        "RETURNING id"
    )
    with db.engine.begin() as conn:
        dataset = conn.execute(insert_dataset, {"p": project, "n": "a", "k": "ann-cars-a"}).scalar_one()
        first = conn.execute(
            INSERT_VERSION, {"d": dataset, "n": 1, "c": "upload", "h": "0" * 64}
        ).scalar_one()
        conn.execute(INSERT_VERDICT, {"v": first, "d": dataset})
        # A re-validation's version keeps its parent's upload: the same bytes twice in a project are allowed
        # by the schema (raw_upload refuses a re-upload of them, not the database).
        conn.execute(INSERT_VERSION, {"d": dataset, "n": 2, "c": "revalidation", "h": "0" * 64})

    refused = [
        (insert_dataset, {"p": project, "n": "b", "k": "ann-cars-a"}),  # a second dataset in one partition
        (INSERT_VERSION, {"d": dataset, "n": 2, "c": "upload", "h": "1" * 64}),  # version 2 again
        (INSERT_VERSION, {"d": dataset, "n": 3, "c": "nightly", "h": "1" * 64}),  # not a known cause
        (INSERT_VERDICT, {"v": first, "d": dataset}),  # a version is validated once
    ]
    for statement, values in refused:
        with pytest.raises(sa.exc.IntegrityError), db.engine.begin() as conn:
            conn.execute(statement, values)
    with db.engine.connect() as conn:
        versions = conn.execute(
            sa.text("SELECT number, cause FROM dataset_versions WHERE dataset_id = :d ORDER BY number"),
            {"d": dataset},
        ).all()
        assert [tuple(row) for row in versions] == [(1, "upload"), (2, "revalidation")]
        assert conn.execute(sa.text("SELECT count(*) FROM version_validations")).scalar_one() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM datasets")).scalar_one() == 1


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
