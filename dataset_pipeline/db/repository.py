"""The queries the stages make, in one place: assets and the CLI call these instead of writing SQL inline.

Writes of many rows go through `bulk.copy_rows`; every function takes the caller's session so a stage's
changes commit or roll back together.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session

from dataset_pipeline.db.bulk import copy_rows
from dataset_pipeline.db.models import (
    ClassDistribution,
    Dataset,
    DatasetValidation,
    Export,
    Image,
    Label,
    LabelEditRecord,
    Project,
    SplitReport,
    User,
)
from dataset_pipeline.domain.label_edits import EditEffect, ImageLabels, LabelEdit, LabelSet
from dataset_pipeline.domain.model import Box, Issue, LabelState

IMAGE_COLUMNS = (
    "dataset_id",
    "relative_path",
    "sha256",
    "size_bytes",
    "format",
    "mode",
    "width",
    "height",
    "exif_orientation",
    "dhash",
    "label_state",
    "source_split",
    "split",
    "quarantined",
    "is_augmented",
    "source_image_id",
    "recipe",
)
LABEL_COLUMNS = ("dataset_id", "image_id", "class_index", "x_min", "y_min", "x_max", "y_max", "attributes")
VALIDATION_COLUMNS = (
    "dataset_id",
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


def lock_content(session: Session, project_id: int, content_sha256: str) -> None:
    """Serialise uploads of the same bytes into one project until this transaction ends, so two runs started
    at once cannot both miss each other in `duplicate_of`."""
    session.execute(
        sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"dataset-content:{project_id}:{content_sha256}"},
    )


def duplicate_of(
    session: Session, project_id: int, content_sha256: str, partition_key: str
) -> Dataset | None:
    """Another dataset of the project holding these bytes. One whose ingest never finished (pending, or failed
    on a full disk or bad data) does not count: the same upload dropped again is then simply tried again."""
    return session.scalar(
        sa.select(Dataset)
        .where(
            Dataset.project_id == project_id,
            Dataset.content_sha256 == content_sha256,
            Dataset.partition_key != partition_key,
            Dataset.status.not_in(("pending", "failed")),
        )
        .limit(1)
    )


def next_version(session: Session, project_id: int, name: str) -> int:
    current = session.scalar(
        sa.select(sa.func.max(Dataset.version)).where(Dataset.project_id == project_id, Dataset.name == name)
    )
    return (current or 0) + 1


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
    is_augmented: bool = False
    source_image_id: int | None = None
    recipe: dict[str, Any] | None = None


def insert_images_with_labels(
    session: Session, dataset_id: int, images: Sequence[ImageRow]
) -> dict[str, int]:
    """COPY images, read their ids back, COPY their labels; returns relative_path -> image id."""
    connection = session.connection()
    copy_rows(
        connection,
        "images",
        IMAGE_COLUMNS,
        (
            (
                dataset_id,
                image.relative_path,
                image.sha256,
                image.size_bytes,
                image.format,
                image.mode,
                image.width,
                image.height,
                image.exif_orientation,
                image.dhash,
                image.label_state,
                image.source_split,
                None,
                image.quarantined,
                image.is_augmented,
                image.source_image_id,
                image.recipe,
            )
            for image in images
        ),
    )
    ids = dict(
        connection.execute(
            sa.select(Image.relative_path, Image.id).where(Image.dataset_id == dataset_id)
        ).all()
    )
    copy_labels(session, dataset_id, ((ids[image.relative_path], image.boxes) for image in images))
    return ids


def copy_labels(
    session: Session, dataset_id: int, boxes_by_image: Iterable[tuple[int, Sequence[Box]]]
) -> int:
    """COPY the boxes of each (image id, boxes) pair into `labels`; returns how many were written."""
    return copy_rows(
        session.connection(),
        "labels",
        LABEL_COLUMNS,
        (
            (
                dataset_id,
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


def replace_validation(
    session: Session, dataset_id: int, images: Sequence[ImageRow], issues: Iterable[Issue], run_id: str | None
) -> dict[str, int]:
    """Swap the previous validation of a dataset for this one in the caller's transaction."""
    session.execute(sa.delete(Image).where(Image.dataset_id == dataset_id))  # labels and copies cascade
    session.execute(sa.delete(DatasetValidation).where(DatasetValidation.dataset_id == dataset_id))
    ids = insert_images_with_labels(session, dataset_id, images)
    copy_rows(
        session.connection(),
        "dataset_validations",
        VALIDATION_COLUMNS,
        (
            (dataset_id, run_id, str(i.severity), i.code, i.file, i.line, i.annotation_id, i.image, i.message)
            for i in issues
        ),
    )
    return ids


@dataclass(slots=True)
class StoredImage:
    id: int
    relative_path: str
    width: int
    height: int
    sha256: str
    dhash: int | None
    label_state: str
    source_split: str | None
    split: str | None
    is_augmented: bool
    source_image_id: int | None
    boxes: list[Box]


def load_usable_images(
    session: Session, dataset_id: int, *, include_augmented: bool = True
) -> list[StoredImage]:
    """Images that passed validation (not quarantined), with their boxes, ordered by path."""
    query = sa.select(
        Image.id,
        Image.relative_path,
        Image.width,
        Image.height,
        Image.sha256,
        Image.dhash,
        Image.label_state,
        Image.source_split,
        Image.split,
        Image.is_augmented,
        Image.source_image_id,
    ).where(Image.dataset_id == dataset_id, Image.quarantined.is_(False))
    query = query.where(Image.label_state != LabelState.UNLABELLED.value)
    if not include_augmented:
        query = query.where(Image.is_augmented.is_(False))
    images = {
        row.id: StoredImage(*row, boxes=[]) for row in session.execute(query.order_by(Image.relative_path))
    }
    for image_id, box in _boxes_of(session, dataset_id):
        image = images.get(image_id)
        if image is not None:
            image.boxes.append(box)
    return list(images.values())


def _boxes_of(session: Session, dataset_id: int) -> Iterator[tuple[int, Box]]:
    """(image id, box) for every label of a dataset, in image order and then insertion order."""
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
        .where(Label.dataset_id == dataset_id)
        .order_by(Label.image_id, Label.id)
    )
    for image_id, class_index, x_min, y_min, x_max, y_max, attributes in labels:
        yield image_id, Box(class_index, x_min, y_min, x_max, y_max, attributes or {})


def replace_augmented(session: Session, dataset_id: int, images: Sequence[ImageRow]) -> dict[str, int]:
    session.execute(sa.delete(Image).where(Image.dataset_id == dataset_id, Image.is_augmented.is_(True)))
    return insert_images_with_labels(session, dataset_id, images)


def replace_distribution(session: Session, dataset_id: int, rows: Iterable[dict[str, Any]]) -> None:
    session.execute(sa.delete(ClassDistribution).where(ClassDistribution.dataset_id == dataset_id))
    rows = list(rows)
    if rows:
        session.execute(sa.insert(ClassDistribution), [{"dataset_id": dataset_id, **row} for row in rows])


def store_splits(
    session: Session,
    dataset_id: int,
    assignment: dict[int, str | None],
    report: dict[str, Any],
) -> None:
    """Write each image's split (None = left out) with one UPDATE ... FROM (VALUES ...) and the report row."""
    session.execute(sa.update(Image).where(Image.dataset_id == dataset_id).values(split=None))
    pairs = [(image_id, split) for image_id, split in assignment.items() if split is not None]
    if pairs:
        values = sa.values(sa.column("id", sa.BigInteger), sa.column("split", sa.String), name="v").data(
            pairs
        )
        session.execute(
            sa.update(Image).where(Image.id == values.c.id).values(split=values.c.split),
            execution_options={"synchronize_session": False},
        )
    session.execute(sa.delete(SplitReport).where(SplitReport.dataset_id == dataset_id))
    session.add(SplitReport(dataset_id=dataset_id, **report))


def upsert_export(
    session: Session, dataset_id: int, fmt: str, path: Path, size: int, sha256: str, run_id: str
) -> None:
    statement = sa.dialects.postgresql.insert(Export).values(
        dataset_id=dataset_id, format=fmt, path=str(path), size_bytes=size, sha256=sha256, run_id=run_id
    )
    session.execute(
        statement.on_conflict_do_update(
            constraint="uq_exports_dataset_format",
            set_={
                "path": statement.excluded.path,
                "size_bytes": statement.excluded.size_bytes,
                "sha256": statement.excluded.sha256,
                "run_id": statement.excluded.run_id,
                "created_at": sa.func.now(),
            },
        )
    )


def exports_of(session: Session, dataset_id: int) -> list[Export]:
    return list(
        session.scalars(sa.select(Export).where(Export.dataset_id == dataset_id).order_by(Export.format))
    )


def set_status(session: Session, dataset: Dataset, status: str, reason: str | None = None) -> None:
    dataset.status = status
    dataset.status_reason = reason


def list_datasets(session: Session) -> list[Dataset]:
    return list(session.scalars(sa.select(Dataset).order_by(Dataset.id)))


# --- label edits -----------------------------------------------------------------------------------------


def load_label_set(session: Session, dataset_id: int) -> tuple[LabelSet, dict[str, int]]:
    """Classes and boxes of the dataset's original images (augmented copies are derived, not edited)."""
    dataset = session.get(Dataset, dataset_id)
    assert dataset is not None
    rows = session.execute(
        sa.select(Image.id, Image.relative_path, Image.width, Image.height, Image.label_state)
        .where(Image.dataset_id == dataset_id, Image.is_augmented.is_(False))
        .order_by(Image.relative_path)
    ).all()
    images = {
        row.relative_path: ImageLabels(row.width, row.height, [], LabelState(row.label_state)) for row in rows
    }
    path_of = {row.id: row.relative_path for row in rows}
    for image_id, box in _boxes_of(session, dataset_id):
        path = path_of.get(image_id)
        if path is not None:
            images[path].boxes.append(box)
    ids = {path: image_id for image_id, path in path_of.items()}
    return LabelSet(list(dataset.class_names), images), ids


def store_label_set(session: Session, dataset_id: int, labels: LabelSet, ids: dict[str, int]) -> None:
    """Swap the original images' labels for `labels` in bulk; augmented copies, now stale, are removed."""
    session.execute(sa.delete(Image).where(Image.dataset_id == dataset_id, Image.is_augmented.is_(True)))
    session.execute(sa.delete(Label).where(Label.dataset_id == dataset_id))
    states = sa.values(sa.column("id", sa.BigInteger), sa.column("state", sa.String), name="s").data(
        [(ids[path], str(image.label_state)) for path, image in labels.images.items()]
    )
    if labels.images:
        session.execute(
            sa.update(Image).where(Image.id == states.c.id).values(label_state=states.c.state),
            execution_options={"synchronize_session": False},
        )
    copy_labels(session, dataset_id, ((ids[path], image.boxes) for path, image in labels.images.items()))
    dataset = session.get(Dataset, dataset_id)
    assert dataset is not None
    dataset.class_names = list(labels.class_names)


def record_label_edits(
    session: Session,
    dataset_id: int,
    edited_by: str,
    edits: Sequence[LabelEdit],
    effects: Sequence[EditEffect],
    run_id: str | None,
) -> None:
    session.execute(
        sa.insert(LabelEditRecord),
        [
            {
                "dataset_id": dataset_id,
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


def recorded_label_edits(session: Session, dataset_id: int) -> list[LabelEdit]:
    """Every edit made to a dataset, oldest first: validation replays them after re-reading the files."""
    params = session.scalars(
        sa.select(LabelEditRecord.params)
        .where(LabelEditRecord.dataset_id == dataset_id)
        .order_by(LabelEditRecord.id)
    )
    return [LabelEdit.from_params(p) for p in params]


def image_hashes(session: Session, dataset_id: int) -> dict[str, str]:
    """relative path -> sha256 of the original images at the last validation (what re-validation compares)."""
    return dict(
        session.execute(
            sa.select(Image.relative_path, Image.sha256).where(
                Image.dataset_id == dataset_id, Image.is_augmented.is_(False)
            )
        ).all()
    )


def content_version(session: Session, dataset_id: int) -> str:
    """A hash of what the rest of the graph reads from validation (classes, original images, their boxes):
    the validated_dataset data version, equal whenever re-validating or editing changed nothing."""

    def md5_of_rows(columns: Sequence[Any], order_by: Sequence[Any]) -> Any:
        row = sa.func.concat_ws("|", *columns)
        return sa.func.coalesce(
            sa.func.md5(sa.func.string_agg(row, aggregate_order_by(sa.literal("\n"), *order_by))), ""
        )

    originals = (Image.dataset_id == dataset_id, Image.is_augmented.is_(False))
    image_fields = (
        Image.relative_path,
        Image.sha256,
        Image.quarantined,
        Image.label_state,
        Image.source_split,
    )
    images = sa.select(md5_of_rows(image_fields, [Image.relative_path])).where(*originals)
    box_fields = (Label.class_index, Label.x_min, Label.y_min, Label.x_max, Label.y_max)
    labels = (
        sa.select(
            md5_of_rows(
                (Image.relative_path, *box_fields, sa.cast(Label.attributes, sa.Text)),
                [Image.relative_path, *box_fields, Label.id],
            )
        )
        .select_from(Label)
        .join(Image, Image.id == Label.image_id)
        .where(*originals)
    )
    dataset = session.get(Dataset, dataset_id)
    assert dataset is not None
    parts = (json.dumps(dataset.class_names), session.scalar(images), session.scalar(labels))
    return hashlib.sha256("\0".join(part or "" for part in parts).encode()).hexdigest()[:32]
