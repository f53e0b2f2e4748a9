"""The application schema: SQLAlchemy 2.0 typed models. Alembic migrations in `migrations/` create it.

A dataset is a history of immutable versions (`dataset_versions`). Everything a stage computes is keyed by the
version it was computed from and never updated or deleted while that version exists; a stage that runs again
adds rows (a new augmentation, split or export) and readers take the newest. Only `datasets.status` moves: it
says where the newest version stands. Image bytes never live here, and every path is relative to the storage
root. Large tables also carry `dataset_id`, so pruning and per-dataset reads need no joins.
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
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    SmallInteger,
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
    __table_args__ = (
        UniqueConstraint("user_id", "name"),
        CheckConstraint("voc_pixel_origin IN (0, 1)", name="ck_projects_voc_pixel_origin"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    #: How this project's VOC coordinates are read and written unless a run says otherwise (model.py).
    voc_pixel_origin: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    created_at: Mapped[datetime] = _created_at()


VERSION_CAUSES = ("upload", "label_edit", "revalidation")


class Dataset(Base):
    """One dataset of a project: its Dagster partition, and where its newest version stands."""

    __tablename__ = "datasets"
    __table_args__ = (
        CheckConstraint(f"status IN {DATASET_STATUSES!r}", name="ck_datasets_status"),
        Index("ix_datasets_status", "status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    partition_key: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    status_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class DatasetVersion(Base):
    """One immutable state of a dataset: an upload, a label edit, or a re-validation that found files changed.

    `files_path` is the unpacked upload the version reads its images from (relative to the storage root); a
    label edit or a re-validation shares its parent's.
    """

    __tablename__ = "dataset_versions"
    __table_args__ = (
        UniqueConstraint("dataset_id", "number", name="uq_dataset_versions_number"),
        CheckConstraint(f"cause IN {VERSION_CAUSES!r}", name="ck_dataset_versions_cause"),
        Index("ix_dataset_versions_upload_sha256", "upload_sha256"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_versions.id", ondelete="SET NULL"))
    cause: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(64))
    upload_sha256: Mapped[str] = mapped_column(String(64))  # the upload's bytes (zip, or folder listing)
    source_path: Mapped[str] = mapped_column(Text)  # the kept upload, relative to the storage root
    source_kind: Mapped[str] = mapped_column(String(16))  # "zip" | "folder"
    files_path: Mapped[str] = mapped_column(Text)  # the unpacked upload, relative to the storage root
    format: Mapped[str | None] = mapped_column(String(16))
    layout: Mapped[str | None] = mapped_column(String(32))
    file_count: Mapped[int] = mapped_column(Integer, default=0)
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = _created_at()


class VersionFile(Base):
    """A file of a version's upload: its path in the upload and the blob (sha256) holding its bytes.

    Bytes are stored once per content under `blobs/` of the storage root; versions refer to them, so a version
    that changes 10 of 2,000 images adds 10 blobs.
    """

    __tablename__ = "version_files"

    version_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="CASCADE"), primary_key=True
    )
    relative_path: Mapped[str] = mapped_column(Text, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)


class ImageCheck(Base):
    """What decoding an image's bytes found, by content: a version decodes only bytes never checked before.

    Keyed by sha256 and the file's suffix (`image.format_mismatch` depends on the name); `issues` holds the
    check's findings as (severity, code, message) without the path, which each version supplies.
    """

    __tablename__ = "image_checks"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    suffix: Mapped[str] = mapped_column(String(16), primary_key=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str | None] = mapped_column(String(16))
    mode: Mapped[str | None] = mapped_column(String(16))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    exif_orientation: Mapped[int] = mapped_column(Integer)
    dhash: Mapped[int | None] = mapped_column(BigInteger)
    issues: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = _created_at()


class VersionValidation(Base):
    """The one verdict on a version: the check, the UI summary and the dataset status all come from it.

    `class_names` and `content_hash` (classes, images, quarantine decisions and boxes) are what validation
    settled for the version; the hash is the Dagster data version of its labels.
    """

    __tablename__ = "version_validations"

    version_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="CASCADE"), primary_key=True
    )
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    run_id: Mapped[str | None] = mapped_column(String(64))
    passed: Mapped[bool] = mapped_column(Boolean)
    content_hash: Mapped[str] = mapped_column(String(64))
    class_names: Mapped[list[Any]] = mapped_column(default=list)
    #: Aligned with class_names: {"coco_id", "supercategory"} per class as the upload declared; [] if none.
    class_info: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    reason: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = _created_at()


class Image(Base):
    """An image of a version (original or augmented) and what the image check learned about it."""

    __tablename__ = "images"
    __table_args__ = (
        Index(
            "uq_images_version_path",
            "version_id",
            "relative_path",
            unique=True,
            postgresql_where="augmentation_id IS NULL",
        ),
        Index(
            "uq_images_augmentation_path",
            "augmentation_id",
            "relative_path",
            unique=True,
            postgresql_where="augmentation_id IS NOT NULL",
        ),
        Index("ix_images_dataset_sha256", "dataset_id", "sha256"),
        Index("ix_images_source_image", "source_image_id"),
        # What a box's one foreign key points at: its image, of its version and dataset.
        UniqueConstraint("id", "version_id", "dataset_id", name="uq_images_id_version_dataset"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id", ondelete="CASCADE"))
    relative_path: Mapped[str] = mapped_column(Text)  # inside the version's files, or its augmentation folder
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger)  # what re-validation compares before hashing
    format: Mapped[str | None] = mapped_column(String(16))
    mode: Mapped[str | None] = mapped_column(String(16))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    exif_orientation: Mapped[int] = mapped_column(Integer, default=1)
    dhash: Mapped[int | None] = mapped_column(BigInteger)
    source_id: Mapped[str | None] = mapped_column(Text)  # the upload's id for it (COCO image id)
    label_state: Mapped[str] = mapped_column(String(16))
    source_split: Mapped[str | None] = mapped_column(String(8))
    quarantined: Mapped[bool] = mapped_column(Boolean, default=False)
    is_augmented: Mapped[bool] = mapped_column(Boolean, default=False)
    augmentation_id: Mapped[int | None] = mapped_column(ForeignKey("augmentations.id", ondelete="CASCADE"))
    source_image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    recipe: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class Label(Base):
    """One box of a version in pixels of the upright image (xyxy, 0-based, continuous)."""

    __tablename__ = "labels"
    __table_args__ = (
        Index("ix_labels_version_class", "version_id", "class_index"),
        Index("ix_labels_image", "image_id"),
        # One check per box instead of three (image, version, dataset), and it also proves the box's version
        # and dataset are its image's; deleting a version or dataset reaches the boxes through their images.
        ForeignKeyConstraint(
            ["image_id", "version_id", "dataset_id"],
            ["images.id", "images.version_id", "images.dataset_id"],
            ondelete="CASCADE",
            name="fk_labels_image_version_dataset",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(BigInteger)
    version_id: Mapped[int] = mapped_column(BigInteger)
    image_id: Mapped[int] = mapped_column(BigInteger)
    class_index: Mapped[int] = mapped_column(Integer)
    x_min: Mapped[float] = mapped_column(Float)
    y_min: Mapped[float] = mapped_column(Float)
    x_max: Mapped[float] = mapped_column(Float)
    y_max: Mapped[float] = mapped_column(Float)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)


class DatasetValidation(Base):
    """One finding of the validation of a version, with the file and line it is about."""

    __tablename__ = "dataset_validations"
    __table_args__ = (
        Index("ix_dataset_validations_version_severity", "version_id", "severity"),
        CheckConstraint("severity IN ('error', 'warning', 'info')", name="ck_dataset_validations_severity"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id", ondelete="CASCADE"))
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
    """Per class and split of a version; deterministic from its labels, so written once per version."""

    __tablename__ = "class_distributions"
    __table_args__ = (UniqueConstraint("version_id", "split", "class_index", name="uq_class_distributions"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id", ondelete="CASCADE"))
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


class Augmentation(Base):
    """One run of the augmentation stage on a version: its recipe and the folder its images went to."""

    __tablename__ = "augmentations"
    __table_args__ = (Index("ix_augmentations_version", "version_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id", ondelete="CASCADE"))
    run_id: Mapped[str | None] = mapped_column(String(64))
    recipe: Mapped[dict[str, Any]] = mapped_column(default=dict)
    folder: Mapped[str] = mapped_column(Text)  # relative to the storage root
    images_made: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = _created_at()


class SplitReport(Base):
    """One split of a version (over one augmentation): how it was made and how good it is."""

    __tablename__ = "split_reports"
    __table_args__ = (Index("ix_split_reports_version", "version_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id", ondelete="CASCADE"))
    augmentation_id: Mapped[int | None] = mapped_column(ForeignKey("augmentations.id", ondelete="CASCADE"))
    run_id: Mapped[str | None] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    random_baseline_metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = _created_at()


class SplitAssignment(Base):
    """Which split an image is in, for one split report; images left out have no row."""

    __tablename__ = "split_assignments"

    split_report_id: Mapped[int] = mapped_column(
        ForeignKey("split_reports.id", ondelete="CASCADE"), primary_key=True
    )
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    split: Mapped[str] = mapped_column(String(8))


class LabelEditRecord(Base):
    """Audit trail of label edits (the old POST /label): who, when, what, and which version it made."""

    __tablename__ = "label_edits"
    __table_args__ = (Index("ix_label_edits_dataset", "dataset_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    version_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_versions.id", ondelete="CASCADE"))
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
    """One zip of a version in one format; `dataset-pipeline download` takes the newest of a version."""

    __tablename__ = "exports"
    __table_args__ = (Index("ix_exports_version_format", "version_id", "format"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id", ondelete="CASCADE"))
    split_report_id: Mapped[int | None] = mapped_column(ForeignKey("split_reports.id", ondelete="SET NULL"))
    format: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)  # relative to the storage root
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created_at()
