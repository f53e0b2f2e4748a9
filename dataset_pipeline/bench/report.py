"""Turn measurements into the report: ratios against baselines, pass/miss against targets, aligned tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dataset_pipeline.bench.measure import Measurement, median_of

#: The rate a stage's ratio compares: what the stage is for (bytes moved, images handled, rows written).
RATIO_BASIS: dict[str, str] = {
    "ingest": "mb_per_s",
    "validation": "images_per_s",
    "database_writes": "boxes_per_s",
    "augmentation": "images_per_s",
    "export": "mb_per_s",
}
STAGE_ORDER = (
    "ingest",
    "validation",
    "database_writes",
    "class_distribution",
    "augmentation",
    "splits",
    "export",
)
MIN_RATIO = 0.8
VALIDATION_IMAGES_PER_S_PER_CPU = 750  # 1,500 images/s on 2 cores
DATABASE_ROWS_PER_S = 100_000
EXPORT_MB_PER_S = 400


@dataclass
class StageResult:
    """Our stage and, first in `baselines`, the plain code its ratio is taken against."""

    stage: str
    ours: Measurement
    baselines: list[Measurement] = field(default_factory=list)

    def ratio(self) -> float | None:
        basis = RATIO_BASIS.get(self.stage)
        if basis is None or not self.baselines:
            return None
        reference = self.baselines[0].rate(basis)
        return self.ours.rate(basis) / reference if reference > 0 else None

    def to_dict(self) -> dict[str, Any]:
        ratio = self.ratio()
        return {
            **self.ours.to_dict(),
            "ratio": round(ratio, 3) if ratio is not None else None,
            "ratio_basis": RATIO_BASIS.get(self.stage),
            "baselines": [baseline.to_dict() for baseline in self.baselines],
        }


def combine_rounds(rounds: Sequence[Sequence[StageResult]]) -> list[StageResult]:
    """One result per stage from repeated rounds: each measurement's median, so ratios compare medians."""
    return [
        StageResult(
            stages[0].stage,
            median_of([stage.ours for stage in stages]),
            [
                median_of(list(baselines))
                for baselines in zip(*(stage.baselines for stage in stages), strict=True)
            ],
        )
        for stages in zip(*rounds, strict=True)
    ]


def _target(name: str, actual: float, goal: float, unit: str) -> dict[str, Any]:
    passed = actual >= goal
    return {
        "target": name,
        "actual": round(actual, 3),
        "goal": goal,
        "unit": unit,
        "passed": passed,
        "shortfall": None if passed else round(1 - actual / goal, 3),  # 0.25 = 25% below the goal
    }


def evaluate_targets(stages: dict[str, dict[str, Any]], cpus: int) -> list[dict[str, Any]]:
    """The issue's targets; validation's scales with the cores (1,500 images/s is stated for 2)."""
    targets = [
        _target(f"{stage} >= {MIN_RATIO}x its baseline", stages[stage]["ratio"], MIN_RATIO, "x")
        for stage in STAGE_ORDER
        if stages.get(stage, {}).get("ratio") is not None
    ]
    targets += [
        _target(
            f"validation >= {VALIDATION_IMAGES_PER_S_PER_CPU * cpus:,} images/s on {cpus} cores",
            stages["validation"]["images_per_s"],
            VALIDATION_IMAGES_PER_S_PER_CPU * cpus,
            "images/s",
        ),
        _target(
            f"database writes >= {DATABASE_ROWS_PER_S:,} label rows/s",
            stages["database_writes"]["boxes_per_s"],
            DATABASE_ROWS_PER_S,
            "rows/s",
        ),
        _target(f"export >= {EXPORT_MB_PER_S} MB/s", stages["export"]["mb_per_s"], EXPORT_MB_PER_S, "MB/s"),
    ]
    return targets


# --- tables ------------------------------------------------------------------------------------------------


def grid(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 2) -> str:
    """Columns padded to their widest cell; the first `left` columns left-aligned, numbers right-aligned."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(cell).ljust(width) if i < left else str(cell).rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _measure_row(stage: str, entry: dict[str, Any], ratio: str) -> list[str]:
    return [
        stage,
        entry["name"],
        number(entry["wall_s"], 2),
        number(entry["images_per_s"]),
        number(entry["boxes_per_s"]),
        number(entry["mb_per_s"], 1),
        number(entry["peak_rss_mb"]),
        ratio,
    ]


def format_report(report: dict[str, Any]) -> str:
    """The stage table with each baseline under its stage, then targets and Dagster's overhead."""
    header = ["stage", "measured", "wall s", "images/s", "boxes/s", "MB/s", "peak RSS MB", "ours/base"]
    rows: list[list[str]] = []
    for stage in STAGE_ORDER:
        entry = report["stages"][stage]
        ratio = entry["ratio"]
        rows.append(_measure_row(stage, entry, "-" if ratio is None else f"{ratio:.2f}x"))
        for baseline in entry["baselines"]:
            rows.append(_measure_row("", {**baseline, "name": f"  vs {baseline['name']}"}, ""))
    machine, dataset = report["machine"], report["dataset"]
    title = (
        f"dataset_pipeline bench: N={report['n_images']:,} {report['format']} images, {dataset['boxes']:,} boxes, "
        f"{dataset['archive_bytes'] / 1e6:,.0f} MB zip | median of {report['repeats']} rounds | "
        f"{machine['usable_cpus']} cpus, Python {machine['python']}, "
        f"{machine['platform']} | load {machine['load_average_1m_at_start']} -> {report['load_average_1m_at_end']}"
    )
    parts = [
        title,
        "",
        grid(header, rows),
        "",
        format_targets(report["targets"]),
        "",
        format_overhead(report),
    ]
    return "\n".join(parts)


def format_targets(targets: Sequence[dict[str, Any]]) -> str:
    rows = [
        [
            target["target"],
            f"{target['actual']:,.2f} {target['unit']}",
            "pass" if target["passed"] else f"MISS by {target['shortfall']:.0%}",
        ]
        for target in targets
    ]
    return grid(["target", "actual", "result"], rows, left=1)


def format_overhead(report: dict[str, Any]) -> str:
    overhead = report["dagster_overhead"]
    labels = {
        "python_start_s": "python interpreter start (python -c pass)",
        "imports_s": "import dataset_pipeline.definitions (Dagster, assets)",
        "run_launch_s": "run launch: partition, run record, resources -> first step",
        "resource_init_s": "  of which resource init (database, migrations check)",
        "between_steps_s": "between steps",
        "run_finish_s": "after the last step",
        "overhead_s": "Dagster overhead per run (launch + between + finish)",
        "run_wall_s": "whole run (process_upload)",
    }
    rows = [[label, number(overhead[key], 3)] for key, label in labels.items() if key in overhead]
    rows.append(["events written to the event log", number(overhead["events_written"])])
    return grid(["Dagster overhead", "seconds"], rows, left=1)
