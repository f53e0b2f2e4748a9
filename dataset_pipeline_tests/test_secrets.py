"""A password in DATABASE_URL never reaches logs, the event log, stored run config or compute logs.

The servers the tests use trust local connections, so any password is accepted: the secret travels the
whole real path (settings, resource, engine, errors) without the test needing a real account.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._serdes import serialize_value

from dataset_pipeline.domain.model import DatasetFormat
from dataset_pipeline.domain.synthetic import generate_dataset
from dataset_pipeline.local_run import process_upload
from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import LocalDatasetStorage

SECRET = f"pw-{uuid.uuid4().hex}"


def with_password(url: str, database: str | None = None) -> str:
    parsed = sa.engine.make_url(url).set(password=SECRET)
    if database:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def everything_recorded(instance: dg.DagsterInstance, run_ids: list[str], home: Path) -> str:
    """Event logs and stored runs (what the UI and GraphQL show), plus every file under DAGSTER_HOME."""
    parts = []
    for run_id in run_ids:
        parts.append(serialize_value(instance.get_run_by_id(run_id)))
        parts.extend(serialize_value(record) for record in instance.all_logs(run_id))
    for path in home.rglob("*"):
        if path.is_file() and "pgdata" not in path.parts:
            parts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(parts)


@pytest.mark.parametrize("case", ["success", "bad_database"])
def test_a_database_password_never_appears_in_logs(
    case, tmp_path, db, dagster_instance, dagster_home, storage_root, monkeypatch, caplog, capfd
):
    url = with_password(db.url) if case == "success" else with_password(db.url, database="dp_no_such_db")
    monkeypatch.setenv("DATABASE_URL", url)  # as in production: the resource reads it, config holds nothing
    caplog.set_level(logging.DEBUG)
    source = generate_dataset(tmp_path / "up", n_images=6, fmt=DatasetFormat.YOLO, seed=2, zipped=True)

    _, result = process_upload(
        dagster_instance,
        source,
        user=f"s{uuid.uuid4().hex[:6]}",
        project="p",
        name="secret",
        resources={"database": DatabaseResource(), "storage": LocalDatasetStorage(root=str(storage_root))},
        raise_on_error=False,
    )

    assert result.success is (case == "success")
    recorded = everything_recorded(dagster_instance, [result.run_id], dagster_home)
    assert result.run_id in recorded  # the search looked at the right things
    if case == "bad_database":  # the error is recorded, and useful, but without the password
        assert "dp_no_such_db" in recorded and "does not exist" in recorded
    captured = capfd.readouterr()
    for where, text in {
        "event log, run storage and DAGSTER_HOME": recorded,
        "python logging": caplog.text,
        "stdout": captured.out,
        "stderr": captured.err,
    }.items():
        assert SECRET not in text, f"the password leaked into {where}"
