"""How time and peak memory grow with N, and a straight-line guess at COCO size from the runs made."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from dataset_pipeline.bench.report import STAGE_ORDER, grid, number

COCO_IMAGES = 118_287  # train2017
COCO_BOXES = 860_001


def _x(stage: str, report: dict[str, Any]) -> float:
    """What a stage's time is driven by: label rows for database writes (via source boxes), images otherwise."""
    return float(report["dataset"]["boxes"] if stage == "database_writes" else report["n_images"])


def _coco_x(stage: str) -> float:
    return float(COCO_BOXES if stage == "database_writes" else COCO_IMAGES)


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """(intercept, slope) by least squares; one point gives a line through the origin."""
    if len(set(xs)) < 2:
        return 0.0, (ys[0] / xs[0]) if xs and xs[0] else 0.0
    slope, intercept = np.polyfit(np.asarray(xs), np.asarray(ys), 1)
    return float(intercept), float(slope)


def growth_exponent(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """k in y ~ x^k from a log-log fit: 1 is linear, above 1 grows faster than the data."""
    if len(set(xs)) < 2 or min(ys, default=0) <= 0:
        return None
    slope, _ = np.polyfit(np.log(np.asarray(xs)), np.log(np.asarray(ys)), 1)
    return float(slope)


def _extrapolate(fit: tuple[float, float], x: float, measured: Sequence[float]) -> float:
    """The fitted line at `x`, floored at the largest measurement: more data never costs less than less data,
    though noise and one-off costs of the first run (lazy imports) can tilt a line fitted to few points."""
    intercept, slope = fit
    return max(intercept + slope * x, max(measured, default=0.0))


def _stage_growth(stage: str, reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    xs = [_x(stage, report) for report in reports]
    walls = [report["stages"][stage]["wall_s"] for report in reports]
    rss = [report["stages"][stage]["peak_rss_mb"] for report in reports]
    wall_fit, rss_fit = linear_fit(xs, walls), linear_fit(xs, rss)
    coco = _coco_x(stage)
    return {
        "driven_by": "source boxes" if stage == "database_writes" else "images",
        "x": xs,
        "wall_s": walls,
        "peak_rss_mb": rss,
        "ratio": [report["stages"][stage]["ratio"] for report in reports],
        "time_exponent": growth_exponent(xs, walls),
        "memory_exponent": growth_exponent(xs, rss),
        "wall_s_fit": {"intercept": wall_fit[0], "per_unit": wall_fit[1]},
        "peak_rss_mb_fit": {"intercept": rss_fit[0], "per_unit": rss_fit[1]},
        "coco_wall_s": round(_extrapolate(wall_fit, coco, walls), 1),
        "coco_peak_rss_mb": round(_extrapolate(rss_fit, coco, rss), 0),
    }


def scale_summary(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per stage: time and memory at each N, growth exponents, a linear fit and its value at COCO size."""
    ordered = sorted(reports, key=lambda report: report["n_images"])
    stages = {stage: _stage_growth(stage, ordered) for stage in STAGE_ORDER}
    ns = [float(report["n_images"]) for report in ordered]
    runs = [report["dagster_overhead"]["run_wall_s"] for report in ordered]
    intercept, slope = linear_fit(ns, runs)
    return {
        "format": ordered[0]["format"],
        "n_images": [report["n_images"] for report in ordered],
        "machine": ordered[0]["machine"],
        "coco": {"images": COCO_IMAGES, "boxes": COCO_BOXES},
        "stages": stages,
        "pipeline": {
            "run_wall_s": runs,
            "time_exponent": growth_exponent(ns, runs),
            "coco_run_wall_s": round(_extrapolate((intercept, slope), COCO_IMAGES, runs), 1),
        },
        "runs": list(ordered),
    }


def _exponent(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def format_scale(summary: dict[str, Any]) -> str:
    ns = summary["n_images"]
    header = [
        "stage",
        *[f"s @{n:,}" for n in ns],
        *[f"MB @{n:,}" for n in ns],
        "time ~N^k",
        "mem ~N^k",
        "COCO s",
        "COCO MB",
    ]
    rows = []
    for stage, growth in summary["stages"].items():
        rows.append(
            [
                stage,
                *[number(value, 2) for value in growth["wall_s"]],
                *[number(value) for value in growth["peak_rss_mb"]],
                _exponent(growth["time_exponent"]),
                _exponent(growth["memory_exponent"]),
                number(growth["coco_wall_s"], 0),
                number(growth["coco_peak_rss_mb"]),
            ]
        )
    pipeline = summary["pipeline"]
    rows.append(
        [
            "whole run",
            *[number(value, 2) for value in pipeline["run_wall_s"]],
            *["" for _ in ns],
            _exponent(pipeline["time_exponent"]),
            "",
            number(pipeline["coco_run_wall_s"], 0),
            "",
        ]
    )
    coco = summary["coco"]
    note = (
        f"COCO columns: straight-line fit extrapolated to {coco['images']:,} images "
        f"({coco['boxes']:,} boxes for database writes), never below the largest measurement; "
        "peak RSS in MB, summed over the process tree; the first N also pays one-off lazy imports."
    )
    return "\n".join([f"scaling, format {summary['format']}", "", grid(header, rows, left=1), "", note])
