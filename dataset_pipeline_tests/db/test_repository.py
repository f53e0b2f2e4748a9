"""Repository rules that decide what the pipeline does next, against the real database."""

from __future__ import annotations

import pytest

from dataset_pipeline.db import repository
from dataset_pipeline.db.models import Dataset


def _dataset(session, project_id: int, key: str, status: str) -> Dataset:
    dataset = Dataset(
        project_id=project_id,
        name=key,
        version=1,
        partition_key=key,
        source_path=f"/inbox/{key}.zip",
        source_kind="zip",
        content_sha256="ab" * 32,
        status=status,
    )
    session.add(dataset)
    session.flush()
    return dataset


@pytest.mark.parametrize(
    ("status", "is_duplicate"),
    [("ingested", True), ("exported", True), ("invalid", True), ("pending", False), ("failed", False)],
)
def test_only_a_dataset_whose_ingest_finished_makes_the_same_bytes_a_duplicate(db, status, is_duplicate):
    """An upload that failed on a full disk (or was interrupted) must not block the same file dropped again."""
    with db.session() as session:
        project = repository.get_or_create_project(session, "ann", "cars")
        _dataset(session, project.id, "first", status)
        found = repository.duplicate_of(session, project.id, "ab" * 32, "second")
    assert (found is not None) == is_duplicate
