"""`python -m dataset_pipeline.bench [--n N | --scale N1 N2 ...] --format yolo`: run, write JSON, print tables.

Everything the run creates (DAGSTER_HOME, embedded PostgreSQL, storage, generated data) lives in a temporary
folder that is removed afterwards; only `bench/results.json` or `bench/scale.json` is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("dataset_pipeline.bench")
#: Enough images that validation and augmentation take their process-pool paths, as measured runs do.
WARM_UP_IMAGES = 40


@dataclasses.dataclass(frozen=True)
class BenchEnvironment:
    workdir: Path
    instance: Any  # dagster.DagsterInstance
    database_url: str
    database: str  # "embedded" or "DATABASE_URL"
    setup_s: float


@contextlib.contextmanager
def bench_environment(parent: Path | None = None) -> Iterator[BenchEnvironment]:
    """A throwaway DAGSTER_HOME and storage root, on the embedded PostgreSQL unless DATABASE_URL is set.

    Set up as `dataset-pipeline demo` does (prepare_runtime), so the bench measures the configuration users run.
    """
    import dagster as dg

    from dataset_pipeline.bench.measure import span
    from dataset_pipeline.runtime import prepare_runtime
    from dataset_pipeline.settings import Settings

    with tempfile.TemporaryDirectory(prefix="dataset-pipeline-bench-", dir=parent) as scratch:
        workdir = Path(scratch)
        settings = dataclasses.replace(
            Settings.from_env(), storage_root=workdir / "storage", home=workdir / "dagster_home"
        )
        log.info("starting PostgreSQL and Dagster's instance under %s", workdir)
        with span() as setup:
            runtime = prepare_runtime(settings)
        try:
            with dg.DagsterInstance.from_config(str(settings.home)) as instance:
                yield BenchEnvironment(
                    workdir,
                    instance,
                    runtime.database_url,
                    "DATABASE_URL" if settings.database_url else "embedded",
                    setup.seconds,
                )
        finally:
            runtime.stop()


def write_json(document: dict[str, Any], target: Path) -> Path:
    """Written beside the target and renamed, so a reader never sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part")
    partial.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    os.replace(partial, target)
    return target


def _one(args: argparse.Namespace, env: BenchEnvironment, n_images: int) -> dict[str, Any]:
    from dataset_pipeline.bench.runner import run_bench

    workdir = env.workdir / f"n{n_images}"
    try:
        report = run_bench(
            n_images,
            args.format,
            workdir=workdir,
            instance=env.instance,
            database_url=env.database_url,
            seed=args.seed,
            repeats=args.repeat or (1 if args.scale else 3),
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # a 50k-image run holds tens of GB
    report["setup"] = {"database": env.database, "database_and_migrations_s": round(env.setup_s, 3)}
    return report


def _warm_up(args: argparse.Namespace, env: BenchEnvironment) -> None:
    """One small unreported run, so lazy imports (matplotlib, pandas paths) are not billed to the first N."""
    from dataset_pipeline.bench.runner import run_bench

    log.info("warm-up run (not reported)")
    workdir = env.workdir / "warm-up"
    try:
        run_bench(
            WARM_UP_IMAGES,
            args.format,
            workdir=workdir,
            instance=env.instance,
            database_url=env.database_url,
            probe_startup=False,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dataset_pipeline.bench",
        description="Time every stage on a synthetic dataset beside a plain baseline; write bench/*.json.",
    )
    parser.add_argument("--n", type=int, default=2000, help="images to generate (default 2000)")
    parser.add_argument("--format", choices=["yolo", "coco", "voc"], default="yolo")
    parser.add_argument("--scale", type=int, nargs="+", metavar="N", help="run at each N and report growth")
    parser.add_argument(
        "--repeat",
        type=int,
        help="rounds per N, medians reported (default 3, or 1 with --scale); damps other processes' noise",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output-dir", type=Path, default=Path("bench"), help="where the JSON goes (./bench)"
    )
    parser.add_argument("--workdir", type=Path, help="parent of the temporary folder (default: system temp)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    sizes = args.scale or [args.n]
    if min(sizes) < 1 or (args.repeat is not None and args.repeat < 1):
        print("error: every N and --repeat must be at least 1", file=sys.stderr)
        return 2
    from dataset_pipeline.bench.report import format_report
    from dataset_pipeline.bench.scale import format_scale, scale_summary

    target = args.output_dir / ("scale.json" if args.scale else "results.json")
    reports: list[dict[str, Any]] = []
    with bench_environment(args.workdir) as env:
        _warm_up(args, env)
        for n_images in sizes:
            reports.append(_one(args, env, n_images))
            # rewritten after every N, so the smaller sizes survive a larger one running out of disk or time
            write_json(scale_summary(reports) if args.scale else reports[0], target)
            log.info("wrote %s", target)
    tables = [format_report(report) for report in sorted(reports, key=lambda report: report["n_images"])]
    if args.scale:
        tables.append(format_scale(scale_summary(reports)))
    print("\n\n".join(tables))
    return 0
