"""The benchmark end to end on a dozen images: every stage is reported with positive numbers, the counts
behind them are the dataset's, the re-upload decodes only its changed image and the disk use adds up.

No timing is asserted: speed depends on the machine; the shape of the report and the counts do not.
"""

from __future__ import annotations

import copy
import json

import pytest
import sqlalchemy as sa

from dataset_pipeline.bench.cli import write_json
from dataset_pipeline.bench.report import REVALIDATION_STAGE, STAGE_ORDER, format_report
from dataset_pipeline.bench.runner import run_bench
from dataset_pipeline.bench.scale import format_scale, scale_summary
from dataset_pipeline.db import repository
from dataset_pipeline.db.database import Database
from dataset_pipeline.db.models import Label

N_IMAGES = 12
MEASURED = ("wall_s", "images", "boxes", "bytes", "images_per_s", "boxes_per_s", "mb_per_s", "peak_rss_mb")
BASELINE_STAGES = ("ingest", "validation", REVALIDATION_STAGE, "database_writes", "augmentation", "export")


def _assert_positive(entry: dict, where: str) -> None:
    for field in MEASURED:
        assert entry[field] > 0, f"{where}: {field} = {entry[field]!r}"


def test_bench_reports_every_stage_beside_its_baselines(tmp_path, db, dagster_instance):
    produced = run_bench(
        N_IMAGES, "yolo", workdir=tmp_path / "work", instance=dagster_instance, database_url=db.url
    )
    report = json.loads(write_json(produced, tmp_path / "bench" / "results.json").read_text())
    _check_stages(report)
    _check_database_writes(report, db)
    _check_revalidation(report)
    _check_disk_use(report)
    _check_machine_targets_and_overhead(report)
    _check_scale_summary(report)


def _check_stages(report: dict) -> None:
    assert report["n_images"] == N_IMAGES and report["format"] == "yolo"
    assert set(report["stages"]) == set(STAGE_ORDER)
    for stage, entry in report["stages"].items():
        _assert_positive(entry, stage)
        for baseline in entry["baselines"]:
            _assert_positive(baseline, f"{stage} vs {baseline['name']}")
        if stage in BASELINE_STAGES:
            assert entry["baselines"] and entry["ratio"] > 0, stage
    assert len(report["stages"]["validation"]["baselines"]) == 2  # the reduced-decode pool and full decode
    assert len(report["stages"]["database_writes"]["baselines"]) == 3  # psycopg2, copy_rows, ORM


def _labelled_images(database: Database, partition_key: str, number: int) -> int:
    with database.session() as session:
        version = repository.version_of(
            session, repository.dataset_by_partition(session, partition_key), number
        )
        return session.scalar(
            sa.select(sa.func.count(sa.distinct(Label.image_id))).where(Label.version_id == version.id)
        )


def _check_database_writes(report: dict, database: Database) -> None:
    """Images are counted by image id (not by another column of the label rows), over version 1's labels."""
    writes, dataset = report["stages"]["database_writes"], report["dataset"]
    expected = _labelled_images(database, dataset["partition_keys"][-1], 1)
    assert writes["images"] == expected
    # every generated image has 1-10 boxes; augmented copies may lose theirs to a crop
    assert N_IMAGES <= expected <= N_IMAGES + dataset["augmented_images"]
    assert writes["boxes"] == dataset["label_rows"]  # what the pipeline COPYed is what version 1 holds


def _check_revalidation(report: dict) -> None:
    """Version 2 changes one image of twelve: it alone is decoded, the rest come from the check cache."""
    entry = report["stages"][REVALIDATION_STAGE]
    details = entry["details"]
    assert details["changed_images"] == report["dataset"]["changed_in_reupload"] == 1  # 1% of 12, at least 1
    assert (details["v1_decoded"], details["v1_checked_before"]) == (N_IMAGES, 0)  # the round's bytes are new
    assert (details["v2_decoded"], details["v2_checked_before"]) == (1, N_IMAGES - 1)
    assert details["v2_images"] == N_IMAGES and details["v2_passed"] is True
    assert details["v2_new_contents"] == 1  # only the changed image's bytes were stored again
    assert entry["images"] == entry["baselines"][0]["images"] == N_IMAGES
    assert entry["ratio_basis"] == "wall_s"
    assert entry["ratio"] == pytest.approx(entry["wall_s"] / entry["baselines"][0]["wall_s"], abs=2e-3)
    # the first validation in this stage is the validation stage's own measurement
    assert entry["baselines"][0]["wall_s"] == report["stages"]["validation"]["wall_s"]
    (target,) = [t for t in report["targets"] if t["target"].startswith(REVALIDATION_STAGE)]
    assert target["direction"] == "at most" and target["goal"] == 0.1
    assert target["passed"] == (entry["ratio"] <= 0.1)


def _check_disk_use(report: dict) -> None:
    """Both versions' files/ are hard links to blobs; version 2 adds its upload and one blob; it all adds up."""
    disk, dataset = report["disk_use"], report["dataset"]
    details = report["stages"][REVALIDATION_STAGE]["details"]
    v1, v2 = disk["versions"]
    assert (v1["version"], v1["cause"], v2["version"], v2["cause"]) == (1, "upload", 2, "upload")
    for version in (v1, v2):
        assert version["files"] > N_IMAGES  # images, their label files and data.yaml
        assert version["files_link_only"] == version["files"] and version["files_extra_bytes"] == 0
    assert v1["source_bytes"] == dataset["archive_bytes"]
    # the zip stores JPEGs uncompressed: the kept uploads differ by exactly the changed image's bytes
    assert (
        v2["source_bytes"] - v1["source_bytes"]
        == details["changed_bytes_after"] - details["changed_bytes_before"]
    )
    assert report["stages"]["validation"]["bytes"] <= v1["new_blob_bytes"] <= dataset["extracted_bytes"]
    assert (v2["new_blobs"], v2["new_blob_bytes"]) == (1, details["changed_bytes_after"])
    blobs = disk["blobs"]
    assert blobs == {
        "count": v1["new_blobs"] + 1,
        "bytes": v1["new_blob_bytes"] + v2["new_blob_bytes"],
        "missing": 0,
    }
    assert blobs["bytes"] <= dataset["extracted_bytes"] + details["changed_bytes_after"]
    assert v1["augmented_bytes"] > 0 and v1["exports_bytes"] > 0  # the whole graph ran for version 1
    assert v2["augmented_bytes"] == v2["exports_bytes"] == 0  # only ingest and validation for version 2
    assert v2["added_bytes"] == v2["source_bytes"] + v2["new_blob_bytes"] + v2["other_bytes"]
    parts = ("source_bytes", "files_extra_bytes", "augmented_bytes", "exports_bytes", "other_bytes")
    folders = sum(version[part] for version in (v1, v2) for part in parts)
    assert disk["total_bytes"] == blobs["bytes"] + folders + disk["outside_versions_bytes"]
    assert disk["total_bytes"] == v1["added_bytes"] + v2["added_bytes"] + disk["outside_versions_bytes"]


def _check_machine_targets_and_overhead(report: dict) -> None:
    assert {"cpu_count", "python", "platform"} <= set(report["machine"])
    assert report["targets"] and all(isinstance(target["passed"], bool) for target in report["targets"])
    overhead = report["dagster_overhead"]
    for field in ("python_start_s", "imports_s", "run_launch_s", "run_wall_s", "overhead_s"):
        assert overhead[field] > 0, field
    table = format_report(report)
    assert all(stage in table for stage in STAGE_ORDER)
    assert f"disk use of {report['dataset']['partition_keys'][-1]}" in table


def _check_scale_summary(report: dict) -> None:
    """Twice the images in twice the time is linear growth, and COCO size lies beyond both runs."""
    doubled = copy.deepcopy(report)
    doubled["n_images"] *= 2
    doubled["dataset"]["boxes"] *= 2
    doubled["dagster_overhead"]["run_wall_s"] *= 2
    for entry in doubled["stages"].values():
        entry["wall_s"] *= 2
    summary = scale_summary([doubled, report])
    assert summary["n_images"] == [N_IMAGES, 2 * N_IMAGES]
    for stage in STAGE_ORDER:
        growth = summary["stages"][stage]
        assert growth["time_exponent"] == pytest.approx(1.0)
        assert growth["coco_wall_s"] > growth["wall_s"][-1]
    assert "whole run" in format_scale(summary)
