"""The benchmark end to end on a dozen images: every stage is reported with positive numbers.

No timing is asserted: speed depends on the machine; the shape of the report does not.
"""

from __future__ import annotations

import copy
import json

import pytest

from dataset_pipeline.bench.cli import write_json
from dataset_pipeline.bench.report import STAGE_ORDER, format_report
from dataset_pipeline.bench.runner import run_bench
from dataset_pipeline.bench.scale import format_scale, scale_summary

MEASURED = ("wall_s", "images", "boxes", "bytes", "images_per_s", "boxes_per_s", "mb_per_s", "peak_rss_mb")
BASELINE_STAGES = ("ingest", "validation", "database_writes", "augmentation", "export")


def _assert_positive(entry: dict, where: str) -> None:
    for field in MEASURED:
        assert entry[field] > 0, f"{where}: {field} = {entry[field]!r}"


def test_bench_reports_every_stage_beside_its_baselines(tmp_path, db, dagster_instance):
    produced = run_bench(
        12, "yolo", workdir=tmp_path / "work", instance=dagster_instance, database_url=db.url
    )
    report = json.loads(write_json(produced, tmp_path / "bench" / "results.json").read_text())
    _check_stages(report)
    _check_machine_targets_and_overhead(report)
    _check_scale_summary(report)


def _check_stages(report: dict) -> None:
    assert report["n_images"] == 12 and report["format"] == "yolo"
    assert set(report["stages"]) == set(STAGE_ORDER)
    for stage, entry in report["stages"].items():
        _assert_positive(entry, stage)
        for baseline in entry["baselines"]:
            _assert_positive(baseline, f"{stage} vs {baseline['name']}")
        if stage in BASELINE_STAGES:
            assert entry["baselines"] and entry["ratio"] > 0, stage
    assert len(report["stages"]["validation"]["baselines"]) == 2  # the reduced-decode pool and full decode
    assert len(report["stages"]["database_writes"]["baselines"]) == 3  # psycopg2, copy_rows, ORM


def _check_machine_targets_and_overhead(report: dict) -> None:
    assert {"cpu_count", "python", "platform"} <= set(report["machine"])
    assert report["targets"] and all(isinstance(target["passed"], bool) for target in report["targets"])
    overhead = report["dagster_overhead"]
    for field in ("python_start_s", "imports_s", "run_launch_s", "run_wall_s", "overhead_s"):
        assert overhead[field] > 0, field
    table = format_report(report)
    assert all(stage in table for stage in STAGE_ORDER)


def _check_scale_summary(report: dict) -> None:
    """Twice the images in twice the time is linear growth, and COCO size lies beyond both runs."""
    doubled = copy.deepcopy(report)
    doubled["n_images"] *= 2
    doubled["dataset"]["boxes"] *= 2
    doubled["dagster_overhead"]["run_wall_s"] *= 2
    for entry in doubled["stages"].values():
        entry["wall_s"] *= 2
    summary = scale_summary([doubled, report])
    assert summary["n_images"] == [12, 24]
    for stage in STAGE_ORDER:
        growth = summary["stages"][stage]
        assert growth["time_exponent"] == pytest.approx(1.0)
        assert growth["coco_wall_s"] > growth["wall_s"][-1]
    assert "whole run" in format_scale(summary)
