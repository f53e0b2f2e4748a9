"""Run the graph (or some of its assets) once for a partition and read back what each step took and produced.

Step windows come from Dagster's event log (STEP_START / STEP_SUCCESS), so they include what Dagster does
inside a step (event writes, metadata) but not what it does between steps, which is reported as overhead.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.orm import Session

from dataset_pipeline.assets.export import exported_names, split_to_export
from dataset_pipeline.bench.measure import Span, span
from dataset_pipeline.db import repository
from dataset_pipeline.db.database import Database
from dataset_pipeline.db.models import Label
from dataset_pipeline.domain.augmentation import DEFAULT_RECIPE
from dataset_pipeline.domain.model import LabelState
from dataset_pipeline.local_run import process_upload
from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import LocalDatasetStorage

#: Stage name in the report -> the asset (step) that does it.
STEP_OF_STAGE: dict[str, str] = {
    "ingest": "raw_upload",
    "validation": "validated_dataset",
    "class_distribution": "class_distribution",
    "augmentation": "augmented_dataset",
    "splits": "dataset_splits",
    "export": "dataset_export",
}


@dataclass(frozen=True, slots=True)
class CopyCall:
    """One `copy_rows` call made by the pipeline: which table, how many rows, when and how long."""

    table: str
    rows: int
    window: Span


@dataclass(frozen=True)
class PipelineRun:
    partition_key: str
    run_id: str
    call: Span  # the whole process_upload call: partition, run launch, steps, run end
    steps: dict[str, Span]
    resource_init_s: float
    events: int
    copies: list[CopyCall] = field(default_factory=list)
    #: Asset name -> the metadata of its materialisation in this run, as plain values.
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)


@contextlib.contextmanager
def recorded_copies() -> Iterator[list[CopyCall]]:
    """Time every `copy_rows` the repository makes while the block runs.

    The stages have no timing hook around their COPYs; swapping the module attribute for the duration of one
    in-process run is the least intrusive way to see how long the real writes take.
    """
    calls: list[CopyCall] = []
    original = repository.copy_rows

    def timed_copy(connection: sa.Connection, table: str, columns: Sequence[str], rows: Any) -> int:
        with span() as window:
            written = original(connection, table, columns, rows)
        calls.append(CopyCall(table, written, window))
        return written

    repository.copy_rows = timed_copy
    try:
        yield calls
    finally:
        repository.copy_rows = original


def run_pipeline(
    instance: dg.DagsterInstance,
    archive: Path,
    *,
    database_url: str,
    storage_root: Path,
    project: str,
    name: str,
    assets: Sequence[dg.AssetsDefinition] | None = None,
) -> PipelineRun:
    """Materialise the whole graph, or only `assets`, in this process for the upload; raises if a step fails.

    The partition is (user "bench", `project`, `name`): a new project gives a new dataset, the same project
    and name a new version of it. An upload whose bytes the project already has is skipped as a duplicate.
    """
    resources = {
        "database": DatabaseResource(url=database_url),
        "storage": LocalDatasetStorage(root=str(storage_root)),
    }
    with recorded_copies() as copies, span() as call:
        key, result = process_upload(
            instance,
            archive,
            user="bench",
            project=project,
            name=name,
            resources=resources,
            assets=list(assets) if assets is not None else None,
        )
    if not result.success:
        raise RuntimeError(f"the pipeline run {result.run_id} for {key} failed; see its event log")
    expected = (
        set(STEP_OF_STAGE.values()) if assets is None else {asset.key.to_user_string() for asset in assets}
    )
    steps, resource_init_s, events, metadata = _read_event_log(instance, result.run_id, expected)
    return PipelineRun(key, result.run_id, call, steps, resource_init_s, events, copies, metadata)


def _read_event_log(
    instance: dg.DagsterInstance, run_id: str, expected: set[str]
) -> tuple[dict[str, Span], float, int, dict[str, dict[str, Any]]]:
    """Step windows, resource start-up time, number of events and materialisation metadata of one run."""
    starts: dict[str, float] = {}
    steps: dict[str, Span] = {}
    metadata: dict[str, dict[str, Any]] = {}
    init_start = init_end = 0.0
    entries = instance.all_logs(run_id)
    for entry in entries:
        kind = entry.dagster_event_type
        if kind == dg.DagsterEventType.STEP_START and entry.step_key:
            starts[entry.step_key] = entry.timestamp
        elif kind == dg.DagsterEventType.STEP_SUCCESS and entry.step_key in starts:
            began = starts[entry.step_key]
            steps[entry.step_key] = Span(began, entry.timestamp - began)
        elif kind == dg.DagsterEventType.RESOURCE_INIT_STARTED:
            init_start = init_start or entry.timestamp
        elif kind == dg.DagsterEventType.RESOURCE_INIT_SUCCESS:
            init_end = entry.timestamp
        elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION and entry.asset_materialization:
            materialization = entry.asset_materialization
            metadata[materialization.asset_key.to_user_string()] = {
                name: getattr(value, "value", value) for name, value in materialization.metadata.items()
            }
    missing = sorted(expected - set(steps))
    if missing:
        raise RuntimeError(f"run {run_id}: no STEP_SUCCESS for {missing}; did the graph stop early?")
    return steps, max(init_end - init_start, 0.0), len(entries), metadata


def dagster_overhead(run: PipelineRun) -> dict[str, float]:
    """Wall time of the run that is not inside a step: launch, gaps between steps, finishing."""
    ordered = sorted(run.steps.values(), key=lambda window: window.start)
    launch = ordered[0].start - run.call.start
    gaps = sum(max(after.start - before.end, 0.0) for before, after in itertools.pairwise(ordered))
    finish = run.call.end - ordered[-1].end
    in_steps = sum(window.seconds for window in ordered)
    return {
        "run_wall_s": round(run.call.seconds, 4),
        "in_steps_s": round(in_steps, 4),
        "run_launch_s": round(launch, 4),
        "resource_init_s": round(run.resource_init_s, 4),
        "between_steps_s": round(gaps, 4),
        "run_finish_s": round(finish, 4),
        "overhead_s": round(launch + gaps + finish, 4),
        "overhead_share": round((launch + gaps + finish) / run.call.seconds, 4) if run.call.seconds else 0.0,
        "events_written": run.events,
    }


# --- what the run produced ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Produced:
    """Counts and files of the newest version after the run, read from the database the stages wrote."""

    dataset_id: int
    extracted_bytes: int
    originals: list[repository.StoredImage]
    original_bytes: int
    augmented_count: int
    augmented_bytes: int
    augmented_boxes: int
    exported: list[tuple[Path, str]]  # (file, name in the zip) of every image in a split
    exported_boxes: int
    export_bytes: int
    export_formats: int
    label_rows: list[tuple[Any, ...]]  # every box of the version, in `repository.LABEL_COLUMNS` order
    files_dir: Path

    @property
    def original_boxes(self) -> int:
        return sum(len(image.boxes) for image in self.originals)

    def augmentation_sources(self) -> list[repository.StoredImage]:
        """The originals the augmentation asset picked: labelled-or-background images of the recipe's splits."""
        return [
            image
            for image in self.originals
            if (image.source_split or "train") in DEFAULT_RECIPE.splits
            and image.label_state != LabelState.UNLABELLED.value
        ]


def read_produced(database_url: str, partition_key: str, storage_root: Path) -> Produced:
    """What the run wrote for the partition's newest version; `storage_root` turns its stored paths into files."""
    database = Database(database_url)
    try:
        with database.session() as session:
            return _produced(session, LocalDatasetStorage(root=str(storage_root)), partition_key)
    finally:
        database.dispose()


def _produced(session: Session, storage: LocalDatasetStorage, partition_key: str) -> Produced:
    dataset = repository.dataset_by_partition(session, partition_key)
    version = repository.version_of(session, dataset)
    augmentation = repository.latest_augmentation(session, version.id)
    stored = repository.load_images(
        session, version.id, augmentation_id=augmentation.id if augmentation else None
    )
    originals = [image for image in stored if not image.is_augmented]
    augmented = [image for image in stored if image.is_augmented]
    # The images the export stage zipped (the newest split's), by the files and names it used.
    _, items = split_to_export(session, storage, dataset, version)
    names = exported_names(items, {item.image.relative_path: item.path.suffix for item in items})
    exports = repository.exports_of(session, version.id)
    label_rows = session.execute(
        sa.select(*(getattr(Label, column) for column in repository.LABEL_COLUMNS))
        .where(Label.version_id == version.id)
        .order_by(Label.id)
    ).all()
    return Produced(
        dataset_id=dataset.id,
        extracted_bytes=version.total_bytes,
        originals=originals,
        original_bytes=sum(image.size_bytes for image in originals),
        augmented_count=len(augmented),
        augmented_bytes=sum(image.size_bytes for image in augmented),
        augmented_boxes=sum(len(image.boxes) for image in augmented),
        exported=[(item.path, names[item.image.relative_path]) for item in items],
        exported_boxes=sum(len(item.image.boxes) for item in items),
        export_bytes=sum(export.size_bytes for export in exports),
        export_formats=len(exports),
        label_rows=[tuple(row) for row in label_rows],
        files_dir=storage.resolve(version.files_path),
    )
