"""Independent readers of our exports: Datumaro (in its own venv) and pycocotools.

A test that reads an export back with our own parsers only proves that writer and parser agree; these read it
the way a user's tools would. Neither touches `dataset_pipeline.formats`. Both return the same shape, so a test
can compare them with what it exported, and with each other:
`{(split, image file name as exported): sorted [(class name, x_min, y_min, x_max, y_max)]}`, boxes in 0-based
pixel edges (`xyxy` as `dataset_pipeline` holds them).

Datumaro lives in `.venv-readers` (its pins are older than ours); `make test` builds it and sets
`DATUMARO_PYTHON`. Without that interpreter the Datumaro tests skip, unless
`DATASET_PIPELINE_REQUIRE_READERS=1` (as `make test` sets), when they fail.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

BoxXYXY = tuple[str, float, float, float, float]
ReadExport = dict[tuple[str, str], list[BoxXYXY]]

DATUMARO_PYTHON_ENV = "DATUMARO_PYTHON"
REQUIRE_READERS_ENV = "DATASET_PIPELINE_REQUIRE_READERS"
DATUMARO_SCRIPT = Path(__file__).with_name("datumaro_reader.py")
FORMATS = ("yolo", "coco", "voc")
#: How far a Datumaro coordinate may be from the one in the file: Datumaro keeps box corners as float32 rounded
#: to 2 decimals (`COORDINATE_ROUNDING_DIGITS`), so 39.999 reads as 40.0; 0.005 plus float32 error below 16k px.
DATUMARO_TOLERANCE_PX = 0.01
_TIMEOUT_S = 300


def datumaro_python() -> Path:
    """The readers venv's interpreter, from `DATUMARO_PYTHON`.

    Skips the calling test when it is missing, or fails it when `DATASET_PIPELINE_REQUIRE_READERS=1`, so that a
    `make test` run can never pass with the independent reader silently switched off.
    """
    value = os.environ.get(DATUMARO_PYTHON_ENV, "")
    if value and Path(value).is_file():
        return Path(value)
    why = (
        f"{DATUMARO_PYTHON_ENV} is not set" if not value else f"{DATUMARO_PYTHON_ENV}={value} does not exist"
    )
    if os.environ.get(REQUIRE_READERS_ENV) == "1":
        pytest.fail(
            f"the Datumaro reader is required ({REQUIRE_READERS_ENV}=1) but {why}. Run `make test`, which "
            f"builds .venv-readers and sets {DATUMARO_PYTHON_ENV}; or run `make readers` and set "
            f"{DATUMARO_PYTHON_ENV}=$PWD/.venv-readers/bin/python",
            pytrace=False,
        )
    pytest.skip(f"Datumaro reader not available: {why}; `make test` builds .venv-readers and sets it")


def read_with_datumaro(export: Path, fmt: str, *, voc_pixel_origin: int = 0) -> ReadExport:
    """Read a `yolo`, `coco` or `voc` export (a zip or a folder) with Datumaro 1.13.

    Coordinates are Datumaro's, so compare them within `DATUMARO_TOLERANCE_PX`. Datumaro takes VOC coordinates
    as written; `voc_pixel_origin=1` says the file is 1-based (VOC's own convention; the export manifest's
    `voc_pixel_origin` records which), so 1 is taken off x_min and y_min.
    Which images appear follows Datumaro: YOLO lists only images with a label file and COCO only those in
    `images[]`, so unlabelled images are absent there; VOC lists every stem in `ImageSets/Main/<split>.txt`.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {FORMATS}")
    if voc_pixel_origin not in (0, 1) or (voc_pixel_origin and fmt != "voc"):
        raise ValueError(f"voc_pixel_origin={voc_pixel_origin} is not valid for a {fmt} export")
    python = datumaro_python()
    with _dataset_dir(export) as root:
        # -I: neither this folder nor PYTHONPATH on sys.path, so dataset_pipeline cannot be imported by accident.
        done = subprocess.run(
            [str(python), "-I", str(DATUMARO_SCRIPT), str(root), fmt],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            check=False,
        )
    if done.returncode != 0:
        raise AssertionError(
            f"Datumaro could not read the {fmt} export {export} (exit {done.returncode}):\n{done.stderr[-4000:]}"
        )
    result: ReadExport = {}
    for item in json.loads(done.stdout)["items"]:
        key = (item["subset"], posixpath.basename(item["media"] or item["id"]))
        if key in result:
            raise AssertionError(f"Datumaro read {key} twice from {export}")
        boxes = []
        for ann in item["annotations"]:
            x_min, y_min, x_max, y_max = ann["xyxy"]
            boxes.append((ann["label"], x_min - voc_pixel_origin, y_min - voc_pixel_origin, x_max, y_max))
        result[key] = sorted(boxes)
    return result


def read_with_pycocotools(export: Path) -> ReadExport:
    """Read every `annotations/instances_<split>.json` of a COCO export (a zip or a folder) with pycocotools.

    Only images listed in `images[]` appear (an unlabelled image is not listed); listed images without
    annotations map to an empty list.
    """
    from pycocotools.coco import COCO

    result: ReadExport = {}
    with _dataset_dir(export) as root:
        documents = sorted((root / "annotations").glob("instances_*.json"))
        if not documents:
            raise AssertionError(f"{export} has no annotations/instances_<split>.json")
        for document in documents:
            split = document.stem.removeprefix("instances_")
            with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints its progress
                coco = COCO(str(document))
            names = {cat["id"]: cat["name"] for cat in coco.loadCats(coco.getCatIds())}
            for image_id, image in coco.imgs.items():
                key = (split, posixpath.basename(image["file_name"]))
                if key in result:
                    raise AssertionError(f"{document.name} lists {key[1]} twice")
                boxes = []
                for ann in coco.imgToAnns.get(image_id, []):
                    x, y, w, h = ann["bbox"]
                    boxes.append((names[ann["category_id"]], x, y, x + w, y + h))
                result[key] = sorted(boxes)
    return result


@contextlib.contextmanager
def _dataset_dir(export: Path) -> Iterator[Path]:
    """The folder to read: `export` itself, or a zip extracted to a temporary folder for the duration."""
    export = Path(export)
    if export.is_dir():
        yield export
        return
    if not zipfile.is_zipfile(export):
        raise ValueError(f"{export} is neither a folder nor a zip")
    with tempfile.TemporaryDirectory(prefix="export-reader-") as tmp, zipfile.ZipFile(export) as archive:
        archive.extractall(tmp)  # zipfile drops absolute and `..` parts, so it stays inside tmp
        yield Path(tmp)
