"""Charts and sample grids where a user looks first, without PNGs in the event log.

Dagster 1.13 renders a markdown metadata value inline (asset Overview, Events, Partitions) only while it is
shorter than 1,000 characters; longer ones hide behind "[Show Markdown]". So a picture is stored as a file
under its version's folder (`v{N}/previews/{asset}/{run id}/{name}.png`) and the metadata holds a short
markdown image pointing at it through the preview server `dataset-pipeline dev` runs beside the UI
(DATASET_PIPELINE_PREVIEW_URL), plus the file's path. Without a preview server the path is all there is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg

from dataset_pipeline.resources.storage import PREVIEWS_FOLDER, LocalDatasetStorage

#: Markdown at or above this length is not shown inline by the Dagster UI.
INLINE_MARKDOWN_LIMIT = 1000
PREVIEW_URL_VARIABLE = "DATASET_PIPELINE_PREVIEW_URL"


def preview_url() -> str | None:
    """Where the preview server serves the storage's preview files, if one runs (set by `dataset-pipeline dev`)."""
    return os.environ.get(PREVIEW_URL_VARIABLE, "").strip().rstrip("/") or None


def picture_metadata(
    storage: LocalDatasetStorage, version_dir: Path, asset: str, run_id: str, pictures: dict[str, bytes]
) -> dict[str, Any]:
    """Store each PNG under the version's previews and describe it: `<name>` an inline image when a preview
    server runs, `<name>_png` the file."""
    folder = version_dir / PREVIEWS_FOLDER / asset / run_id
    base = preview_url()
    metadata: dict[str, Any] = {}
    for name, png in pictures.items():
        path = storage.write_bytes(folder / f"{name}.png", png)
        if base is not None:
            markdown = f"![{name}]({base}/{storage.relative(path)})"
            if len(markdown) < INLINE_MARKDOWN_LIMIT:
                metadata[name] = dg.MetadataValue.md(markdown)
        metadata[f"{name}_png"] = dg.MetadataValue.path(str(path))
    return metadata
