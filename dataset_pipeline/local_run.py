"""Run the whole graph for one upload in this process, on the PostgreSQL-backed instance: for `demo` and tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from dataset_pipeline.assets import ALL_ASSETS
from dataset_pipeline.domain.naming import dataset_name_from_drop, partition_key_for
from dataset_pipeline.jobs import process_dataset_job
from dataset_pipeline.partitions import dataset_partitions
from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import LocalDatasetStorage

#: Which command ran a run in this process (`demo`, tests): a tag on the run, shown in the UI's Runs.
LAUNCHED_BY_TAG = "dataset_pipeline/launched_by"


def process_upload(
    instance: dg.DagsterInstance,
    source: Path,
    *,
    user: str,
    project: str,
    name: str | None = None,
    resources: dict[str, Any] | None = None,
    run_config: dict[str, Any] | None = None,
    assets: list[Any] | None = None,
    raise_on_error: bool = True,
    launched_by: str = "local_run",
) -> tuple[str, dg.ExecuteInProcessResult]:
    """Add the dataset's partition and materialise the graph for it; returns (partition key, result)."""
    name = name or dataset_name_from_drop(source.name)
    key = partition_key_for(user, project, name)
    instance.add_dynamic_partitions(dataset_partitions.name, [key])
    ops: dict[str, Any] = {
        "raw_upload": {"config": {"source_path": str(source), "user": user, "project": project, "name": name}}
    }
    for op, config in (run_config or {}).items():
        ops.setdefault(op, {}).setdefault("config", {}).update(config)
    # Run as the named job the inbox sensor runs, so the run reads as `process_dataset` in the UI's Runs
    # (dg.materialize would call it __ephemeral_asset_job__); tagged with where it came from.
    selected = assets or ALL_ASSETS
    job = dg.define_asset_job(process_dataset_job.name, selection=dg.AssetSelection.assets(*selected))
    definitions = dg.Definitions(
        assets=selected,
        jobs=[job],
        resources=resources or {"database": DatabaseResource(), "storage": LocalDatasetStorage()},
    )
    result = definitions.resolve_job_def(job.name).execute_in_process(
        instance=instance,
        partition_key=key,
        run_config={"ops": ops},
        raise_on_error=raise_on_error,
        tags={LAUNCHED_BY_TAG: launched_by},
    )
    return key, result
