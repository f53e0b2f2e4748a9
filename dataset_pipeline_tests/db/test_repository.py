"""Repository rules that decide what the pipeline does next, against the real database."""

from __future__ import annotations

import pytest

from dataset_pipeline.db import repository
from dataset_pipeline.db.models import Dataset, DatasetVersion

FIRST_UPLOAD = "ab" * 32
SECOND_UPLOAD = "cd" * 32


def _dataset(session, project_id: int, key: str, status: str) -> Dataset:
    dataset = Dataset(project_id=project_id, name=key, partition_key=key, status=status)
    session.add(dataset)
    session.flush()
    return dataset


def _version(session, dataset: Dataset, cause: str, upload_sha256: str | None = None) -> DatasetVersion:
    """The next version: an upload of `upload_sha256`, or one derived from the newest (same upload)."""
    parent = repository.latest_version(session, dataset.id)
    fields = {"cause": cause, "created_by": "ann"}
    if upload_sha256 is not None:
        number = parent.number + 1 if parent else 1
        fields |= {
            "upload_sha256": upload_sha256,
            "source_path": f"ann/cars/{dataset.name}/v{number}/source/{dataset.name}.zip",
            "source_kind": "zip",
            "files_path": f"ann/cars/{dataset.name}/v{number}/files",
        }
    return repository.add_version(session, dataset, parent, **fields)


@pytest.mark.parametrize(
    ("status", "ingest_finished"),
    [("ingested", True), ("exported", True), ("invalid", True), ("pending", False), ("failed", False)],
)
def test_only_an_upload_whose_ingest_finished_makes_the_same_bytes_a_duplicate(db, status, ingest_finished):
    """An upload that failed on a full disk (or was interrupted) made no version, so it must not block the same
    file dropped again; a finished ingest made one, whatever became of it later."""
    with db.session() as session:
        project = repository.get_or_create_project(session, "ann", "cars")
        dataset = _dataset(session, project.id, "first", status)
        version = _version(session, dataset, "upload", FIRST_UPLOAD) if ingest_finished else None
        found = repository.duplicate_of(session, project.id, FIRST_UPLOAD)
        if ingest_finished:
            assert found is not None
            assert (found[0].id, found[1].id) == (dataset.id, version.id)
        else:
            assert found is None
        assert repository.duplicate_of(session, project.id, SECOND_UPLOAD) is None  # other bytes
        other = repository.get_or_create_project(session, "ann", "boats")
        assert repository.duplicate_of(session, other.id, FIRST_UPLOAD) is None  # per project


def test_the_same_bytes_as_any_earlier_upload_version_are_a_duplicate_of_that_upload(db):
    """Versions 1 and 3 are uploads (3 is a re-drop of changed bytes under the same name), 2 a re-validation that
    keeps version 1's upload hash: either upload dropped again is a duplicate of the upload that brought it."""
    with db.session() as session:
        project = repository.get_or_create_project(session, "ann", "cars")
        dataset = _dataset(session, project.id, "fleet", "exported")
        first = _version(session, dataset, "upload", FIRST_UPLOAD)
        revalidated = _version(session, dataset, "revalidation")
        second = _version(session, dataset, "upload", SECOND_UPLOAD)
        assert [first.number, revalidated.number, second.number] == [1, 2, 3]
        assert revalidated.upload_sha256 == FIRST_UPLOAD and revalidated.parent_id == first.id

        for sha256, upload in ((FIRST_UPLOAD, first), (SECOND_UPLOAD, second)):
            found = repository.duplicate_of(session, project.id, sha256)
            assert found is not None
            assert (found[0].id, found[1].id, found[1].cause) == (dataset.id, upload.id, "upload")

        assert repository.version_of(session, dataset).id == second.id  # the newest
        assert repository.version_of(session, dataset, 1).id == first.id
        with pytest.raises(repository.VersionNotFound, match=r"no version 4 \(versions: 1, 2, 3\)"):
            repository.version_of(session, dataset, 4)
