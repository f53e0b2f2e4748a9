"""A PNG of source images beside their augmented copies, boxes drawn, for the asset's metadata in the UI.

A reviewer sees at a glance whether a recipe still keeps boxes on their objects; a table of counts cannot say
that. Same inputs give the same PNG bytes. No Dagster.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dataset_pipeline.domain.model import Box

#: Width of one cell (one image); a row is source | augmented, so the grid is about 1000 px wide.
CELL_WIDTH = 500
MAX_CELL_HEIGHT = 500
_GAP = 8
_BACKGROUND = (32, 32, 32)
# Tableau 10: distinct on photos and for the common forms of colour blindness.
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)

Pair = tuple[np.ndarray, Sequence[Box], np.ndarray, Sequence[Box]]


def _fit(rgb: np.ndarray) -> tuple[Image.Image, float]:
    """The image scaled into a cell, and the factor to scale its boxes by."""
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).convert("RGB")
    scale = min(CELL_WIDTH / image.width, MAX_CELL_HEIGHT / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR), scale


def _draw_boxes(
    draw: ImageDraw.ImageDraw,
    origin: tuple[int, int],
    scale: float,
    boxes: Sequence[Box],
    class_names: Sequence[str],
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
) -> None:
    left, top = origin
    for box in boxes:
        colour = _PALETTE[box.class_index % len(_PALETTE)]
        x0, y0 = left + box.x_min * scale, top + box.y_min * scale
        x1, y1 = left + box.x_max * scale, top + box.y_max * scale
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=2)
        known = 0 <= box.class_index < len(class_names)
        name = class_names[box.class_index] if known else str(box.class_index)
        # The label sits above the box, or inside it when the box touches the top of the image.
        anchor = "lb" if draw.textbbox((x0, y0), name, font=font, anchor="lb")[1] >= top else "lt"
        draw.rectangle(draw.textbbox((x0, y0), name, font=font, anchor=anchor), fill=colour)
        draw.text((x0, y0), name, fill=(255, 255, 255), font=font, anchor=anchor)


def sample_grid_png(pairs: Sequence[Pair], class_names: Sequence[str], max_pairs: int = 4) -> bytes:
    """Rows of (source, augmented) images with boxes and class names, for the first `max_pairs` pairs."""
    font = ImageFont.load_default(size=14)
    rows = []
    for source, source_boxes, augmented, augmented_boxes in pairs[:max_pairs]:
        left, left_scale = _fit(source)
        right, right_scale = _fit(augmented)
        rows.append(((left, left_scale, source_boxes), (right, right_scale, augmented_boxes)))

    width = 2 * CELL_WIDTH + 3 * _GAP
    height = _GAP + sum(max(left[0].height, right[0].height) + _GAP for left, right in rows)
    canvas = Image.new("RGB", (width, max(height, 40)), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if not rows:
        draw.text((_GAP, _GAP), "no augmented samples", fill=(255, 255, 255), font=font)
    top = _GAP
    for cells in rows:
        for column, (image, scale, boxes) in enumerate(cells):
            origin = (_GAP + column * (CELL_WIDTH + _GAP), top)
            canvas.paste(image, origin)
            _draw_boxes(draw, origin, scale, boxes, class_names, font)
        top += max(cells[0][0].height, cells[1][0].height) + _GAP

    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
