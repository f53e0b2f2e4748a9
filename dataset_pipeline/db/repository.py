"""The queries the stages make, in one place: assets and the CLI call these instead of writing SQL inline.

Every write adds rows keyed by the version they belong to; nothing here updates or deletes what a stage
wrote, except `prune_versions`, which removes whole old versions on request. Writes of many rows go through
`bulk.copy_rows`; every function takes the caller's session so a stage's changes commit or roll back together.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.orm import Session

from dataset_pipeline.db.bulk import copy_rows
from dataset_pipeline.db.models import (
    Augmentation,
    ClassDistribution,
    Dataset,
    DatasetValidation,
    DatasetVersion,
    Export,
    Image,
    ImageCheck,
    Label,
    LabelEditRecord,
    Project,
    SplitAssignment,
    SplitReport,
    User,
    VersionFile,
    VersionValidation,
)
from dataset_pipeline.domain.label_edits import EditEffect, ImageLabels, LabelEdit, LabelSet
from dataset_pipeline.domain.model import Box, ClassInfo, ImageFacts, Issue, LabelState, Severity

IMAGE_COLUMNS = (
    "dataset_id",
    "version_id",
    "relative_path",
    "sha256",
    "size_bytes",
    "mtime_ns",
    "format",
    "mode",
    "width",
    "height",
    "exif_orientation",
    "dhash",
    "label_state",
    "source_split",
    "quarantined",
    "is_augmented",
    "augmentation_id",
    "source_image_id",
    "recipe",
    "source_id",
)
LABEL_COLUMNS = (
    "dataset_id",
    "version_id",
    "image_id",
    "class_index",
    "x_min",
    "y_min",
    "x_max",
    "y_max",
    "attributes",
)
VALIDATION_COLUMNS = (
    "dataset_id",
    "version_id",
    "run_id",
    "severity",
    "code",
    "file",
    "line",
    "annotation_id",
    "image_path",
    "message",
)


class DatasetNotFound(LookupError):
    pass


def get_or_create_project(session: Session, user_name: str, project_name: str) -> Project:
    user = session.scalar(sa.select(User).where(User.name == user_name))
    if user is None:
        session.execute(
            sa.dialects.postgresql.insert(User)
            .values(name=user_name)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        user = session.scalars(sa.select(User).where(User.name == user_name)).one()
    project = session.scalar(
        sa.select(Project).where(Project.user_id == user.id, Project.name == project_name)
    )
    if project is None:
        session.execute(
            sa.dialects.postgresql.insert(Project)
            .values(user_id=user.id, name=project_name)
            .on_conflict_do_nothing(index_elements=["user_id", "name"])
        )
        project = session.scalars(
            sa.select(Project).where(Project.user_id == user.id, Project.name == project_name)
        ).one()
    return project


def dataset_by_partition(session: Session, partition_key: str) -> Dataset:
    dataset = session.scalar(sa.select(Dataset).where(Dataset.partition_key == partition_key))
    if dataset is None:
        raise DatasetNotFound(
            f"no dataset is recorded for partition {partition_key!r}; materialise raw_upload for it first"
        )
    return dataset


def find_dataset(session: Session, key: str) -> Dataset | None:
    """By partition key, or by numeric id (the old /download/{dataset_id})."""
    dataset = session.scalar(sa.select(Dataset).where(Dataset.partition_key == key))
    if dataset is None and key.isdigit():
        dataset = session.get(Dataset, int(key))
    return dataset


def owner_of(session: Session, dataset: Dataset) -> tuple[str, str]:
    row = session.execute(
        sa.select(User.name, Project.name)
        .join(Project, Project.user_id == User.id)
        .where(Project.id == dataset.project_id)
    ).one()
    return row[0], row[1]


def voc_pixel_origin_of(session: Session, dataset: Dataset) -> int:
    """The project's default for reading and writing VOC coordinates (`dataset-pipeline project`)."""
    return session.scalar(sa.select(Project.voc_pixel_origin).where(Project.id == dataset.project_id))


def set_project_voc_pixel_origin(session: Session, user_name: str, project_name: str, origin: int) -> Project:
    project = get_or_create_project(session, user_name, project_name)
    project.voc_pixel_origin = origin
    session.flush()
    return project


def lock_content(session: Session, project_id: int, content_sha256: str) -> None:
    """Serialise uploads of the same bytes into one project until this transaction ends, so two runs started
    at once cannot both miss each other in `duplicate_of`."""
    session.execute(
        sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"dataset-content:{project_id}:{content_sha256}"},
    )


def duplicate_of(
    session: Session, project_id: int, upload_sha256: str
) -> tuple[Dataset, DatasetVersion] | None:
    """The dataset version of the project that was uploaded with these bytes, if any. An upload whose ingest
    never finished made no version, so the same upload dropped again is simply tried again."""
    row = session.execute(
        sa.select(Dataset, DatasetVersion)
        .join(DatasetVersion, DatasetVersion.dataset_id == Dataset.id)
        .where(
            Dataset.project_id == project_id,
            DatasetVersion.upload_sha256 == upload_sha256,
            DatasetVersion.cause == "upload",
        )
        .order_by(DatasetVersion.id)
        .limit(1)
    ).first()
    return None if row is None else (row[0], row[1])


# --- versions -----------------------------------------------------------------------------------------


class VersionNotFound(LookupError):
    pass


def latest_version(session: Session, dataset_id: int) -> DatasetVersion | None:
    return session.scalar(
        sa.select(DatasetVersion)
        .where(DatasetVersion.dataset_id == dataset_id)
        .order_by(DatasetVersion.number.desc())
        .limit(1)
    )


def version_of(session: Session, dataset: Dataset, number: int | None = None) -> DatasetVersion:
    """Version `number` of a dataset, or its newest when None; raises VersionNotFound naming what exists."""
    if number is None:
        version = latest_version(session, dataset.id)
    else:
        version = session.scalar(
            sa.select(DatasetVersion).where(
                DatasetVersion.dataset_id == dataset.id, DatasetVersion.number == number
            )
        )
    if version is None:
        numbers = [v.number for v in versions_of(session, dataset.id)]
        have = ", ".join(map(str, numbers)) or "none yet"
        what = "a version" if number is None else f"version {number}"
        raise VersionNotFound(f"dataset {dataset.partition_key} has no {what} (versions: {have})")
    return version


def versions_of(session: Session, dataset_id: int) -> list[DatasetVersion]:
    return list(
        session.scalars(
            sa.select(DatasetVersion)
            .where(DatasetVersion.dataset_id == dataset_id)
            .order_by(DatasetVersion.number)
        )
    )


def add_version(
    session: Session, dataset: Dataset, parent: DatasetVersion | None, **fields: Any
) -> DatasetVersion:
    """Append the next version of a dataset (numbers count up from 1 under the dataset's row lock)."""
    session.execute(sa.select(Dataset.id).where(Dataset.id == dataset.id).with_for_update())
    number = session.scalar(
        sa.select(sa.func.coalesce(sa.func.max(DatasetVersion.number), 0)).where(
            DatasetVersion.dataset_id == dataset.id
        )
    )
    if parent is not None:
        for name in ("upload_sha256", "source_path", "source_kind", "files_path", "format", "layout"):
            fields.setdefault(name, getattr(parent, name))
        fields.setdefault("file_count", parent.file_count)
        fields.setdefault("total_bytes", parent.total_bytes)
    version = DatasetVersion(
        dataset_id=dataset.id, number=number + 1, parent_id=parent.id if parent else None, **fields
    )
    session.add(version)
    session.flush()
    return version


def add_version_files(
    session: Session, version: DatasetVersion, manifest: Sequence[tuple[str, str, int]]
) -> int:
    """Record which blob holds each file of a version; returns how many contents no version had before."""
    shas = {sha for _, sha, _ in manifest}
    known = (
        set(session.scalars(sa.select(VersionFile.sha256).where(VersionFile.sha256.in_(shas)).distinct()))
        if shas
        else set()
    )
    copy_rows(
        session.connection(),
        "version_files",
        ("version_id", "relative_path", "sha256", "size_bytes"),
        ((version.id, path, sha, size) for path, sha, size in manifest),
    )
    return len(shas - known)


def file_hashes(session: Session, version_id: int) -> dict[str, str]:
    """relative path -> sha256 of every file of a version, as ingest stored it."""
    return dict(
        session.execute(
            sa.select(VersionFile.relative_path, VersionFile.sha256).where(
                VersionFile.version_id == version_id
            )
        ).all()
    )


def cached_checks(session: Session, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], ImageCheck]:
    """Earlier image checks by (sha256, suffix), from any dataset: bytes decoded once need no second decode."""
    keys = set(keys)
    if not keys:
        return {}
    shas = {sha for sha, _ in keys}
    found = session.scalars(sa.select(ImageCheck).where(ImageCheck.sha256.in_(shas)))
    return {(c.sha256, c.suffix): c for c in found if (c.sha256, c.suffix) in keys}


def add_checks(session: Session, checks: Iterable[dict[str, Any]]) -> None:
    """Remember image checks by content; a content checked twice at once keeps the first row."""
    rows = list(checks)
    if rows:
        statement = sa.dialects.postgresql.insert(ImageCheck).on_conflict_do_nothing(
            index_elements=["sha256", "suffix"]
        )
        session.execute(statement, rows)


def validation_of(session: Session, version_id: int) -> VersionValidation | None:
    return session.get(VersionValidation, version_id)


# --- images, labels and validation rows ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageRow:
    relative_path: str
    sha256: str
    size_bytes: int
    format: str | None
    mode: str | None
    width: int
    height: int
    exif_orientation: int
    dhash: int | None
    label_state: str
    source_split: str | None
    quarantined: bool
    boxes: Sequence[Box]
    mtime_ns: int | None = None
    is_augmented: bool = False
    source_image_id: int | None = None
    recipe: dict[str, Any] | None = None
    source_id: str | None = None

    @property
    def usable(self) -> bool:
        """Not quarantined and looked at by someone: what a model may learn from."""
        return not self.quarantined and self.label_state != LabelState.UNLABELLED.value

    @classmethod
    def taken_over(cls, record: Image, boxes: Sequence[Box], label_state: str | None = None) -> ImageRow:
        """A parent version's image as a row of a derived version (a label edit, a re-validation)."""
        return cls(
            relative_path=record.relative_path,
            sha256=record.sha256,
            size_bytes=record.size_bytes,
            mtime_ns=record.mtime_ns,
            format=record.format,
            mode=record.mode,
            width=record.width,
            height=record.height,
            exif_orientation=record.exif_orientation,
            dhash=record.dhash,
            label_state=label_state or record.label_state,
            source_split=record.source_split,
            quarantined=record.quarantined,
            boxes=boxes,
            source_id=record.source_id,
        )


def insert_images_with_labels(
    session: Session, version: DatasetVersion, images: Sequence[ImageRow], augmentation_id: int | None = None
) -> dict[str, int]:
    """COPY images, read their ids back, COPY their labels; returns relative_path -> image id."""
    connection = session.connection()
    copy_rows(
        connection,
        "images",
        IMAGE_COLUMNS,
        (
            (
                version.dataset_id,
                version.id,
                image.relative_path,
                image.sha256,
                image.size_bytes,
                image.mtime_ns,
                image.format,
                image.mode,
                image.width,
                image.height,
                image.exif_orientation,
                image.dhash,
                image.label_state,
                image.source_split,
                image.quarantined,
                image.is_augmented,
                augmentation_id,
                image.source_image_id,
                image.recipe,
                image.source_id,
            )
            for image in images
        ),
    )
    same_set = (
        Image.augmentation_id.is_(None)
        if augmentation_id is None
        else Image.augmentation_id == augmentation_id
    )
    ids = dict(
        connection.execute(
            sa.select(Image.relative_path, Image.id).where(Image.version_id == version.id, same_set)
        ).all()
    )
    copy_labels(session, version, ((ids[image.relative_path], image.boxes) for image in images))
    return ids


def copy_labels(
    session: Session, version: DatasetVersion, boxes_by_image: Iterable[tuple[int, Sequence[Box]]]
) -> int:
    """COPY the boxes of each (image id, boxes) pair into `labels`; returns how many were written."""
    return copy_rows(
        session.connection(),
        "labels",
        LABEL_COLUMNS,
        (
            (
                version.dataset_id,
                version.id,
                image_id,
                box.class_index,
                box.x_min,
                box.y_min,
                box.x_max,
                box.y_max,
                dict(box.attributes),
            )
            for image_id, boxes in boxes_by_image
            for box in boxes
        ),
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """The one decision on a version: whether its gate passes, why not, and the summary the UI shows."""

    passed: bool
    reason: str | None
    summary: dict[str, Any]
    #: None: computed from the version's rows once they are written (`version_content_hash`).
    content_hash: str | None
    class_names: Sequence[str]
    class_info: Sequence[ClassInfo] = ()


def class_info_json(class_info: Sequence[ClassInfo]) -> list[dict[str, Any]]:
    return [{"coco_id": info.coco_id, "supercategory": info.supercategory} for info in class_info]


def class_info_of(verdict: VersionValidation) -> list[ClassInfo]:
    """The class info a verdict stored (aligned with its class names), as the domain model has it."""
    return [
        ClassInfo(coco_id=entry.get("coco_id"), supercategory=entry.get("supercategory") or "")
        for entry in verdict.class_info or []
    ]


def store_validation(
    session: Session,
    version: DatasetVersion,
    images: Sequence[ImageRow],
    issues: Iterable[Issue],
    verdict: Verdict,
    run_id: str | None,
) -> str:
    """Write a version's images, boxes, findings and verdict; a version is validated once. Returns the
    verdict's content hash."""
    insert_images_with_labels(session, version, images)
    add_findings(session, version, issues, run_id)
    return add_verdict(session, version, verdict, run_id)


def add_findings(
    session: Session, version: DatasetVersion, issues: Iterable[Issue], run_id: str | None
) -> int:
    """COPY findings (`dataset_validations` rows) of a version; returns how many were written."""
    return copy_rows(
        session.connection(),
        "dataset_validations",
        VALIDATION_COLUMNS,
        (
            (
                version.dataset_id,
                version.id,
                run_id,
                str(i.severity),
                i.code,
                i.file,
                i.line,
                i.annotation_id,
                i.image,
                i.message,
            )
            for i in issues
        ),
    )


def add_verdict(session: Session, version: DatasetVersion, verdict: Verdict, run_id: str | None) -> str:
    """Store the verdict; returns its content hash (computed from the rows written before it, if not given)."""
    content_hash = verdict.content_hash or version_content_hash(session, version.id, verdict.class_names)
    session.add(
        VersionValidation(
            version_id=version.id,
            dataset_id=version.dataset_id,
            run_id=run_id,
            passed=verdict.passed,
            reason=verdict.reason,
            summary=verdict.summary,
            content_hash=content_hash,
            class_names=list(verdict.class_names),
            class_info=class_info_json(verdict.class_info),
        )
    )
    session.flush()
    return content_hash


def copy_findings(
    session: Session,
    parent: DatasetVersion,
    version: DatasetVersion,
    extra: Iterable[Issue],
    run_id: str | None,
    *,
    without_codes: Collection[str] = (),
    without: Collection[tuple[str, str, str]] = (),
) -> None:
    """A derived version carries its parent's findings (they are about the same files) plus its own.

    `without_codes` and `without` ((file, code, message) of findings) leave out what no longer holds.
    """
    columns = [c for c in VALIDATION_COLUMNS if c not in ("version_id",)]
    kept = sa.select(
        sa.literal(version.id, sa.BigInteger),
        *(getattr(DatasetValidation, c) for c in columns),
    ).where(DatasetValidation.version_id == parent.id)
    if without_codes:
        kept = kept.where(DatasetValidation.code.not_in(list(without_codes)))
    if without:
        kept = kept.where(
            sa.tuple_(DatasetValidation.file, DatasetValidation.code, DatasetValidation.message).not_in(
                list(without)
            )
        )
    session.execute(sa.insert(DatasetValidation).from_select(["version_id", *columns], kept))
    add_findings(session, version, extra, run_id)


def finding_counts(session: Session, version_id: int) -> list[tuple[str, str, int]]:
    """(severity, code, count) of a version's findings."""
    return [
        (severity, code, count)
        for severity, code, count in session.execute(
            sa.select(DatasetValidation.severity, DatasetValidation.code, sa.func.count())
            .where(DatasetValidation.version_id == version_id)
            .group_by(DatasetValidation.severity, DatasetValidation.code)
        )
    ]


def first_findings(session: Session, version_id: int, limit: int) -> list[Issue]:
    """The first findings of a version, errors first, as the domain model has them."""
    order = sa.case({"error": 0, "warning": 1}, value=DatasetValidation.severity, else_=2)
    rows = session.scalars(
        sa.select(DatasetValidation)
        .where(DatasetValidation.version_id == version_id)
        .order_by(order, DatasetValidation.id)
        .limit(limit)
    )
    return [issue_of(row) for row in rows]


def issue_of(row: DatasetValidation) -> Issue:
    """A stored finding as the domain model has it (so it can say where it is with `Issue.location`)."""
    return Issue(
        Severity(row.severity),
        row.code,
        row.file,
        row.message,
        line=row.line,
        annotation_id=row.annotation_id,
        image=row.image_path,
    )


def findings_of(session: Session, version_id: int, limit: int | None = None) -> list[DatasetValidation]:
    """A version's validation report, errors first, then by file and line (the first `limit` of it)."""
    order = sa.case({"error": 0, "warning": 1}, value=DatasetValidation.severity, else_=2)
    return list(
        session.scalars(
            sa.select(DatasetValidation)
            .where(DatasetValidation.version_id == version_id)
            .order_by(order, DatasetValidation.file, DatasetValidation.line, DatasetValidation.id)
            .limit(limit)
        )
    )


@dataclass(slots=True)
class StoredImage:
    id: int
    relative_path: str
    width: int
    height: int
    sha256: str
    size_bytes: int
    mtime_ns: int | None
    dhash: int | None
    label_state: str
    source_split: str | None
    quarantined: bool
    is_augmented: bool
    source_image_id: int | None
    source_id: str | None
    copy_index: int | None  # of an augmented copy: which copy of its source it is
    boxes: list[Box]

    @property
    def usable(self) -> bool:
        """Not quarantined and looked at by someone: what a model may learn from."""
        return not self.quarantined and self.label_state != LabelState.UNLABELLED.value


@dataclass(frozen=True, slots=True)
class StoredFacts:
    """What an original image's row says about its bytes, without its boxes."""

    relative_path: str
    sha256: str
    size_bytes: int
    width: int
    height: int
    exif_orientation: int
    dhash: int | None
    quarantined: bool


def quarantined_paths(session: Session, version_id: int, limit: int) -> list[str]:
    """The first quarantined original images of a version, by path."""
    return list(
        session.scalars(
            sa.select(Image.relative_path)
            .where(Image.version_id == version_id, Image.augmentation_id.is_(None), Image.quarantined)
            .order_by(Image.relative_path)
            .limit(limit)
        )
    )


def image_ids(session: Session, version_id: int) -> dict[str, int]:
    """relative path -> id of every original image of a version."""
    return dict(
        session.execute(
            sa.select(Image.relative_path, Image.id).where(
                Image.version_id == version_id, Image.augmentation_id.is_(None)
            )
        ).all()
    )


def stored_facts(session: Session, version_id: int) -> dict[str, StoredFacts]:
    """relative path -> the facts of every original image of a version."""
    rows = session.execute(
        sa.select(
            Image.relative_path,
            Image.sha256,
            Image.size_bytes,
            Image.width,
            Image.height,
            Image.exif_orientation,
            Image.dhash,
            Image.quarantined,
        ).where(Image.version_id == version_id, Image.augmentation_id.is_(None))
    )
    return {row.relative_path: StoredFacts(*row) for row in rows}


def copy_images_with_labels(
    session: Session,
    parent: DatasetVersion,
    version: DatasetVersion,
    replaced: Sequence[tuple[ImageFacts, int | None]],
) -> int:
    """The parent's original images and their boxes as the version's, in the database alone (no row travels
    through Python); `replaced` gives new facts (sha256, size, format, mode, EXIF, dHash) and modification
    time of some images by path, their boxes and decisions staying the parent's. Returns how many images
    were copied."""
    connection = session.connection()
    connection.execute(
        sa.text(
            "CREATE TEMPORARY TABLE replaced_facts (relative_path text PRIMARY KEY, sha256 text, "
            "size_bytes bigint, mtime_ns bigint, format text, mode text, exif_orientation integer, "
            "dhash bigint) ON COMMIT DROP"
        )
    )
    copy_rows(
        connection,
        "replaced_facts",
        ("relative_path", "sha256", "size_bytes", "mtime_ns", "format", "mode", "exif_orientation", "dhash"),
        (
            (f.path, f.sha256, f.size_bytes, mtime_ns, f.format, f.mode, f.exif_orientation, f.dhash)
            for f, mtime_ns in replaced
        ),
    )
    # The new ids are drawn first, so images and boxes are copied by an integer join; a join on paths
    # against rows the planner has no statistics for picked a nested loop (1.7 s for 2,000 images).
    connection.execute(
        sa.text(
            "CREATE TEMPORARY TABLE copied_ids ON COMMIT DROP AS "
            "SELECT id AS old_id, nextval(pg_get_serial_sequence('images', 'id')) AS new_id "
            "FROM images WHERE version_id = :parent AND augmentation_id IS NULL ORDER BY id"
        ),
        {"parent": parent.id},
    )
    connection.execute(sa.text("ANALYZE copied_ids"))
    copied = connection.execute(
        sa.text(
            """
            INSERT INTO images (id, dataset_id, version_id, relative_path, sha256, size_bytes, mtime_ns, format,
                                mode, width, height, exif_orientation, dhash, label_state, source_split,
                                quarantined, is_augmented, augmentation_id, source_image_id, recipe, source_id)
            SELECT m.new_id, i.dataset_id, :version, i.relative_path,
                   coalesce(r.sha256, i.sha256),
                   coalesce(r.size_bytes, i.size_bytes),
                   CASE WHEN r.relative_path IS NULL THEN i.mtime_ns ELSE r.mtime_ns END,
                   CASE WHEN r.relative_path IS NULL THEN i.format ELSE r.format END,
                   CASE WHEN r.relative_path IS NULL THEN i.mode ELSE r.mode END,
                   i.width, i.height,
                   coalesce(r.exif_orientation, i.exif_orientation),
                   CASE WHEN r.relative_path IS NULL THEN i.dhash ELSE r.dhash END,
                   i.label_state, i.source_split, i.quarantined, false, NULL, NULL, NULL, i.source_id
              FROM images AS i
              JOIN copied_ids AS m ON m.old_id = i.id
              LEFT JOIN replaced_facts AS r ON r.relative_path = i.relative_path
             ORDER BY m.new_id
            """
        ),
        {"version": version.id},
    ).rowcount
    connection.execute(
        sa.text(
            """
            INSERT INTO labels (dataset_id, version_id, image_id, class_index, x_min, y_min, x_max, y_max,
                                attributes)
            SELECT l.dataset_id, :version, m.new_id, l.class_index, l.x_min, l.y_min, l.x_max, l.y_max,
                   l.attributes
              FROM labels AS l JOIN copied_ids AS m ON m.old_id = l.image_id
             WHERE l.version_id = :parent
             ORDER BY l.id
            """
        ),
        {"version": version.id, "parent": parent.id},
    )
    return copied


def load_images(
    session: Session,
    version_id: int,
    *,
    augmentation_id: int | None = None,
    usable_only: bool = True,
) -> list[StoredImage]:
    """A version's original images (and those of one augmentation of it), with their boxes, by path.

    `usable_only` keeps what a model may learn from: not quarantined and looked at by someone.
    """
    sets = Image.augmentation_id.is_(None)
    if augmentation_id is not None:
        sets = sets | (Image.augmentation_id == augmentation_id)
    query = sa.select(
        Image.id,
        Image.relative_path,
        Image.width,
        Image.height,
        Image.sha256,
        Image.size_bytes,
        Image.mtime_ns,
        Image.dhash,
        Image.label_state,
        Image.source_split,
        Image.quarantined,
        Image.is_augmented,
        Image.source_image_id,
        Image.source_id,
        Image.recipe["copy_index"].as_integer(),
    ).where(Image.version_id == version_id, sets)
    if usable_only:
        query = query.where(Image.quarantined.is_(False), Image.label_state != LabelState.UNLABELLED.value)
    images = {
        row.id: StoredImage(*row, boxes=[])
        for row in session.execute(query.order_by(Image.is_augmented, Image.relative_path))
    }
    for image_id, box in _boxes_of(session, version_id):
        image = images.get(image_id)
        if image is not None:
            image.boxes.append(box)
    return list(images.values())


def _boxes_of(session: Session, version_id: int) -> Iterator[tuple[int, Box]]:
    """(image id, box) for every label of a version, in image order and then insertion order."""
    labels = session.execute(
        sa.select(
            Label.image_id,
            Label.class_index,
            Label.x_min,
            Label.y_min,
            Label.x_max,
            Label.y_max,
            Label.attributes,
        )
        .where(Label.version_id == version_id)
        .order_by(Label.image_id, Label.id)
    )
    for image_id, class_index, x_min, y_min, x_max, y_max, attributes in labels:
        yield image_id, Box(class_index, x_min, y_min, x_max, y_max, attributes or {})


# --- what the later stages add to a version ----------------------------------------------------------------


def has_distribution(session: Session, version_id: int) -> bool:
    return session.scalar(sa.select(sa.exists().where(ClassDistribution.version_id == version_id)))


def add_distribution(session: Session, version: DatasetVersion, rows: Iterable[dict[str, Any]]) -> None:
    """The distribution follows from the version's labels alone, so it is written once per version."""
    rows = [{"dataset_id": version.dataset_id, "version_id": version.id, **row} for row in rows]
    if rows:
        statement = sa.dialects.postgresql.insert(ClassDistribution).on_conflict_do_nothing(
            constraint="uq_class_distributions"
        )
        session.execute(statement, rows)


def latest_augmentation(session: Session, version_id: int) -> Augmentation | None:
    return session.scalar(
        sa.select(Augmentation)
        .where(Augmentation.version_id == version_id)
        .order_by(Augmentation.id.desc())
        .limit(1)
    )


def add_augmentation(
    session: Session,
    version: DatasetVersion,
    recipe: dict[str, Any],
    folder: str,
    images: Sequence[ImageRow],
    run_id: str | None,
) -> Augmentation:
    augmentation = Augmentation(
        dataset_id=version.dataset_id,
        version_id=version.id,
        run_id=run_id,
        recipe=recipe,
        folder=folder,
        images_made=len(images),
    )
    session.add(augmentation)
    session.flush()
    insert_images_with_labels(session, version, images, augmentation_id=augmentation.id)
    return augmentation


def latest_split(session: Session, version_id: int) -> SplitReport | None:
    return session.scalar(
        sa.select(SplitReport)
        .where(SplitReport.version_id == version_id)
        .order_by(SplitReport.id.desc())
        .limit(1)
    )


def add_split(
    session: Session,
    version: DatasetVersion,
    augmentation_id: int | None,
    assignment: dict[int, str | None],
    report: dict[str, Any],
) -> SplitReport:
    """A new split of a version: its report row and one assignment row per image that is in a split."""
    split_report = SplitReport(
        dataset_id=version.dataset_id, version_id=version.id, augmentation_id=augmentation_id, **report
    )
    session.add(split_report)
    session.flush()
    copy_rows(
        session.connection(),
        "split_assignments",
        ("split_report_id", "image_id", "split"),
        ((split_report.id, image_id, split) for image_id, split in assignment.items() if split is not None),
    )
    return split_report


def assignments_of(session: Session, split_report_id: int) -> dict[int, str]:
    return dict(
        session.execute(
            sa.select(SplitAssignment.image_id, SplitAssignment.split).where(
                SplitAssignment.split_report_id == split_report_id
            )
        ).all()
    )


def add_export(
    session: Session,
    version: DatasetVersion,
    split_report_id: int | None,
    fmt: str,
    path: str,
    size: int,
    sha256: str,
    run_id: str | None,
) -> None:
    session.add(
        Export(
            dataset_id=version.dataset_id,
            version_id=version.id,
            split_report_id=split_report_id,
            format=fmt,
            path=path,
            size_bytes=size,
            sha256=sha256,
            run_id=run_id,
        )
    )


def exports_of(session: Session, version_id: int) -> list[Export]:
    """The newest export of a version in each format."""
    return list(
        session.scalars(
            sa.select(Export)
            .where(Export.version_id == version_id)
            .ext(distinct_on(Export.format))
            .order_by(Export.format, Export.id.desc())
        )
    )


def set_status(session: Session, dataset: Dataset, status: str, reason: str | None = None) -> None:
    """Where the dataset's newest version stands: the one column that moves as stages finish."""
    dataset.status = status
    dataset.status_reason = reason


def list_datasets(session: Session) -> list[Dataset]:
    return list(session.scalars(sa.select(Dataset).order_by(Dataset.id)))


# --- label edits -----------------------------------------------------------------------------------------


def load_label_set(
    session: Session,
    version: DatasetVersion,
    class_names: Sequence[str],
    class_info: Sequence[ClassInfo] = (),
) -> tuple[LabelSet, list[StoredImage]]:
    """Classes and boxes of a version's original images (augmented copies are derived, not edited)."""
    stored = load_images(session, version.id, usable_only=False)
    images = {
        image.relative_path: ImageLabels(
            image.width, image.height, list(image.boxes), LabelState(image.label_state)
        )
        for image in stored
    }
    return LabelSet(list(class_names), images, list(class_info)), stored


def image_rows_with_labels(
    stored: Sequence[StoredImage], labels: LabelSet, facts: dict[int, Image]
) -> list[ImageRow]:
    """The rows of a derived version: the parent's image facts with the given labels."""
    rows = []
    for image in stored:
        edited = labels.images[image.relative_path]
        rows.append(ImageRow.taken_over(facts[image.id], edited.boxes, label_state=str(edited.label_state)))
    return rows


def image_records(session: Session, version_id: int) -> dict[int, Image]:
    """Every original image row of a version by id (facts a derived version takes over)."""
    return {
        image.id: image
        for image in session.scalars(
            sa.select(Image).where(Image.version_id == version_id, Image.augmentation_id.is_(None))
        )
    }


def record_label_edits(
    session: Session,
    version: DatasetVersion,
    edited_by: str,
    edits: Sequence[LabelEdit],
    effects: Sequence[EditEffect],
    run_id: str | None,
) -> None:
    session.execute(
        sa.insert(LabelEditRecord),
        [
            {
                "dataset_id": version.dataset_id,
                "version_id": version.id,
                "edited_by": edited_by,
                "operation": edit.operation,
                "params": edit.params(),
                "boxes_before": effect.boxes_before,
                "boxes_after": effect.boxes_after,
                "classes_before": effect.classes_before,
                "classes_after": effect.classes_after,
                "run_id": run_id,
            }
            for edit, effect in zip(edits, effects, strict=True)
        ],
    )


def version_content_hash(session: Session, version_id: int, class_names: Sequence[str]) -> str:
    """A hash of what the rest of the graph reads from a version (classes, original images, quarantine
    decisions, boxes): the `labels` data version, equal whenever two versions hold the same labels.

    Computed by PostgreSQL from the rows as stored, so every way of writing a version (parsed, copied from its
    parent, edited) hashes alike without its boxes travelling back; boxes count as a set.
    """
    digest = session.execute(
        sa.text(
            """
            SELECT md5(coalesce(string_agg(line, E'\n' ORDER BY relative_path), ''))
              FROM (
                SELECT i.relative_path,
                       concat_ws('|', i.relative_path, i.sha256, i.quarantined, i.label_state,
                                 coalesce(i.source_split, ''),
                                 coalesce(string_agg(concat_ws(',', l.class_index, l.x_min, l.y_min, l.x_max,
                                                               l.y_max, l.attributes::text),
                                                     ';' ORDER BY l.class_index, l.x_min, l.y_min, l.x_max,
                                                                  l.y_max, l.attributes::text), '')) AS line
                  FROM images AS i LEFT JOIN labels AS l ON l.image_id = i.id
                 WHERE i.version_id = :version AND i.augmentation_id IS NULL
                 GROUP BY i.id
              ) AS lines
            """
        ),
        {"version": version_id},
    ).scalar_one()
    return hashlib.sha256(json.dumps(list(class_names)).encode() + digest.encode()).hexdigest()[:32]


# --- pruning -----------------------------------------------------------------------------------------------


def prune_versions(session: Session, dataset: Dataset, keep: int) -> tuple[list[int], set[str], set[str]]:
    """Delete all but the newest `keep` versions of a dataset with everything computed from them.

    Returns the pruned version numbers, the storage paths (relative) no kept version refers to any more, and
    the sha256 of the pruned versions' files, for the caller to delete once this transaction has committed
    (a blob goes only when no folder links to it any more).
    """
    if keep < 1:
        raise ValueError("keep at least one version")
    versions = versions_of(session, dataset.id)
    pruned, kept = versions[:-keep], versions[-keep:]
    if not pruned:
        return [], set(), set()
    pruned_ids = [v.id for v in pruned]

    def paths(ids: Sequence[int]) -> set[str]:
        found = {p for v in versions if v.id in ids for p in (v.files_path, v.source_path)}
        found |= set(session.scalars(sa.select(Augmentation.folder).where(Augmentation.version_id.in_(ids))))
        found |= set(session.scalars(sa.select(Export.path).where(Export.version_id.in_(ids))))
        return found

    unreferenced = paths(pruned_ids) - paths([v.id for v in kept])
    shas = set(session.scalars(sa.select(VersionFile.sha256).where(VersionFile.version_id.in_(pruned_ids))))
    session.execute(sa.delete(DatasetVersion).where(DatasetVersion.id.in_(pruned_ids)))
    return [v.number for v in pruned], unreferenced, shas


def validations_of(session: Session, version_ids: Sequence[int]) -> dict[int, VersionValidation]:
    """The verdicts of several versions at once (versions not validated yet are absent)."""
    if not version_ids:
        return {}
    return {
        verdict.version_id: verdict
        for verdict in session.scalars(
            sa.select(VersionValidation).where(VersionValidation.version_id.in_(list(version_ids)))
        )
    }


def export_formats_by_version(session: Session, dataset_id: int) -> dict[int, list[str]]:
    """Version number -> the formats it has an export in, for versions that have any, oldest version first."""
    rows = session.execute(
        sa.select(DatasetVersion.number, Export.format)
        .join(Export, Export.version_id == DatasetVersion.id)
        .where(DatasetVersion.dataset_id == dataset_id)
        .distinct()
        .order_by(DatasetVersion.number, Export.format)
    )
    formats: dict[int, list[str]] = {}
    for number, fmt in rows:
        formats.setdefault(number, []).append(fmt)
    return formats
