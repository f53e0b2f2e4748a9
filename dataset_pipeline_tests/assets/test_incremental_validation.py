"""A re-upload that changes only some images' bytes is validated from its parent, and ends exactly where a full
validation of the same files ends: the same rows, findings, verdict and content hash."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from PIL import Image as PILImage

from dataset_pipeline.assets import ALL_ASSETS
from dataset_pipeline.bench.uploads import images_to_change, rewrite_upload
from dataset_pipeline.db import repository
from dataset_pipeline.db.models import DatasetValidation, Image, Label
from dataset_pipeline.domain.synthetic import generate_dataset
from dataset_pipeline.local_run import process_upload
from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import LocalDatasetStorage

UPLOAD_ASSETS = [
    asset for asset in ALL_ASSETS if asset.key.to_user_string() in ("raw_upload", "validated_dataset")
]
#: Every column the two ways of validating must agree on: all but ids, the file's time and augmentation's.
IMAGE_FIELDS = tuple(
    column
    for column in repository.IMAGE_COLUMNS
    if column
    not in (
        "dataset_id",
        "version_id",
        "mtime_ns",
        "is_augmented",
        "augmentation_id",
        "source_image_id",
        "recipe",
    )
)


@pytest.fixture
def resources(db, storage_root):
    return {"database": DatabaseResource(url=db.url), "storage": LocalDatasetStorage(root=str(storage_root))}


def validate(instance, resources, upload: Path, project: str, name: str = "cams") -> tuple[str, dict]:
    key, result = process_upload(
        instance, upload, user="ann", project=project, name=name, resources=resources, assets=UPLOAD_ASSETS
    )
    materialization = next(
        event.event_specific_data.materialization
        for event in result.get_asset_materialization_events()
        if event.asset_key.to_user_string() == "validated_dataset"
    )
    return key, {name: value.value for name, value in materialization.metadata.items()}


def everything_of(db, key: str) -> dict:
    """What the newest version holds, without ids, times or run ids: to compare two ways of getting there."""
    with db.session() as session:
        version = repository.version_of(session, repository.find_dataset(session, key))
        verdict = repository.validation_of(session, version.id)
        images = session.execute(
            sa.select(*(getattr(Image, f) for f in IMAGE_FIELDS)).where(Image.version_id == version.id)
        ).all()
        labels = session.execute(
            sa.select(
                Image.relative_path, Label.class_index, Label.x_min, Label.y_min, Label.x_max, Label.y_max
            )
            .join(Image, Image.id == Label.image_id)
            .where(Label.version_id == version.id)
        ).all()
        findings = session.execute(
            sa.select(
                DatasetValidation.severity,
                DatasetValidation.code,
                DatasetValidation.file,
                DatasetValidation.line,
                DatasetValidation.annotation_id,
                DatasetValidation.image_path,
                DatasetValidation.message,
            ).where(DatasetValidation.version_id == version.id)
        ).all()
        return {
            "images": sorted(map(tuple, images)),
            "labels": sorted(map(tuple, labels)),
            "findings": sorted(map(tuple, findings), key=repr),
            "verdict": (
                verdict.passed,
                verdict.reason,
                verdict.summary,
                verdict.class_names,
                verdict.content_hash,
            ),
        }


def test_a_reupload_with_new_bytes_for_some_images_is_carried_over_and_equals_a_full_validation(
    tmp_path, db, dagster_instance, resources
):
    first = generate_dataset(
        tmp_path / "gen", n_images=40, fmt="yolo", seed=3, image_size=(96, 64), zipped=True
    )
    v1 = rewrite_upload(first, tmp_path / "v1" / "cams.zip", salt="one")
    change = images_to_change(v1.archive, 0.05)
    v2 = rewrite_upload(first, tmp_path / "v2" / "cams.zip", salt="one", change=change)
    assert len(v2.changed) == 2

    key, first_metadata = validate(dagster_instance, resources, v1.archive, "cars")
    assert "carried_over_from" not in first_metadata and first_metadata["decoded"] == 40
    _, second_metadata = validate(dagster_instance, resources, v2.archive, "cars")
    assert second_metadata["version"] == 2 and second_metadata["carried_over_from"] == 1
    assert second_metadata["decoded"] == 2  # only the changed bytes were looked at

    full_key, full_metadata = validate(dagster_instance, resources, v2.archive, "elsewhere")
    assert "carried_over_from" not in full_metadata  # version 1 of another dataset: validated in full
    carried, full = everything_of(db, key), everything_of(db, full_key)
    assert carried == full
    changed_paths = {path for path in change}
    new_shas = {row[0]: row[1] for row in carried["images"] if row[0] in changed_paths}
    assert len(new_shas) == 2


def _with_entry(source: Path, target: Path, name: str, data: bytes) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for info in original.infolist():
            copy.writestr(info, data if info.filename == name else original.read(info))
    return target


def test_a_changed_label_file_or_a_resized_image_is_validated_in_full(
    tmp_path, db, dagster_instance, resources
):
    upload = generate_dataset(
        tmp_path / "gen", n_images=12, fmt="yolo", seed=5, image_size=(96, 64), zipped=True
    )
    key, _ = validate(dagster_instance, resources, upload, "full")
    with zipfile.ZipFile(upload) as bundle:
        names = bundle.namelist()
        label = next(n for n in names if n.startswith("labels/") and n.endswith(".txt"))
        picture = next(n for n in names if n.endswith(".jpg"))
        text = bundle.read(label)
    relabelled = _with_entry(upload, tmp_path / "b" / "data.zip", label, text + b"0 0.5 0.5 0.1 0.1\n")
    _, metadata = validate(dagster_instance, resources, relabelled, "full")
    assert metadata["version"] == 2 and "carried_over_from" not in metadata

    buffer = io.BytesIO()
    PILImage.new("RGB", (40, 30), (200, 10, 10)).save(buffer, "JPEG")
    resized = _with_entry(relabelled, tmp_path / "c" / "data.zip", picture, buffer.getvalue())
    _, metadata = validate(dagster_instance, resources, resized, "full")
    assert metadata["version"] == 3 and "carried_over_from" not in metadata
    with db.session() as session:  # its boxes were placed on the new size, as a full validation does
        version = repository.version_of(session, repository.find_dataset(session, key))
        stored = repository.stored_facts(session, version.id)
    assert (stored[picture].width, stored[picture].height) == (40, 30)
