"""Small helpers every stage uses: finding the dataset row and its files, logging progress."""

import base64
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pandas as pd
from sqlalchemy.orm import Session

from dataset_pipeline.db import repository
from dataset_pipeline.db.models import Dataset
from dataset_pipeline.resources.storage import disk_full_message, sweep_interrupted_writes

#: Downstream stages re-run by themselves when what they read changed (a label edit, a re-validation that
#: found something): `eager` without its "newly missing" half, since the inbox sensor's run already builds
#: every stage of a new dataset, and never past a failed blocking check of a parent.
RERUN_WHEN_UPSTREAM_CHANGES = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
    & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("rerun_when_upstream_changes")


#: Every stage retries transient errors (a lost database connection, a restart) twice, 5 s apart; bad data and
#: full disks raise `dg.Failure(allow_retries=False)` instead.
TRANSIENT_ERROR_RETRY = dg.RetryPolicy(max_retries=2, delay=5)


def dataset_row(session: Session, partition_key: str) -> Dataset:
    try:
        return repository.dataset_by_partition(session, partition_key)
    except repository.DatasetNotFound as error:
        raise dg.Failure(str(error), allow_retries=False) from error


def source_root(dataset: Dataset) -> Path:
    """The unpacked upload (`files/`) of an ingested dataset."""
    if not dataset.storage_path:
        raise dg.Failure(f"dataset {dataset.partition_key} was never ingested; materialise raw_upload first")
    return Path(dataset.storage_path) / "files"


def clean_up_interrupted_writes(context: dg.AssetExecutionContext, dataset_dir: Path) -> None:
    """Before a step writes into a dataset folder: drop the temporary files a killed run left there."""
    for action in sweep_interrupted_writes(dataset_dir):
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


def png_markdown(png: bytes, alt: str) -> str:
    """Embed a PNG in markdown metadata so the UI shows the picture inline."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


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
