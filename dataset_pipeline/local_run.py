"""Run the whole graph for one upload in this process, on the PostgreSQL-backed instance: for `demo` and tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from dataset_pipeline.assets import ALL_ASSETS
from dataset_pipeline.domain.naming import dataset_name_from_drop, partition_key_for
from dataset_pipeline.partitions import dataset_partitions
from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import LocalDatasetStorage


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
    result = dg.materialize(
        assets or ALL_ASSETS,
        instance=instance,
        partition_key=key,
        resources=resources or {"database": DatabaseResource(), "storage": LocalDatasetStorage()},
        run_config={"ops": ops},
        raise_on_error=raise_on_error,
    )
    return key, result
