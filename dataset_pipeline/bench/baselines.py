"""Plain baselines: the least code that does a stage's core work on the same files, to measure ours against.

Each function does its work and returns what it moved; timing happens in the caller. The pool workers are
top-level and import heavy libraries lazily, so a spawned worker pays for what it uses, like ours do.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import multiprocessing
import random
import zipfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from PIL import Image
from sqlalchemy.orm import Session

from dataset_pipeline.bench.measure import Work
from dataset_pipeline.db.bulk import copy_rows
from dataset_pipeline.db.models import Label
from dataset_pipeline.db.repository import LABEL_COLUMNS

#: A label row as read back from `labels`, in LABEL_COLUMNS order.
LabelRow = tuple[Any, ...]


def _spawn_pool(workers: int, initializer: Any = None) -> ProcessPoolExecutor:
    """Spawn, as the pipeline's pools do: the parent has threads and connections a fork would copy."""
    return ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=initializer
    )


# --- ingest ------------------------------------------------------------------------------------------------


def zipfile_extract(archive: Path, destination: Path, *, boxes: int) -> Work:
    """`ZipFile.extractall`: no safety checks, no hashing, no database."""
    with zipfile.ZipFile(archive) as bundle:
        entries = [info for info in bundle.infolist() if not info.is_dir()]
        bundle.extractall(destination)
    images = sum(1 for info in entries if info.filename.lower().endswith((".jpg", ".jpeg", ".png")))
    return Work(images, boxes, sum(info.file_size for info in entries))


# --- validation --------------------------------------------------------------------------------------------


def reduced_decode(path: str) -> int:
    """sha256, DCT-scaled decode to the end and a 9x8 hash: the image work of `check_image`, nothing else."""
    data = Path(path).read_bytes()
    hashlib.sha256(data).digest()
    with Image.open(io.BytesIO(data)) as image:
        if image.format == "JPEG":
            image.draft("L", (max(9, image.width // 8), max(8, image.height // 8)))
        image.load()
        image.convert("L").resize((9, 8), Image.Resampling.BOX)
    return len(data)


def reduced_decode_pool(paths: Sequence[Path], workers: int, *, boxes: int, chunksize: int = 16) -> Work:
    with _spawn_pool(workers) as pool:
        size = sum(pool.map(reduced_decode, [str(path) for path in paths], chunksize=chunksize))
    return Work(len(paths), boxes, size)


def pillow_full_decode(paths: Sequence[Path], *, boxes: int) -> Work:
    """What a first script does: open every image and decode all of its pixels, one after another."""
    size = 0
    for path in paths:
        with Image.open(path) as image:
            image.load()
        size += path.stat().st_size
    return Work(len(paths), boxes, size)


# --- augmentation ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AugmentJob:
    source: str
    boxes_xyxy: tuple[tuple[float, float, float, float], ...]
    target: str
    seed: int


def _single_threaded_opencv() -> None:
    import cv2

    cv2.setNumThreads(1)  # as the pipeline's workers: processes, not threads, use the cores


@functools.cache
def _pipeline(width: int, height: int) -> Any:
    from dataset_pipeline.domain.augmentation import DEFAULT_RECIPE, build_pipeline

    return build_pipeline(DEFAULT_RECIPE, image_size=(width, height))


def albumentations_copy(job: AugmentJob) -> tuple[int, int]:
    """OpenCV decode, the default recipe as one reused Compose, OpenCV JPEG encode, write; (bytes, boxes)."""
    import cv2
    import numpy as np

    from dataset_pipeline.domain.augmentation import DEFAULT_RECIPE

    rgb = cv2.cvtColor(cv2.imread(job.source, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    height, width = rgb.shape[:2]
    pipeline = _pipeline(width, height)
    pipeline.set_random_state(np.random.default_rng(job.seed), random.Random(job.seed))
    boxes = np.asarray(job.boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    out = pipeline(image=rgb, bboxes=boxes, box_indices=np.arange(len(boxes)))
    ok, encoded = cv2.imencode(
        ".jpg",
        cv2.cvtColor(out["image"], cv2.COLOR_RGB2BGR),
        [cv2.IMWRITE_JPEG_QUALITY, DEFAULT_RECIPE.jpeg_quality],
    )
    if not ok:
        raise ValueError(f"OpenCV could not encode an augmented copy of {job.source}")
    Path(job.target).write_bytes(encoded.tobytes())
    return encoded.size, len(out["bboxes"])


def albumentations_pool(jobs: Sequence[AugmentJob], workers: int, *, chunksize: int = 8) -> Work:
    with _spawn_pool(workers, _single_threaded_opencv) as pool:
        done = list(pool.map(albumentations_copy, jobs, chunksize=chunksize))
    return Work(len(jobs), sum(boxes for _, boxes in done), sum(size for size, _ in done))


# --- export ------------------------------------------------------------------------------------------------


def zip_stored(files: Sequence[tuple[Path, str]], folder: Path, *, copies: int, boxes: int) -> Work:
    """`ZipFile.write` of the same images into `copies` ZIP_STORED archives (one per exported format)."""
    size = 0
    for copy in range(copies):
        target = folder / f"baseline-{copy}.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as bundle:
            for path, archive_path in files:
                bundle.write(path, archive_path)
        size += target.stat().st_size
    return Work(len(files), boxes, size)


# --- database writes ---------------------------------------------------------------------------------------

_COPY_LABELS = f"COPY labels ({', '.join(LABEL_COLUMNS)}) FROM STDIN WITH (FORMAT csv)"


def _distinct_images(rows: Sequence[LabelRow]) -> int:
    return len({row[LABEL_COLUMNS.index("image_id")] for row in rows})


def psycopg2_copy(engine: sa.Engine, rows: Sequence[LabelRow]) -> Work:
    """csv.writer into a buffer, one `copy_expert`; rolled back so the dataset is left as the pipeline wrote it."""
    raw = engine.raw_connection()
    try:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerows((*row[:-1], json.dumps(row[-1])) for row in rows)
        size = buffer.tell()
        buffer.seek(0)
        with raw.cursor() as cursor:
            cursor.copy_expert(_COPY_LABELS, buffer)
    finally:
        raw.rollback()
        raw.close()
    return Work(_distinct_images(rows), len(rows), size)


def bulk_copy_rows(engine: sa.Engine, rows: Sequence[LabelRow], *, size_bytes: int) -> Work:
    """Our `db.bulk.copy_rows` on its own, without the rest of the stage around it; rolled back."""
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            written = copy_rows(connection, "labels", LABEL_COLUMNS, rows)
        finally:
            transaction.rollback()
    return Work(_distinct_images(rows), written, size_bytes)


def orm_object_per_row(engine: sa.Engine, rows: Sequence[LabelRow], *, size_bytes: int) -> Work:
    """One `Label` object per row, one flush: what COPY replaced. Run on a sample; rolled back."""
    with Session(engine) as session:
        try:
            for row in rows:
                session.add(Label(**dict(zip(LABEL_COLUMNS, row, strict=True))))
            session.flush()
        finally:
            session.rollback()
    return Work(_distinct_images(rows), len(rows), size_bytes)
