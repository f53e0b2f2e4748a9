"""dataset versions: every stage's rows keyed by the immutable version they were computed from

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 11:40:00

Each existing dataset that was ingested becomes a dataset with one version (number 1, cause "upload")
holding its images, labels, findings, distribution, augmented images, split and exports exactly as they were.
One whose ingest never finished (no `storage_path`: failed, or still pending) keeps its row and status but
gets no version, as an unfinished ingest makes none now: the same upload dropped again is ingested, not
called a duplicate. Split assignments move out of `images.split` into `split_assignments`; augmented images
get an `augmentations` row; paths under the storage root (DATASET_STORAGE_ROOT) become relative to it, any
other path stays as it was. A dataset that an old main stored as a separate `-v2` partition stays a dataset
of its own.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_JSONB = postgresql.JSONB(astext_type=sa.Text())


def _created_at() -> sa.Column:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def _storage_root() -> str:
    """The storage root the old rows' absolute paths start with (the settings' default when unset)."""
    return str(Path(os.environ.get("DATASET_STORAGE_ROOT", "").strip() or "storage").expanduser().resolve())


def _version_fk(table: str, nullable: bool = False) -> None:
    op.add_column(table, sa.Column("version_id", sa.BigInteger(), nullable=True))
    # A Core statement rather than formatted SQL: SQLAlchemy quotes the table name and renders UPDATE ... FROM.
    child = sa.table(table, sa.column("dataset_id"), sa.column("version_id"))
    versions = sa.table("dataset_versions", sa.column("id"), sa.column("dataset_id"))
    op.execute(
        sa.update(child).values(version_id=versions.c.id).where(versions.c.dataset_id == child.c.dataset_id)
    )
    if not nullable:
        op.alter_column(table, "version_id", nullable=False)
    op.create_foreign_key(
        f"fk_{table}_version", table, "dataset_versions", ["version_id"], ["id"], ondelete="CASCADE"
    )


def upgrade() -> None:
    root = _storage_root().rstrip("/") + "/"
    # Paths under `root` lose that prefix in the statements below that bind :root, each spelled out per column
    # (no SQL is built by string formatting). A prefix comparison, not LIKE: '_' and '%' in the root's name
    # would be wildcards there.

    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("dataset_id", sa.BigInteger(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.BigInteger(), nullable=True),
        sa.Column("cause", sa.String(length=16), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("upload_sha256", sa.String(length=64), nullable=False),
        sa.Column("source_path", sa.Text(), nullable=False),
        sa.Column("source_kind", sa.String(length=16), nullable=False),
        sa.Column("files_path", sa.Text(), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=True),
        sa.Column("layout", sa.String(length=32), nullable=True),
        sa.Column("file_count", sa.Integer(), nullable=False),
        sa.Column("total_bytes", sa.BigInteger(), nullable=False),
        _created_at(),
        sa.CheckConstraint(
            "cause IN ('upload', 'label_edit', 'revalidation')", name="ck_dataset_versions_cause"
        ),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["parent_id"], ["dataset_versions.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dataset_id", "number", name="uq_dataset_versions_number"),
    )
    op.create_index("ix_dataset_versions_upload_sha256", "dataset_versions", ["upload_sha256"])
    op.execute(
        sa.text(
            "INSERT INTO dataset_versions (dataset_id, number, cause, created_by, upload_sha256, source_path, "
            "source_kind, files_path, format, layout, file_count, total_bytes, created_at) "
            "SELECT d.id, 1, 'upload', u.name, d.content_sha256, "
            "CASE WHEN left(d.source_path, length(:root)) = :root "
            "THEN substr(d.source_path, length(:root) + 1) ELSE d.source_path END, "
            "d.source_kind, "
            "CASE WHEN left(coalesce(d.storage_path, '') || '/files', length(:root)) = :root "
            "THEN substr(coalesce(d.storage_path, '') || '/files', length(:root) + 1) "
            "ELSE coalesce(d.storage_path, '') || '/files' END, "
            "d.format, d.layout, d.file_count, d.total_bytes, d.created_at "
            "FROM datasets d JOIN projects p ON p.id = d.project_id JOIN users u ON u.id = p.user_id "
            "WHERE d.storage_path IS NOT NULL ORDER BY d.id"
        ).bindparams(root=root)
    )

    op.create_table(
        "version_files",
        sa.Column("version_id", sa.BigInteger(), nullable=False),
        sa.Column("relative_path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["dataset_versions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("version_id", "relative_path"),
    )
    op.create_index("ix_version_files_sha256", "version_files", ["sha256"])
    op.create_table(
        "image_checks",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("suffix", sa.String(length=16), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=True),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("exif_orientation", sa.Integer(), nullable=False),
        sa.Column("dhash", sa.BigInteger(), nullable=True),
        sa.Column("issues", _JSONB, nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("sha256", "suffix"),
    )
    op.create_table(
        "version_validations",
        sa.Column("version_id", sa.BigInteger(), nullable=False),
        sa.Column("dataset_id", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("class_names", _JSONB, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("summary", _JSONB, nullable=False),
        _created_at(),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["version_id"], ["dataset_versions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("version_id"),
    )
    op.execute(
        "INSERT INTO version_validations (version_id, dataset_id, passed, content_hash, class_names, reason, "
        "summary) SELECT v.id, d.id, d.status <> 'invalid', 'migrated-' || left(d.content_sha256, 32), "
        "d.class_names, "
        "CASE WHEN d.status = 'invalid' THEN d.status_reason END, d.validation_summary "
        "FROM datasets d JOIN dataset_versions v ON v.dataset_id = d.id "
        "WHERE d.status NOT IN ('pending', 'ingested', 'failed', 'duplicate')"
    )

    op.create_table(
        "augmentations",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("dataset_id", sa.BigInteger(), nullable=False),
        sa.Column("version_id", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("recipe", _JSONB, nullable=False),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("images_made", sa.Integer(), nullable=False),
        _created_at(),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["version_id"], ["dataset_versions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_augmentations_version", "augmentations", ["version_id"])

    for table in ("images", "labels", "dataset_validations", "class_distributions", "exports"):
        _version_fk(table)
    _version_fk("label_edits", nullable=True)

    # Augmented images of the old main: one augmentation per dataset, in the dataset's `augmented/` folder.
    op.execute(
        sa.text(
            "INSERT INTO augmentations (dataset_id, version_id, recipe, folder, images_made) "
            "SELECT i.dataset_id, i.version_id, "
            "(array_agg(i.recipe - 'copy_index' - 'seed' ORDER BY i.id))[1], "
            "CASE WHEN left(coalesce(min(d.storage_path), '') || '/augmented', length(:root)) = :root "
            "THEN substr(coalesce(min(d.storage_path), '') || '/augmented', length(:root) + 1) "
            "ELSE coalesce(min(d.storage_path), '') || '/augmented' END, "
            "count(*) FROM images i JOIN datasets d ON d.id = i.dataset_id "
            "WHERE i.is_augmented GROUP BY i.dataset_id, i.version_id"
        ).bindparams(root=root)
    )
    op.add_column("images", sa.Column("augmentation_id", sa.BigInteger(), nullable=True))
    op.add_column("images", sa.Column("mtime_ns", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE images i SET augmentation_id = a.id FROM augmentations a "
        "WHERE i.is_augmented AND a.version_id = i.version_id"
    )
    op.create_foreign_key(
        "fk_images_augmentation", "images", "augmentations", ["augmentation_id"], ["id"], ondelete="CASCADE"
    )
    op.drop_constraint("uq_images_dataset_path", "images", type_="unique")
    op.create_index(
        "uq_images_version_path",
        "images",
        ["version_id", "relative_path"],
        unique=True,
        postgresql_where=sa.text("augmentation_id IS NULL"),
    )
    op.create_index(
        "uq_images_augmentation_path",
        "images",
        ["augmentation_id", "relative_path"],
        unique=True,
        postgresql_where=sa.text("augmentation_id IS NOT NULL"),
    )

    # Split reports get their own id; assignments leave `images.split` for a table of their own.
    op.drop_constraint("split_reports_pkey", "split_reports", type_="primary")
    op.add_column(
        "split_reports", sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False)
    )
    op.create_primary_key("split_reports_pkey", "split_reports", ["id"])
    _version_fk("split_reports")
    op.add_column("split_reports", sa.Column("augmentation_id", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE split_reports s SET augmentation_id = a.id FROM augmentations a WHERE a.version_id = s.version_id"
    )
    op.create_foreign_key(
        "fk_split_reports_augmentation",
        "split_reports",
        "augmentations",
        ["augmentation_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_index("ix_split_reports_version", "split_reports", ["version_id"])
    op.create_table(
        "split_assignments",
        sa.Column("split_report_id", sa.BigInteger(), nullable=False),
        sa.Column("image_id", sa.BigInteger(), nullable=False),
        sa.Column("split", sa.String(length=8), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["split_report_id"], ["split_reports.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("split_report_id", "image_id"),
    )
    op.execute(
        "INSERT INTO split_assignments (split_report_id, image_id, split) "
        "SELECT s.id, i.id, i.split FROM images i JOIN split_reports s ON s.version_id = i.version_id "
        "WHERE i.split IS NOT NULL"
    )
    op.drop_index("ix_images_dataset_split", table_name="images")
    op.drop_column("images", "split")

    op.drop_constraint("uq_exports_dataset_format", "exports", type_="unique")
    op.add_column("exports", sa.Column("split_report_id", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE exports e SET split_report_id = s.id FROM split_reports s WHERE s.version_id = e.version_id"
    )
    op.execute(
        sa.text(
            "UPDATE exports SET path = CASE WHEN left(path, length(:root)) = :root "
            "THEN substr(path, length(:root) + 1) ELSE path END"
        ).bindparams(root=root)
    )
    op.create_foreign_key(
        "fk_exports_split_report",
        "exports",
        "split_reports",
        ["split_report_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_index("ix_exports_version_format", "exports", ["version_id", "format"])

    op.drop_index("ix_labels_dataset_class", table_name="labels")
    op.create_index("ix_labels_version_class", "labels", ["version_id", "class_index"])
    op.drop_index("ix_dataset_validations_dataset_severity", table_name="dataset_validations")
    op.create_index(
        "ix_dataset_validations_version_severity", "dataset_validations", ["version_id", "severity"]
    )
    op.drop_constraint("uq_class_distributions", "class_distributions", type_="unique")
    op.create_unique_constraint(
        "uq_class_distributions", "class_distributions", ["version_id", "split", "class_index"]
    )

    op.drop_constraint("uq_datasets_project_content", "datasets", type_="unique")
    op.drop_constraint("uq_datasets_project_name_version", "datasets", type_="unique")
    for column in (
        "version",
        "source_path",
        "source_kind",
        "content_sha256",
        "format",
        "layout",
        "class_names",
        "file_count",
        "total_bytes",
        "storage_path",
        "validation_summary",
    ):
        op.drop_column("datasets", column)


def downgrade() -> None:
    raise NotImplementedError("0002 moves data into versions; restore a backup to go back to 0001")
