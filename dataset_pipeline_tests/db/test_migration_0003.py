"""Migration 0003: a database at the previous head (0002) upgrades with every row intact.

The rows are written the way 0002's code wrote them (a COCO and a VOC dataset, one version each, with a
verdict, images and labels); afterwards the new columns say "nothing was declared": no COCO ids, no class
info, the default VOC origin for the project, and the VOC verdict records that it was read 1-based.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from dataset_pipeline.db import repository
from dataset_pipeline.db.database import Database, alembic_config
from dataset_pipeline.db.models import Base, VersionValidation
from dataset_pipeline_tests.databases import fresh_database

pytestmark = pytest.mark.db


@pytest.fixture
def old_url(pg_server_url: str) -> Iterator[str]:
    with fresh_database(pg_server_url, prefix="dp_mig0003") as url:
        assert url is not None
        command.upgrade(alembic_config(url), "0002")
        yield url


def _write_previous_head_rows(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    tables = sa.MetaData()
    tables.reflect(engine)
    ids: dict[str, int] = {}

    def insert(connection: sa.Connection, table: str, **values) -> int:
        return connection.execute(sa.insert(tables.tables[table]).values(**values)).inserted_primary_key[0]

    with engine.begin() as connection:
        user = insert(connection, "users", name="ann")
        project = insert(connection, "projects", user_id=user, name="cars")
        for fmt in ("coco", "voc"):
            dataset = insert(
                connection,
                "datasets",
                project_id=project,
                name=fmt,
                partition_key=f"ann-cars-{fmt}",
                status="validated",
            )
            version = insert(
                connection,
                "dataset_versions",
                dataset_id=dataset,
                number=1,
                cause="upload",
                created_by="ann",
                upload_sha256="a" * 64,
                source_kind="zip",
                files_path=f"ann/cars/{fmt}/v1/files",
                format=fmt,
                source_path=f"ann/cars/{fmt}/v1/source/{fmt}.zip",
                file_count=1,
                total_bytes=10,
            )
            connection.execute(
                sa.insert(tables.tables["version_validations"]).values(
                    version_id=version,
                    dataset_id=dataset,
                    passed=True,
                    content_hash="h" * 32,
                    class_names=["car"],
                    summary={"policy": "quarantine", "images": 1},
                )
            )
            image = insert(
                connection,
                "images",
                dataset_id=dataset,
                version_id=version,
                relative_path="a.jpg",
                sha256="b" * 64,
                size_bytes=10,
                width=64,
                height=48,
                exif_orientation=1,
                label_state="labelled",
                quarantined=False,
                is_augmented=False,
            )
            insert(
                connection,
                "labels",
                dataset_id=dataset,
                version_id=version,
                image_id=image,
                class_index=0,
                x_min=1.0,
                y_min=2.0,
                x_max=3.0,
                y_max=4.0,
                attributes={"iscrowd": 0},
            )
            ids[fmt] = version
    engine.dispose()
    return ids


def test_a_database_at_0002_upgrades_with_its_rows_intact_and_nothing_declared(old_url):
    versions = _write_previous_head_rows(old_url)
    database = Database(old_url)
    try:
        database.migrate()
        with database.session() as session:
            for fmt, version_id in versions.items():
                verdict = session.get(VersionValidation, version_id)
                assert verdict.class_names == ["car"] and verdict.class_info == []
                assert repository.class_info_of(verdict) == []
                images = repository.load_images(session, version_id, usable_only=False)
                assert [(i.relative_path, i.source_id, i.copy_index) for i in images] == [
                    ("a.jpg", None, None)
                ]
                assert [(b.x_min, b.y_min, b.x_max, b.y_max) for b in images[0].boxes] == [
                    (1.0, 2.0, 3.0, 4.0)
                ]
                if fmt == "voc":  # read as the devkit's 1-based pixels before 0003: said so now
                    assert verdict.summary == {"policy": "quarantine", "images": 1, "voc_pixel_origin": 1}
                else:
                    assert "voc_pixel_origin" not in verdict.summary
                dataset = repository.find_dataset(session, f"ann-cars-{fmt}")
                assert repository.voc_pixel_origin_of(session, dataset) == 0
        with database.engine.connect() as connection:
            context = MigrationContext.configure(connection)
            assert compare_metadata(context, Base.metadata) == []
    finally:
        database.dispose()


def test_after_0003_a_box_has_one_foreign_key_that_ties_it_to_its_images_version(old_url):
    versions = _write_previous_head_rows(old_url)
    database = Database(old_url)
    try:
        database.migrate()
        engine = database.engine
        with engine.connect() as connection:
            keys = sa.inspect(connection).get_foreign_keys("labels")
            image_id, dataset_id = connection.execute(
                sa.text("SELECT id, dataset_id FROM images WHERE version_id = :v"), {"v": versions["coco"]}
            ).one()
        assert [(k["constrained_columns"], k["referred_table"]) for k in keys] == [
            (["image_id", "version_id", "dataset_id"], "images")
        ]
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:  # claims the VOC version
            connection.execute(
                sa.text(
                    "INSERT INTO labels (dataset_id, version_id, image_id, class_index, x_min, y_min, "
                    "x_max, y_max, attributes) VALUES (:d, :v, :i, 0, 0, 0, 1, 1, '{}')"
                ),
                {"d": dataset_id, "v": versions["voc"], "i": image_id},
            )
        with engine.begin() as connection:  # deleting a version still takes its boxes, through its images
            connection.execute(sa.text("DELETE FROM dataset_versions WHERE id = :v"), {"v": versions["coco"]})
            remaining = connection.execute(sa.text("SELECT version_id FROM labels")).scalars().all()
        assert remaining == [versions["voc"]]
    finally:
        database.dispose()
