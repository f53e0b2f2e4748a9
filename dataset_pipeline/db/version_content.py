"""Read one version back as `VersionContent`: images as rows, boxes as arrays, without a Python object per box.

Diffing two versions of 100k boxes must not build 200k `Box` objects, so label rows go from the query
straight into numpy arrays. Only original images count (augmented copies are derived from them),
quarantined ones included: quarantining an image is a change a reviewer wants to see.
"""

from __future__ import annotations

import itertools

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from dataset_pipeline.db import repository
from dataset_pipeline.db.models import DatasetVersion, Image, Label
from dataset_pipeline.domain.version_diff import VersionContent


def load_version_content(session: Session, version: DatasetVersion) -> VersionContent:
    """A version's original images by path, their boxes (xyxy, pixels), classes and newest split."""
    originals = (Image.version_id == version.id) & Image.augmentation_id.is_(None)
    image_rows = session.execute(
        sa.select(Image.id, Image.relative_path, Image.sha256).where(originals).order_by(Image.relative_path)
    ).all()
    ids = [row[0] for row in image_rows]
    image_ids = np.array(ids, dtype=np.int64)
    names = tuple(row[1] for row in image_rows)
    sha256 = tuple(row[2] for row in image_rows)

    # Labels are reached through their images only (no `labels.version_id` condition): right after a stage
    # COPYs a version in, the planner has no statistics yet and would AND the version index into every lookup,
    # a minute for 100k boxes instead of a fraction of a second.
    label_rows = session.execute(
        sa.select(Label.image_id, Label.class_index, Label.x_min, Label.y_min, Label.x_max, Label.y_max)
        .join(Image, Image.id == Label.image_id)
        .where(originals)
        .order_by(Label.id)
    ).all()
    # One flat pass over the values: `np.array(rows)` treats each SQLAlchemy Row as a generic sequence and is
    # some 50 times slower. float64 holds ids and class indexes exactly (< 2**53).
    labels = np.fromiter(
        itertools.chain.from_iterable(label_rows), dtype=np.float64, count=6 * len(label_rows)
    ).reshape(-1, 6)
    label_image_ids = labels[:, 0].astype(np.int64)
    # The join keeps only labels of these images, so every id is found.
    by_id = np.argsort(image_ids)
    box_image = by_id[np.searchsorted(image_ids[by_id], label_image_ids)]

    verdict = repository.validation_of(session, version.id)
    class_names = tuple(verdict.class_names) if verdict is not None else ()

    split = repository.latest_split(session, version.id)
    assignment = repository.assignments_of(session, split.id) if split is not None else {}
    splits = tuple(assignment.get(image_id) for image_id in ids)

    return VersionContent(
        number=version.number,
        class_names=class_names,
        image_names=names,
        image_sha256=sha256,
        image_splits=splits,
        box_image=box_image,
        box_class=labels[:, 1].astype(np.int64),
        box_xyxy=labels[:, 2:6],
    )
