"""Charts and sample grids where a user looks first, without PNGs in the event log.

Dagster 1.13 renders a markdown metadata value inline (asset Overview, Events, Partitions) only while it is
shorter than 1,000 characters; longer ones hide behind "[Show Markdown]". So a picture is stored as a file
under its version's folder (`v{N}/previews/{asset}/{run id}/{name}.png`) and the metadata holds a short
markdown image pointing at it through the preview server `dataset-pipeline dev` runs beside the UI
(DATASET_PIPELINE_PREVIEW_URL), plus the file's path. Without a preview server the path is all there is.
"""

from __future__ import annotations

import io
import os
import urllib.parse
from pathlib import Path
from typing import Any

import dagster as dg
from PIL import Image

from dataset_pipeline.domain.statistics import CHART_PREVIEW_WIDTH_PX
from dataset_pipeline.resources.storage import PREVIEWS_FOLDER, LocalDatasetStorage

#: Markdown at or above this length is not shown inline by the Dagster UI.
INLINE_MARKDOWN_LIMIT = 1000
PREVIEW_URL_VARIABLE = "DATASET_PIPELINE_PREVIEW_URL"
#: Width of the pictures shown inline: they fit the metadata table's value column in a 1400 px wide window.
PREVIEW_WIDTH_PX = CHART_PREVIEW_WIDTH_PX


def preview_url() -> str | None:
    """Where the preview server serves the storage's preview files, if one runs (set by `dataset-pipeline dev`)."""
    return os.environ.get(PREVIEW_URL_VARIABLE, "").strip().rstrip("/") or None


def picture_metadata(
    storage: LocalDatasetStorage,
    version_dir: Path,
    asset: str,
    run_id: str,
    pictures: dict[str, bytes],
    previews: dict[str, bytes] | None = None,
) -> dict[str, Any]:
    """Store each PNG under the version's previews and describe it: `<name>` an inline image when a preview
    server runs, `<name>_png` the full-size file.

    The UI shows a markdown image at its own size in a column about 400 px wide, so the inline one is
    `previews[name]` (drawn for that width) or else the picture scaled down to PREVIEW_WIDTH_PX.
    """
    folder = version_dir / PREVIEWS_FOLDER / asset / run_id
    base = preview_url()
    metadata: dict[str, Any] = {}
    for name, png in pictures.items():
        path = storage.write_bytes(folder / f"{name}.png", png)
        if base is not None:
            small = (previews or {}).get(name) or scaled_to_width(png, PREVIEW_WIDTH_PX)
            shown = storage.write_bytes(folder / f"{name}.preview.png", small)
            markdown = f"![{name}]({base}/{urllib.parse.quote(storage.relative(shown))})"
            if len(markdown) < INLINE_MARKDOWN_LIMIT:
                metadata[name] = dg.MetadataValue.md(markdown)
        metadata[f"{name}_png"] = dg.MetadataValue.path(str(path))
    return metadata


def scaled_to_width(png: bytes, width: int) -> bytes:
    """The PNG scaled down to `width` pixels (kept as it is when not wider)."""
    with Image.open(io.BytesIO(png)) as image:
        if image.width <= width:
            return png
        height = max(1, round(image.height * width / image.width))
        buffer = io.BytesIO()
        image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS).save(buffer, format="PNG")
        return buffer.getvalue()
