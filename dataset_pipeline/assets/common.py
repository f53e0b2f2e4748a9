"""Small helpers every stage uses: finding the dataset and the version it works on, logging progress."""

import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from dataset_pipeline.db import repository
from dataset_pipeline.db.database import DatabaseConnectionLost
from dataset_pipeline.db.models import Dataset, DatasetVersion, VersionValidation
from dataset_pipeline.resources.storage import disk_full_message, sweep_interrupted_writes

#: Tag on every run the inbox sensor requests: which drop (path@size:mtime) it came from.
DROP_TAG = "dataset_pipeline/drop"
#: Every stage in one group, so the lineage page shows the whole chain left to right without expanding.
ASSET_GROUP = "dataset_pipeline"
#: The concurrency pool of the stages that fill every core with a process pool (validation, augmentation,
#: export): its limit (`concurrency: pools: default_limit` in dagster.yaml) is how many of them run at once
#: across all runs, so concurrent runs share the cores instead of each starting a worker per core.
CPU_POOL = "cpu_heavy"

#: A parent partition counts as updated only when neither the inbox sensor's whole-graph run (which builds
#: this stage too, checked per partition from the new materialisations) nor a run that had this stage in its
#: selection made the update; `will_be_requested` chains a re-run down the graph in one run.
ANY_DEPS_UPDATED_OUTSIDE_INBOX_RUNS = dg.AutomationCondition.any_deps_match(
    (
        dg.AutomationCondition.newly_updated()
        & ~dg.AutomationCondition.executed_with_root_target()
        & ~dg.AutomationCondition.all_new_updates_have_run_tags(tag_keys={DROP_TAG})
    ).with_label("newly_updated_outside_inbox_runs")
    | dg.AutomationCondition.will_be_requested()
).with_label("any_deps_updated_outside_inbox_runs")

#: Stages after validation re-run by themselves when what they read changed (a label edit, a re-validation
#: that made a new version), never for a dataset whose own blocking check failed (the checks are partitioned,
#: so they are stored and answered per dataset), and never for work the inbox run already did.
RERUN_WHEN_UPSTREAM_CHANGES = (
    ANY_DEPS_UPDATED_OUTSIDE_INBOX_RUNS.since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
    & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("rerun_when_upstream_changes")


#: Every stage retries transient errors (a lost database connection, a restart) twice, 5 s apart. Only those:
#: `retry_transient_errors_only` turns every other error into a failure that is not retried.
TRANSIENT_ERROR_RETRY = dg.RetryPolicy(max_retries=2, delay=5)


def is_transient(error: BaseException) -> bool:
    """A lost or refused connection to PostgreSQL: trying again later can succeed."""
    if isinstance(error, DatabaseConnectionLost):
        return True
    if isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, sa.exc.OperationalError)


def retry_transient_errors_only(compute: Callable[..., Any]) -> Callable[..., Any]:
    """Let transient errors reach the RetryPolicy; fail every other error once, with its message.

    A bug, bad data or a missing prerequisite gives the same result on every attempt, so retrying it only
    repeats the work (decoding a whole dataset three times) before the same error.
    """

    def as_final(error: Exception) -> Exception:
        if is_transient(error) or isinstance(error, dg.Failure):
            return error
        return dg.Failure(f"{type(error).__name__}: {error}", allow_retries=False)

    if inspect.isgeneratorfunction(compute):

        @functools.wraps(compute)
        def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from compute(*args, **kwargs)
            except Exception as error:
                final = as_final(error)
                if final is error:
                    raise
                raise final from error

        return generator

    @functools.wraps(compute)
    def function(*args: Any, **kwargs: Any) -> Any:
        try:
            return compute(*args, **kwargs)
        except Exception as error:
            final = as_final(error)
            if final is error:
                raise
            raise final from error

    return function


def dataset_row(session: Session, partition_key: str) -> Dataset:
    try:
        return repository.dataset_by_partition(session, partition_key)
    except repository.DatasetNotFound as error:
        raise dg.Failure(str(error), allow_retries=False) from error


def current_version(session: Session, partition_key: str) -> tuple[Dataset, DatasetVersion]:
    """The dataset of a partition and its newest version: what every stage after ingest works on."""
    dataset = dataset_row(session, partition_key)
    try:
        return dataset, repository.version_of(session, dataset)
    except repository.VersionNotFound as error:
        raise dg.Failure(f"{error}; materialise raw_upload first", allow_retries=False) from error


def validated_version(
    session: Session, partition_key: str
) -> tuple[Dataset, DatasetVersion, VersionValidation]:
    """The newest version with its verdict; a stage after validation refuses a version that did not pass."""
    dataset, version = current_version(session, partition_key)
    verdict = repository.validation_of(session, version.id)
    if verdict is None:
        raise dg.Failure(
            f"dataset {partition_key} version {version.number} is not validated yet; materialise "
            "validated_dataset first",
            allow_retries=False,
        )
    if not verdict.passed:
        raise dg.Failure(
            f"dataset {partition_key} version {version.number} did not pass validation: {verdict.reason}",
            allow_retries=False,
        )
    return dataset, version, verdict


def version_metadata(dataset: Dataset, version: DatasetVersion) -> dict[str, Any]:
    """What every materialisation says about the version it was computed from."""
    return {"dataset": dataset.partition_key, "version": version.number}


def clean_up_interrupted_writes(context: dg.AssetExecutionContext, folder: Path) -> None:
    """Before a step writes into a folder: drop the temporary files a killed run left there."""
    for action in sweep_interrupted_writes(folder):
        context.log.warning(f"{action} (left by an interrupted run)")


@contextmanager
def failing_clearly_when_disk_full(path: Path, what: str) -> Iterator[None]:
    """Turn "no space left on device" under `path` into a failure that names the disk and is not retried."""
    try:
        yield
    except Exception as error:  # the OSError may come wrapped (a note, a pool, zipfile)
        message = disk_full_message(error, path)
        if message is None:
            raise
        raise dg.Failure(f"{what}: {message}", allow_retries=False) from error


def progress_logger(context: dg.AssetExecutionContext, what: str) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        context.log.info(f"{what}: {done}/{total} ({done / max(total, 1):.0%})")

    return report


def rounded(value: float, digits: int = 3) -> float:
    """A float as metadata shows it: the UI prints every digit (4.166666666666667)."""
    return round(float(value), digits)


_CASTS: dict[str, Callable[[object], object]] = {
    "string": str,
    "int": int,
    "float": lambda value: round(float(value), 4),
}


def frame_table(frame: pd.DataFrame, columns: Mapping[str, tuple[str, str]]) -> dg.TableMetadataValue:
    """A pandas frame as a sortable UI table; `columns` maps table column -> (frame column, type)."""
    records = [
        dg.TableRecord({name: _CASTS[kind](row[source]) for name, (source, kind) in columns.items()})
        for row in frame.to_dict("records")
    ]
    schema = dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, (_, kind) in columns.items()])
    return dg.MetadataValue.table(records, schema)
