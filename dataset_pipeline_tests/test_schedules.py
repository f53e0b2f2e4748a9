"""The nightly re-validation: a run request per dataset, and what a re-validation finds on disk.

An unchanged version is observed and writes nothing; files missing or changed on disk make a new version that
records them, and the version that was validated stays exactly as it was.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from PIL import Image as PILImage

from dataset_pipeline.assets import ALL_ASSETS
from dataset_pipeline.assets.validation import QUARANTINE_CHECK, USABLE_CHECK
from dataset_pipeline.db import repository
from dataset_pipeline.db.models import Dataset
from dataset_pipeline.definitions import defs
from dataset_pipeline.domain.model import DatasetFormat
from dataset_pipeline.domain.revalidation import FILE_CHANGED, FILE_MISSING
from dataset_pipeline.domain.synthetic import generate_dataset
from dataset_pipeline.local_run import process_upload
from dataset_pipeline.partitions import dataset_partitions
from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import LocalDatasetStorage
from dataset_pipeline.schedules import nightly_revalidation
from dataset_pipeline_tests.conftest import APP_TABLES

TRIGGER_TAG = "dataset_pipeline/trigger"


def test_the_schedule_requests_one_revalidation_per_validated_dataset(dagster_instance):
    keys = [f"sched-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    never_validated = f"sched-{uuid.uuid4().hex[:8]}"  # e.g. a rejected duplicate drop: no version to check
    dagster_instance.add_dynamic_partitions(dataset_partitions.name, [*keys, never_validated])
    for key in keys:
        dagster_instance.report_runless_asset_event(
            dg.AssetMaterialization(dg.AssetKey("validated_dataset"), partition=key)
        )
    when = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
    context = dg.build_schedule_context(instance=dagster_instance, scheduled_execution_time=when)
    requests = nightly_revalidation(context)

    assert nightly_revalidation.job_name == "revalidate_dataset"
    by_key = {request.partition_key: request for request in requests}
    assert set(keys) <= set(by_key) and never_validated not in by_key
    assert len(requests) == len(by_key), "one request per dataset"
    for key in keys:
        assert by_key[key].run_config == {}  # validation itself tells a validated version from a new one
        assert by_key[key].tags == {TRIGGER_TAG: "nightly-revalidation"}
        assert by_key[key].run_key == f"revalidate:{key}:2026-11-25T02:00"


@pytest.fixture
def processed(tmp_path, db, dagster_instance, storage_root):
    resources = {
        "database": DatabaseResource(url=db.url),
        "storage": LocalDatasetStorage(root=str(storage_root)),
    }
    source = generate_dataset(tmp_path / "up", n_images=10, fmt=DatasetFormat.YOLO, seed=8, zipped=True)
    key, result = process_upload(
        dagster_instance,
        source,
        user=f"r{uuid.uuid4().hex[:6]}",
        project="p",
        name="nightly",
        resources=resources,
    )
    assert result.success
    return key, resources


def revalidate(instance, key, resources, raise_on_error=True) -> dg.ExecuteInProcessResult:
    """What the schedule's run does: the `revalidate_dataset` job with the request's (empty) config."""
    when = dt.datetime(2026, 11, 26, 2, 0, tzinfo=dt.UTC)
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
    [request] = [r for r in nightly_revalidation(context) if r.partition_key == key]
    return defs.resolve_job_def("revalidate_dataset").execute_in_process(
        run_config=request.run_config,
        instance=instance,
        partition_key=key,
        tags=request.tags,
        resources=resources,
        raise_on_error=raise_on_error,
    )


def dump_app_tables(db) -> dict[str, dict[tuple, dict[str, Any]]]:
    """Every row of every application table, by primary key: what a "nothing was written" claim is checked on."""
    with db.engine.connect() as conn:
        names = set(sa.inspect(conn).get_table_names()) - {"alembic_version"}
        assert names == set(APP_TABLES)  # a table added later cannot escape the comparison
        dump = {}
        for name in sorted(names):
            table = sa.Table(name, sa.MetaData(), autoload_with=conn)
            key = list(table.primary_key.columns)
            assert key, f"{name} has no primary key"
            dump[name] = {
                tuple(row[column.name] for column in key): dict(row)
                for row in conn.execute(sa.select(table)).mappings()
            }
    return dump


def version_files(db, storage_root: Path, key: str) -> tuple[int, Path]:
    with db.session() as session:
        dataset = repository.find_dataset(session, key)
        version = repository.version_of(session, dataset)
        assert version.number == 1
        return dataset.id, storage_root / version.files_path  # relative to the storage root


def test_an_unchanged_dataset_is_observed_and_writes_nothing_then_exports_again(
    processed, db, dagster_instance, storage_root
):
    key, resources = processed
    dataset_id, files = version_files(db, storage_root, key)
    assert files.is_dir()
    with db.session() as session:
        verdict = repository.validation_of(
            session, repository.version_of(session, session.get(Dataset, dataset_id)).id
        )
        content_hash, passed = verdict.content_hash, verdict.passed
    before = dump_app_tables(db)
    assert before["images"] and before["labels"] and before["exports"]  # there was something to change

    result = revalidate(dagster_instance, key, resources)
    assert result.success
    assert result.get_asset_materialization_events() == []  # nothing downstream turns stale
    [observation] = result.get_asset_observation_events()
    metadata = observation.asset_observation_data.asset_observation.metadata
    assert metadata["revalidated"].value == "unchanged"
    assert metadata["version"].value == 1
    assert metadata["data_version"].value == content_hash
    checks = {check.check_name: check for check in result.get_asset_check_evaluations()}
    assert checks.keys() == {USABLE_CHECK, QUARANTINE_CHECK}
    check = checks[USABLE_CHECK]
    assert check.passed == passed  # the stored verdict, not a new one
    assert check.metadata["version"].value == 1 and checks[QUARANTINE_CHECK].metadata["version"].value == 1
    assert dump_app_tables(db) == before  # not one row of any application table changed

    # Exporting again afterwards works on the same version and only adds its rows: nothing else moves.
    export = dg.materialize(
        ALL_ASSETS,
        selection=["dataset_export"],
        instance=dagster_instance,
        partition_key=key,
        resources=resources,
    )
    assert export.success
    [event] = export.get_asset_materialization_events()
    assert event.materialization.metadata["version"].value == 1
    after = dump_app_tables(db)
    assert {name: rows for name, rows in after.items() if name != "exports"} == {
        name: rows for name, rows in before.items() if name != "exports"
    }
    new_rows = {pk: row for pk, row in after["exports"].items() if pk not in before["exports"]}
    assert {pk: after["exports"][pk] for pk in before["exports"]} == before["exports"]  # old exports kept
    assert sorted(row["format"] for row in new_rows.values()) == ["coco", "voc", "yolo"]
    with db.session() as session:
        version = repository.version_of(session, session.get(Dataset, dataset_id))
        newest = repository.exports_of(session, version.id)
    assert {row.id for row in newest} == {row["id"] for row in new_rows.values()}
    for row in newest:
        assert row.run_id == export.run_id
        zip_file = storage_root / row.path
        assert not Path(row.path).is_absolute() and zip_file.is_file()
        assert hashlib.sha256(zip_file.read_bytes()).hexdigest() == row.sha256


def _resized(path: Path) -> bytes:
    """The same picture at half its size: what an overwritten image with other dimensions looks like."""
    with PILImage.open(path) as image:
        smaller = image.resize((image.width // 2, image.height // 2))
        buffer = io.BytesIO()
        smaller.save(buffer, format="JPEG")
    return buffer.getvalue()


def test_files_missing_or_changed_on_disk_make_a_new_version_that_turns_the_dataset_invalid(
    processed, db, dagster_instance, storage_root
):
    key, resources = processed
    dataset_id, files = version_files(db, storage_root, key)
    images = sorted(files.rglob("*.jpg"))
    assert len(images) == 10
    relative = {path: path.relative_to(files).as_posix() for path in images}
    same_size, resized, *missing = images[:7]
    same_size.write_bytes(images[8].read_bytes())  # other pixels under the same name, same dimensions
    resized.write_bytes(_resized(resized))  # boxes drawn on the old size no longer fit
    for path in missing:  # five of ten gone
        path.unlink()
    with db.session() as session:
        version_1 = repository.version_of(session, session.get(Dataset, dataset_id))
        quarantined_before = {
            image.relative_path
            for image in repository.load_images(session, version_1.id, usable_only=False)
            if image.quarantined
        }
    before = dump_app_tables(db)

    result = revalidate(dagster_instance, key, resources, raise_on_error=False)
    assert not result.success  # the blocking check fails the run: the nightly run shows red for this dataset
    [event] = result.get_asset_materialization_events()  # changed: a new version downstream sees
    assert event.materialization.metadata["version"].value == 2
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == USABLE_CHECK)
    assert not check.passed  # the blocking check stops everything downstream
    assert check.metadata["version"].value == 2

    # Version 1 and everything computed from it are untouched; only the dataset's status moved.
    after = dump_app_tables(db)
    for name, rows in before.items():
        kept = {pk: after[name].get(pk) for pk in rows}
        if name == "datasets":
            moved = {"status", "status_reason", "updated_at"}
            kept = {pk: {c: v for c, v in row.items() if c not in moved} for pk, row in kept.items()}
            rows = {pk: {c: v for c, v in row.items() if c not in moved} for pk, row in rows.items()}
        assert kept == rows, f"{name}: rows of version 1 changed"

    remaining = {relative[path] for path in images} - {relative[path] for path in missing}
    with db.session() as session:
        dataset = session.get(Dataset, dataset_id)
        versions = repository.versions_of(session, dataset_id)
        assert [(v.number, v.cause) for v in versions] == [(1, "upload"), (2, "revalidation")]
        version_2 = versions[1]
        assert version_2.parent_id == version_1.id and version_2.run_id == result.run_id
        assert (version_2.files_path, version_2.upload_sha256) == (
            version_1.files_path,
            version_1.upload_sha256,
        )
        stored = {
            image.relative_path: image
            for image in repository.load_images(session, version_2.id, usable_only=False)
        }
        verdict = repository.validation_of(session, version_2.id)
        findings = repository.findings_of(session, version_2.id)
        findings_1 = repository.findings_of(session, version_1.id)

        assert set(stored) == remaining  # the missing images are not in the new version
        assert stored[relative[same_size]].sha256 == hashlib.sha256(same_size.read_bytes()).hexdigest()
        assert not stored[relative[same_size]].quarantined or relative[same_size] in quarantined_before
        assert stored[relative[resized]].quarantined  # its size changed: its boxes cannot be trusted
        quarantined = sum(image.quarantined for image in stored.values())
        share = (quarantined + len(missing)) / (len(stored) + len(missing))
        assert share > 0.5
        assert verdict is not None and not verdict.passed
        assert verdict.summary["missing_since_last_validation"] == len(missing)
        assert verdict.summary["error_share"] == pytest.approx(share, abs=1e-4)
        assert f"{share:.0%} of the images are lost" in verdict.reason
        assert dataset.status == "invalid"
        assert dataset.status_reason == verdict.reason

    assert {(f.file, f.severity) for f in findings if f.code == FILE_MISSING} == {
        (relative[path], "error") for path in missing
    }
    assert sorted((f.file, f.severity) for f in findings if f.code == FILE_CHANGED) == sorted(
        [(relative[same_size], "warning"), (relative[resized], "warning")]
    )
    assert any(f.code == "image.size_changed" and f.file == relative[resized] for f in findings)
    assert not any(f.code in (FILE_MISSING, FILE_CHANGED) for f in findings_1)  # version 1's report as it was
