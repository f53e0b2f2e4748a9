"""One benchmark at one N: generate a dataset, run the graph, run the baselines on the same files, report.

Each round also uploads the dataset again under the same name with 1% of its images changed and validates
that version 2, to compare a second validation with the first; at the end it measures the disk use of the
last round's dataset.

`run_bench` takes an instance and a database URL instead of starting its own, so the test suite can hand in
its PostgreSQL fixtures and the command line its temporary runtime.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from dataset_pipeline.assets import raw_upload, validated_dataset
from dataset_pipeline.bench import baselines, uploads
from dataset_pipeline.bench.disk import dataset_disk_use
from dataset_pipeline.bench.measure import (
    Measurement,
    TreeRssSampler,
    Work,
    machine_info,
    span,
    timed,
    usable_cpus,
)
from dataset_pipeline.bench.pipeline import (
    STEP_OF_STAGE,
    PipelineRun,
    Produced,
    dagster_overhead,
    read_produced,
    run_pipeline,
)
from dataset_pipeline.bench.report import (
    REVALIDATION_STAGE,
    STAGE_ORDER,
    StageResult,
    combine_rounds,
    evaluate_targets,
)
from dataset_pipeline.db.database import Database
from dataset_pipeline.db.repository import LABEL_COLUMNS
from dataset_pipeline.domain.augmentation import DEFAULT_RECIPE
from dataset_pipeline.domain.model import DatasetFormat
from dataset_pipeline.domain.synthetic import generate_dataset

log = logging.getLogger("dataset_pipeline.bench")

#: One object per row is ~100x slower than COPY; a sample is enough to show it.
ORM_SAMPLE_ROWS = 2_000
_CHECK_CHUNKSIZE = 16  # check_images' default
#: Share of the images the re-upload of the revalidation stage changes (at least one).
CHANGED_SHARE = 0.01


@dataclass(frozen=True)
class _Setup:
    """What every round shares: where to run, on what, and the memory sampler."""

    instance: dg.DagsterInstance
    database_url: str
    archive: Path
    workdir: Path
    storage_root: Path
    sampler: TreeRssSampler
    name_prefix: str
    changed: tuple[str, ...]  # archive entries the re-upload changes


@dataclass(frozen=True)
class _Round:
    """One pass: the graph on a fresh partition, then every baseline on the files it produced."""

    run: PipelineRun
    produced: Produced
    stages: list[StageResult]
    archive_bytes: int  # of this round's upload (the generated one, every JPEG commented)


def run_bench(
    n_images: int,
    fmt: str,
    *,
    workdir: Path,
    instance: dg.DagsterInstance,
    database_url: str,
    storage_root: Path | None = None,
    seed: int = 0,
    repeats: int = 1,
    probe_startup: bool = True,
) -> dict[str, Any]:
    """Measure every stage at `n_images` beside its baselines and return the report (see `results.json`).

    With `repeats` > 1 the graph and the baselines run that many times on the same pictures (each round under
    new bytes, see `uploads`) and every number is the median, which keeps a burst of someone else's CPU use
    from deciding a ratio.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    storage_root = storage_root or workdir / "storage"
    machine = machine_info()
    with TreeRssSampler() as sampler:
        archive, generate_s = _generate(workdir, n_images, DatasetFormat(fmt), seed)
        setup = _Setup(
            instance,
            database_url,
            archive,
            workdir,
            storage_root,
            sampler,
            f"bench-{fmt}-{n_images}",
            uploads.images_to_change(archive, CHANGED_SHARE),
        )
        rounds = [_round(setup, number, repeats) for number in range(1, repeats + 1)]
    disk = dataset_disk_use(database_url, storage_root, rounds[-1].run.partition_key)
    overheads = [dagster_overhead(one.run) for one in rounds]
    overhead = {key: statistics.median(each[key] for each in overheads) for key in overheads[0]}
    if probe_startup:
        overhead = {**_startup_costs(), **overhead}
    stages = {stage.stage: stage.to_dict() for stage in combine_rounds([one.stages for one in rounds])}
    last = rounds[-1]
    return {
        "n_images": n_images,
        "format": str(fmt),
        "seed": seed,
        "repeats": repeats,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "load_average_1m_at_end": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "dataset": {
            "partition_keys": [one.run.partition_key for one in rounds],
            "run_ids": [one.run.run_id for one in rounds],
            "images": len(last.produced.originals),
            "boxes": last.produced.original_boxes,
            "augmented_images": last.produced.augmented_count,
            "label_rows": len(last.produced.label_rows),
            "archive_bytes": last.archive_bytes,
            "extracted_bytes": last.produced.extracted_bytes,
            "changed_in_reupload": len(setup.changed),
            "generate_s": round(generate_s, 3),
        },
        "stages": stages,
        "disk_use": disk,
        "dagster_overhead": overhead,
        "targets": evaluate_targets(stages, usable_cpus()),
        "notes": {
            "mb": "MB = 10^6 bytes",
            "wall_s": "median of the repeats (all of them in wall_s_runs)",
            "peak_rss": "max of 20 Hz samples of RSS summed over this process and its descendants",
            "stage_time": "STEP_START to STEP_SUCCESS from Dagster's event log; includes event writes in the step",
            "rounds": "every round uploads the generated images with a JPEG comment naming the round, so its "
            "bytes are new to the check cache and the blob store and each round validates from scratch",
            "ratio": "ours over the first baseline: of the rate in ratio_basis (higher is better), or of the "
            "times when ratio_basis is wall_s (lower is better)",
            REVALIDATION_STAGE: "version 2: the same upload with 1% of the images re-encoded, raw_upload and "
            "validated_dataset only, timed against version 1's validation in the same round",
            "disk_use": "apparent bytes of the last round's dataset; each inode once",
        },
    }


def _round(setup: _Setup, number: int, repeats: int) -> _Round:
    project = f"bench-{uuid.uuid4().hex[:8]}"
    folder = setup.workdir / f"round-{number}"
    try:
        first = uploads.rewrite_upload(setup.archive, folder / "v1" / setup.archive.name, salt=project)
        second = uploads.rewrite_upload(
            setup.archive, folder / "v2" / setup.archive.name, salt=project, change=setup.changed
        )
        log.info(
            "round %d/%d: the seven assets on a fresh partition (Dagster's log follows)", number, repeats
        )
        run = _run(setup, first.archive, project)
        produced = read_produced(setup.database_url, run.partition_key, setup.storage_root)
        log.info(
            "round %d/%d: pipeline took %.1f s; now version 2 with %d images changed",
            number,
            repeats,
            run.call.seconds,
            len(second.changed),
        )
        again = _run(setup, second.archive, project, assets=[raw_upload, validated_dataset])
        log.info("round %d/%d: version 2 took %.1f s; now the baselines", number, repeats, again.call.seconds)
        scratch = setup.workdir / "baselines"
        stages = _measure_stages(run, produced, first.archive, scratch, setup.sampler, setup.database_url)
        stages.append(_revalidation(run, again, produced, second, setup.sampler))
        stages.sort(key=lambda stage: STAGE_ORDER.index(stage.stage))
        return _Round(run, produced, stages, first.archive.stat().st_size)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # storage keeps its own copies in each version's source/


def _run(
    setup: _Setup, archive: Path, project: str, assets: list[dg.AssetsDefinition] | None = None
) -> PipelineRun:
    return run_pipeline(
        setup.instance,
        archive,
        database_url=setup.database_url,
        storage_root=setup.storage_root,
        project=project,
        name=setup.name_prefix,
        assets=assets,
    )


def _generate(workdir: Path, n_images: int, fmt: DatasetFormat, seed: int) -> tuple[Path, float]:
    log.info("generating %s synthetic %s images (640x480 JPEG, zipped)", f"{n_images:,}", fmt)
    with span() as window:
        archive = generate_dataset(workdir / "upload", n_images=n_images, fmt=fmt, seed=seed, zipped=True)
    log.info("generated %.0f MB in %.1f s", archive.stat().st_size / 1e6, window.seconds)
    return archive, window.seconds


def _measure_stages(
    run: PipelineRun,
    produced: Produced,
    archive: Path,
    scratch: Path,
    sampler: TreeRssSampler,
    database_url: str,
) -> list[StageResult]:
    originals = Work(len(produced.originals), produced.original_boxes, produced.original_bytes)
    everything = Work(
        originals.images + produced.augmented_count,
        originals.boxes + produced.augmented_boxes,
        originals.size_bytes + produced.augmented_bytes,
    )
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        return [
            _ingest(run, produced, archive, scratch, sampler),
            _validation(run, produced, sampler),
            _database_writes(run, produced, sampler, database_url),
            StageResult(
                "class_distribution", _ours(run, "class_distribution", sampler, originals, "pandas, charts")
            ),
            _augmentation(run, produced, scratch, sampler),
            StageResult("splits", _ours(run, "splits", sampler, everything, "iterative stratification")),
            _export(run, produced, scratch, sampler),
        ]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _ours(run: PipelineRun, stage: str, sampler: TreeRssSampler, work: Work, note: str) -> Measurement:
    step = STEP_OF_STAGE[stage]
    window = run.steps[step]
    return Measurement(f"{step} (ours)", window.seconds, work, sampler.peak(window.start, window.end), note)


def _ingest(
    run: PipelineRun, produced: Produced, archive: Path, scratch: Path, sampler: TreeRssSampler
) -> StageResult:
    log.info("baseline for ingest: zipfile extractall")
    work = Work(len(produced.originals), produced.original_boxes, produced.extracted_bytes)
    ours = _ours(run, "ingest", sampler, work, "sha256, copy, checked extraction, format detection")
    target = scratch / "extract"
    baseline = timed(
        "zipfile.extractall",
        sampler,
        lambda: baselines.zipfile_extract(archive, target, boxes=produced.original_boxes),
    )
    shutil.rmtree(target, ignore_errors=True)
    return StageResult("ingest", ours, [baseline])


def _validation(run: PipelineRun, produced: Produced, sampler: TreeRssSampler) -> StageResult:
    paths = [produced.files_dir / image.relative_path for image in produced.originals]
    workers = max(1, min(os.cpu_count() or 1, math.ceil(len(paths) / _CHECK_CHUNKSIZE)))  # check_images' rule
    boxes = produced.original_boxes
    work = Work(len(paths), boxes, produced.original_bytes)
    ours = _ours(run, "validation", sampler, work, "labels parsed, images decoded, rules, COPY")
    log.info("baselines for validation: reduced decode in %d processes, then full decode in 1", workers)
    pool = timed(
        f"reduced decode, {workers} processes",
        sampler,
        lambda: baselines.reduced_decode_pool(paths, workers, boxes=boxes),
        "sha256 + draft decode + 9x8 hash",
    )
    full = timed(
        "Pillow full decode, 1 process", sampler, lambda: baselines.pillow_full_decode(paths, boxes=boxes)
    )
    return StageResult("validation", ours, [pool, full])


def _revalidation(
    first: PipelineRun,
    second: PipelineRun,
    produced: Produced,
    upload: uploads.Upload,
    sampler: TreeRssSampler,
) -> StageResult:
    """Version 2's validation (1% of the images new) against version 1's, with what each decoded."""
    step = STEP_OF_STAGE["validation"]
    before, after = first.metadata.get(step, {}), second.metadata.get(step, {})
    if before.get("version") != 1 or after.get("version") != 2:
        raise RuntimeError(
            f"{second.partition_key}: expected validated_dataset to materialise versions 1 and 2, got "
            f"{before.get('version')} and {after.get('version')}; see runs {first.run_id} and {second.run_id}"
        )
    images, boxes = len(produced.originals), produced.original_boxes
    v1_window, v2_window = first.steps[step], second.steps[step]
    v2_bytes = produced.original_bytes - upload.changed_bytes_before + upload.changed_bytes_after
    ours = Measurement(
        f"{step} v2, {len(upload.changed):,} changed (ours)",
        v2_window.seconds,
        Work(images, boxes, v2_bytes),
        sampler.peak(v2_window.start, v2_window.end),
        f"{after.get('decoded')} decoded, {after.get('checked_before')} from the check cache",
    )
    baseline = Measurement(
        f"{step} v1, first validation",
        v1_window.seconds,
        Work(images, boxes, produced.original_bytes),
        sampler.peak(v1_window.start, v1_window.end),
        f"{before.get('decoded')} decoded, {before.get('checked_before')} from the check cache",
    )
    ingest = second.metadata.get(STEP_OF_STAGE["ingest"], {})
    details = {
        "changed_images": len(upload.changed),
        "changed_bytes_before": upload.changed_bytes_before,
        "changed_bytes_after": upload.changed_bytes_after,
        "v1_decoded": before.get("decoded"),
        "v1_checked_before": before.get("checked_before"),
        "v2_decoded": after.get("decoded"),
        "v2_checked_before": after.get("checked_before"),
        "v2_images": after.get("images"),
        "v2_passed": after.get("passed"),
        "v2_new_contents": ingest.get("new_contents"),
        "v2_contents_already_stored": ingest.get("contents_already_stored"),
        "v2_raw_upload_s": round(second.steps[STEP_OF_STAGE["ingest"]].seconds, 4),
        "v2_run_wall_s": round(second.call.seconds, 4),
    }
    return StageResult(REVALIDATION_STAGE, ours, [baseline], details)


def _database_writes(
    run: PipelineRun, produced: Produced, sampler: TreeRssSampler, database_url: str
) -> StageResult:
    rows = produced.label_rows
    log.info(
        "baselines for database writes: %s label rows by psycopg2 COPY, copy_rows, ORM sample",
        f"{len(rows):,}",
    )
    database = Database(database_url)
    try:
        copy = timed(
            "psycopg2 COPY (csv.writer)", sampler, lambda: baselines.psycopg2_copy(database.engine, rows)
        )
        size = copy.work.size_bytes
        bulk = timed(
            "db.bulk.copy_rows alone",
            sampler,
            lambda: baselines.bulk_copy_rows(database.engine, rows, size_bytes=size),
        )
        sample = rows[:ORM_SAMPLE_ROWS]
        orm = timed(
            f"ORM object per row ({len(sample):,} rows)",
            sampler,
            lambda: baselines.orm_object_per_row(
                database.engine, sample, size_bytes=size * len(sample) // max(len(rows), 1)
            ),
        )
    finally:
        database.dispose()
    return StageResult("database_writes", _pipeline_label_copies(run, rows, size, sampler), [copy, bulk, orm])


def _pipeline_label_copies(
    run: PipelineRun, rows: list[tuple[Any, ...]], size_bytes: int, sampler: TreeRssSampler
) -> Measurement:
    """The label COPYs the pipeline made (validation and augmentation), timed where they ran."""
    calls = [call for call in run.copies if call.table == "labels"]
    seconds = sum(call.window.seconds for call in calls)
    peak = max((sampler.peak(call.window.start, call.window.end) for call in calls), default=0)
    images = len({row[LABEL_COLUMNS.index("image_id")] for row in rows})
    work = Work(images, sum(call.rows for call in calls), size_bytes)
    return Measurement(
        "labels COPY in the pipeline (ours)", seconds, work, peak, f"{len(calls)} copy_rows calls"
    )


def _augmentation(
    run: PipelineRun, produced: Produced, scratch: Path, sampler: TreeRssSampler
) -> StageResult:
    work = Work(produced.augmented_count, produced.augmented_boxes, produced.augmented_bytes)
    ours = _ours(run, "augmentation", sampler, work, "default recipe, JPEG files, COPY")
    target = scratch / "augmented"
    target.mkdir()
    jobs = [
        baselines.AugmentJob(
            source=str(produced.files_dir / image.relative_path),
            boxes_xyxy=tuple((box.x_min, box.y_min, box.x_max, box.y_max) for box in image.boxes),
            target=str(target / f"{index:07d}-{copy}.jpg"),
            seed=index * 1_000 + copy,
        )
        for index, image in enumerate(produced.augmentation_sources())
        for copy in range(DEFAULT_RECIPE.copies_per_image)
    ]
    workers = usable_cpus()
    log.info(
        "baseline for augmentation: albumentations loop over %s copies in %d processes",
        f"{len(jobs):,}",
        workers,
    )
    baseline = timed(
        f"albumentations + cv2, {workers} processes",
        sampler,
        lambda: baselines.albumentations_pool(jobs, workers),
        "same recipe, Compose reused",
    )
    shutil.rmtree(target, ignore_errors=True)
    return StageResult("augmentation", ours, [baseline])


def _export(run: PipelineRun, produced: Produced, scratch: Path, sampler: TreeRssSampler) -> StageResult:
    formats = produced.export_formats
    work = Work(len(produced.exported), produced.exported_boxes, produced.export_bytes)
    ours = _ours(run, "export", sampler, work, f"{formats} zips: labels, sha256 per entry, manifest, fsync")
    log.info("baseline for export: the same images into %d ZIP_STORED archives", formats)
    baseline = timed(
        f"ZIP_STORED x {formats}",
        sampler,
        lambda: baselines.zip_stored(
            produced.exported, scratch, copies=formats, boxes=produced.exported_boxes
        ),
        "images only",
    )
    return StageResult("export", ours, [baseline])


# --- process start-up ------------------------------------------------------------------------------------


def _startup_costs(repeats: int = 2) -> dict[str, float]:
    """Interpreter start and the import of the code location, each in a fresh process, best of `repeats`."""
    log.info("measuring process start and imports in fresh interpreters")
    python_start = min(_wall([sys.executable, "-c", "pass"]) for _ in range(repeats))
    probe = "import time; t = time.perf_counter(); import dataset_pipeline.definitions; print(time.perf_counter() - t)"
    imports = min(float(_output([sys.executable, "-c", probe])) for _ in range(repeats))
    return {"python_start_s": round(python_start, 4), "imports_s": round(imports, 4)}


def _wall(command: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - began


def _output(command: list[str]) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()
