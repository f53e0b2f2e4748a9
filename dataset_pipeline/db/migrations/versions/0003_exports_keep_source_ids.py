"""exports give back what the upload declared: COCO image ids, category ids and supercategories, VOC origin

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 14:30:00

`images.source_id` keeps the upload's id of an image (a COCO image id), `version_validations.class_info` the
COCO category id and supercategory of each class, `projects.voc_pixel_origin` how the project's VOC files
are read and written unless a run says otherwise. A box's three foreign keys (image, version, dataset)
become one to its image with that version and dataset: a third of the checks per box written, and a box can
no longer claim another version than its image's. Versions validated before this keep no ids: their exports
number categories and images from 1, as before, and their VOC files were read with the devkit's origin 1,
which their verdict now records so a re-export writes what was read.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_JSONB = postgresql.JSONB(astext_type=sa.Text())


def upgrade() -> None:
    op.add_column("images", sa.Column("source_id", sa.Text(), nullable=True))
    op.add_column(
        "version_validations",
        sa.Column("class_info", _JSONB, server_default=sa.text("'[]'::jsonb"), nullable=False),
    )
    op.add_column(
        "projects",
        sa.Column("voc_pixel_origin", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.create_check_constraint("ck_projects_voc_pixel_origin", "projects", "voc_pixel_origin IN (0, 1)")
    op.create_unique_constraint("uq_images_id_version_dataset", "images", ["id", "version_id", "dataset_id"])
    for name in _label_foreign_keys():
        op.drop_constraint(name, "labels", type_="foreignkey")
    op.create_foreign_key(
        "fk_labels_image_version_dataset",
        "labels",
        "images",
        ["image_id", "version_id", "dataset_id"],
        ["id", "version_id", "dataset_id"],
        ondelete="CASCADE",
    )
    # Before 0003 every VOC upload was read as 1-based; say so where the verdict keeps its settings.
    op.execute(
        """
        UPDATE version_validations AS verdict
           SET summary = verdict.summary || '{"voc_pixel_origin": 1}'::jsonb
          FROM dataset_versions AS version
         WHERE version.id = verdict.version_id AND version.format = 'voc'
        """
    )


def _label_foreign_keys() -> list[str]:
    """The names 0001 and 0002 gave the foreign keys of `labels` (PostgreSQL's defaults and one of ours)."""
    inspector = sa.inspect(op.get_bind())
    return [fk["name"] for fk in inspector.get_foreign_keys("labels")]


def downgrade() -> None:
    op.drop_constraint("fk_labels_image_version_dataset", "labels", type_="foreignkey")
    op.create_foreign_key(None, "labels", "images", ["image_id"], ["id"], ondelete="CASCADE")
    op.create_foreign_key(None, "labels", "datasets", ["dataset_id"], ["id"], ondelete="CASCADE")
    op.create_foreign_key(
        "fk_labels_version", "labels", "dataset_versions", ["version_id"], ["id"], ondelete="CASCADE"
    )
    op.drop_constraint("uq_images_id_version_dataset", "images", type_="unique")
    op.drop_constraint("ck_projects_voc_pixel_origin", "projects", type_="check")
    op.drop_column("projects", "voc_pixel_origin")
    op.drop_column("version_validations", "class_info")
    op.drop_column("images", "source_id")
