"""The application schema: SQLAlchemy 2.0 typed models. Alembic migrations in `migrations/` create it.

Image bytes never live here: `images` holds facts about files under the storage root, `labels` holds boxes.
Large tables carry `dataset_id` so a dataset's rows can be replaced or read without joins.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

DATASET_STATUSES = (
    "pending",
    "ingested",
    "validated",
    "analysed",
    "augmented",
    "split",
    "exported",
    "invalid",
    "failed",
    "duplicate",
)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSONB, list[Any]: JSONB}


def _created_at() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = _created_at()


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("user_id", "name"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created_at()


class Dataset(Base):
    """One uploaded dataset version; `partition_key` names its Dagster partition."""

    __tablename__ = "datasets"
    __table_args__ = (
        UniqueConstraint("project_id", "content_sha256", name="uq_datasets_project_content"),
        UniqueConstraint("project_id", "name", "version", name="uq_datasets_project_name_version"),
        CheckConstraint(f"status IN {DATASET_STATUSES!r}", name="ck_datasets_status"),
        Index("ix_datasets_status", "status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    partition_key: Mapped[str] = mapped_column(String(64), unique=True)
    source_path: Mapped[str] = mapped_column(Text)  # where the upload came from (inbox drop, CLI path)
    source_kind: Mapped[str] = mapped_column(String(16))  # "zip" | "folder"
    content_sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[str | None] = mapped_column(String(16))
    layout: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    status_reason: Mapped[str | None] = mapped_column(Text)
    class_names: Mapped[list[Any]] = mapped_column(default=list)
    file_count: Mapped[int] = mapped_column(Integer, default=0)
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    storage_path: Mapped[str | None] = mapped_column(Text)
    validation_summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class Image(Base):
    """An image file of a dataset (original or augmented) and what the image check learned about it."""

    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("dataset_id", "relative_path", name="uq_images_dataset_path"),
        Index("ix_images_dataset_sha256", "dataset_id", "sha256"),
        Index("ix_images_dataset_split", "dataset_id", "split"),
        Index("ix_images_source_image", "source_image_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    relative_path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str | None] = mapped_column(String(16))
    mode: Mapped[str | None] = mapped_column(String(16))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    exif_orientation: Mapped[int] = mapped_column(Integer, default=1)
    dhash: Mapped[int | None] = mapped_column(BigInteger)
    label_state: Mapped[str] = mapped_column(String(16))
    source_split: Mapped[str | None] = mapped_column(String(8))
    split: Mapped[str | None] = mapped_column(String(8))  # assigned by dataset_splits
    quarantined: Mapped[bool] = mapped_column(Boolean, default=False)
    is_augmented: Mapped[bool] = mapped_column(Boolean, default=False)
    source_image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    recipe: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class Label(Base):
    """One box in pixels of the upright image (xyxy, 0-based, continuous)."""

    __tablename__ = "labels"
    __table_args__ = (
        Index("ix_labels_dataset_class", "dataset_id", "class_index"),
        Index("ix_labels_image", "image_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    class_index: Mapped[int] = mapped_column(Integer)
    x_min: Mapped[float] = mapped_column(Float)
    y_min: Mapped[float] = mapped_column(Float)
    x_max: Mapped[float] = mapped_column(Float)
    y_max: Mapped[float] = mapped_column(Float)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)


class DatasetValidation(Base):
    """One finding of the latest validation of a dataset, with the file and line it is about."""

    __tablename__ = "dataset_validations"
    __table_args__ = (
        Index("ix_dataset_validations_dataset_severity", "dataset_id", "severity"),
        CheckConstraint("severity IN ('error', 'warning', 'info')", name="ck_dataset_validations_severity"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    run_id: Mapped[str | None] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(8))
    code: Mapped[str] = mapped_column(String(64))
    file: Mapped[str] = mapped_column(Text)
    line: Mapped[int | None] = mapped_column(Integer)
    annotation_id: Mapped[str | None] = mapped_column(String(64))
    image_path: Mapped[str | None] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _created_at()


class ClassDistribution(Base):
    __tablename__ = "class_distributions"
    __table_args__ = (UniqueConstraint("dataset_id", "split", "class_index", name="uq_class_distributions"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    split: Mapped[str] = mapped_column(String(8))  # "all", or a source split
    class_index: Mapped[int] = mapped_column(Integer)
    class_name: Mapped[str] = mapped_column(Text)
    boxes: Mapped[int] = mapped_column(Integer)
    images: Mapped[int] = mapped_column(Integer)
    share: Mapped[float] = mapped_column(Float)
    small: Mapped[int] = mapped_column(Integer, default=0)
    medium: Mapped[int] = mapped_column(Integer, default=0)
    large: Mapped[int] = mapped_column(Integer, default=0)
    aspect_median: Mapped[float | None] = mapped_column(Float)


class SplitReport(Base):
    """How the latest split was made and how good it is (LD, ED, FZ against a random split)."""

    __tablename__ = "split_reports"

    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True)
    run_id: Mapped[str | None] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    random_baseline_metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = _created_at()


class LabelEditRecord(Base):
    """Audit trail of label edits (the old POST /label): who, when, what, and counts before/after."""

    __tablename__ = "label_edits"
    __table_args__ = (Index("ix_label_edits_dataset", "dataset_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    edited_by: Mapped[str] = mapped_column(String(64))
    operation: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    boxes_before: Mapped[int] = mapped_column(Integer)
    boxes_after: Mapped[int] = mapped_column(Integer)
    classes_before: Mapped[list[Any]] = mapped_column(default=list)
    classes_after: Mapped[list[Any]] = mapped_column(default=list)
    run_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created_at()


class Export(Base):
    """The latest zip of a dataset in one format; `dataset-pipeline download` reads this."""

    __tablename__ = "exports"
    __table_args__ = (UniqueConstraint("dataset_id", "format", name="uq_exports_dataset_format"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    format: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created_at()
