"""The `dataset-pipeline` command: run the UI, run the demo, submit uploads, list datasets, fetch exports."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dataset_pipeline.db.database import Database

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3


def _cmd_dev(args: argparse.Namespace) -> int:
    from dataset_pipeline.devserver import drop_sample_on_first_start, run_dev

    return run_dev(host=args.host, port=args.port, before_start=drop_sample_on_first_start)


def _cmd_demo(args: argparse.Namespace) -> int:
    """Generate a sample, run all six assets headless, print the validation summary and export paths."""
    import tempfile
    from pathlib import Path

    import dagster as dg

    from dataset_pipeline.db import repository
    from dataset_pipeline.db.database import Database
    from dataset_pipeline.domain.model import DatasetFormat
    from dataset_pipeline.domain.synthetic import generate_dataset
    from dataset_pipeline.local_run import process_upload
    from dataset_pipeline.runtime import prepare_runtime

    runtime = prepare_runtime()
    try:
        with tempfile.TemporaryDirectory(prefix="dataset-pipeline-demo-") as scratch:
            sample = generate_dataset(
                Path(scratch) / "sample",
                n_images=args.images,
                fmt=DatasetFormat(args.format),
                seed=args.seed,
                zipped=True,
            )
            print(f"generated {args.images} images as {args.format}: {sample}", flush=True)
            with dg.DagsterInstance.get() as instance:
                key, result = process_upload(
                    instance,
                    sample,
                    user="demo",
                    project="samples",
                    name=f"sample-{args.format}-{args.seed}-{args.images}",
                )
        database = Database(runtime.database_url)
        with database.session() as session:
            dataset = repository.find_dataset(session, key)
            assert dataset is not None
            print(f"\ndataset {key}: status {dataset.status}")
            summary = dataset.validation_summary
            print(
                f"  images {summary.get('images')}, usable {summary.get('usable_images')}, "
                f"quarantined {summary.get('quarantined')}, issues by severity {summary.get('by_severity')}"
            )
            print("  exports:")
            for export in repository.exports_of(session, dataset.id):
                print(f"    {export.format:5s} {export.path}  ({export.size_bytes:,} bytes)")
        database.dispose()
        return EXIT_OK if result.success else EXIT_FAILURE
    finally:
        runtime.stop()


@contextlib.contextmanager
def _open_database() -> Iterator[Database]:
    """The application database (DATABASE_URL, or the embedded server joined for this command), migrated."""
    from dataset_pipeline.db.database import Database
    from dataset_pipeline.embedded_postgres import resolve_database_url
    from dataset_pipeline.settings import Settings

    url, embedded = resolve_database_url(Settings.from_env())
    database = Database(url)
    try:
        database.migrate()
        yield database
    finally:
        database.dispose()
        if embedded is not None:
            embedded.stop()


def _cmd_list(args: argparse.Namespace) -> int:
    """Datasets with status, counts and export paths, from the database."""
    from dataset_pipeline.db import repository

    with _open_database() as database, database.session() as session:
        datasets = repository.list_datasets(session)
        if not datasets:
            print("no datasets yet: drop a .zip into storage/inbox/<user>/<project>/ or run `make demo`")
        for dataset in datasets:
            user, project = repository.owner_of(session, dataset)
            summary = dataset.validation_summary or {}
            print(
                f"{dataset.id:>4}  {dataset.partition_key:40s} {user}/{project}  {dataset.status:10s} "
                f"{dataset.format or '-':5s} images={summary.get('images', '-')} "
                f"usable={summary.get('usable_images', '-')}"
            )
            if dataset.status_reason:
                print(f"      reason: {dataset.status_reason}")
            for export in repository.exports_of(session, dataset.id):
                print(f"      {export.format:5s} {export.path}")
    return EXIT_OK


def _cmd_download(args: argparse.Namespace) -> int:
    """Copy a dataset's export zip to a file (the old GET /download/{dataset_id})."""
    import shutil
    from pathlib import Path

    from dataset_pipeline.db import repository

    with _open_database() as database, database.session() as session:
        dataset = repository.find_dataset(session, args.dataset)
        if dataset is None:
            print(f"error: no dataset {args.dataset!r}; `dataset-pipeline list` shows them", file=sys.stderr)
            return EXIT_NOT_FOUND
        partition_key = dataset.partition_key
        exports = {export.format: export for export in repository.exports_of(session, dataset.id)}
    export = exports.get(args.format)
    if export is None or not Path(export.path).is_file():
        print(
            f"error: dataset {partition_key} has no {args.format} export yet "
            f"(have: {', '.join(sorted(exports)) or 'none'}); materialise dataset_export first",
            file=sys.stderr,
        )
        return EXIT_NOT_FOUND
    output = Path(args.output or Path(export.path).name)
    temporary = output.with_name(f".{output.name}.part")
    shutil.copyfile(export.path, temporary)
    os.replace(temporary, output)
    print(f"{output} ({output.stat().st_size:,} bytes, sha256 {export.sha256})")
    return EXIT_OK


def _cmd_submit(args: argparse.Namespace) -> int:
    """Put an upload into the inbox for the sensor (the old POST /upload-dataset)."""
    from pathlib import Path

    from dataset_pipeline.domain.inbox import InboxError, place_in_inbox
    from dataset_pipeline.settings import Settings

    inbox = Settings.from_env().storage_root / "inbox"
    try:
        target = place_in_inbox(Path(args.path), inbox, args.user, args.project, args.name)
    except InboxError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_NOT_FOUND if "no such file" in str(error) else EXIT_USAGE
    except OSError as error:
        print(f"error: could not copy {args.path} into {inbox}: {error}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{target}")
    print(
        "the inbox sensor picks it up within seconds while `make dev` runs; `dataset-pipeline list` shows it"
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dataset-pipeline",
        description="Prepare object-detection datasets (YOLO, COCO, Pascal VOC) with Dagster and PostgreSQL.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser("dev", help="start PostgreSQL (embedded unless DATABASE_URL) and the Dagster UI")
    dev.add_argument("--host", default=os.environ.get("DAGSTER_HOST", "127.0.0.1"))
    dev.add_argument("--port", type=int, default=int(os.environ.get("DAGSTER_PORT", "3000")))
    dev.set_defaults(handler=_cmd_dev)

    demo = sub.add_parser(
        "demo", help="run the whole graph headless on a generated sample and print the exports"
    )
    demo.add_argument("--images", type=int, default=60)
    demo.add_argument("--format", choices=["yolo", "coco", "voc"], default="yolo")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(handler=_cmd_demo)

    submit = sub.add_parser(
        "submit",
        help="copy a .zip or folder into the inbox for processing (written as .part, then renamed)",
        description="Copy a dataset into storage/inbox/USER/PROJECT/ where the inbox sensor picks it up. "
        "Exit codes: 0 submitted, 2 bad name or already waiting, 3 no such file.",
    )
    submit.add_argument("path", help="a .zip file or a folder in YOLO, COCO or Pascal VOC layout")
    submit.add_argument("--user", required=True, help="owner, e.g. alice")
    submit.add_argument("--project", required=True, help="project, e.g. traffic")
    submit.add_argument("--name", help="dataset name (default: the file name without .zip)")
    submit.set_defaults(handler=_cmd_submit)

    listing = sub.add_parser("list", help="datasets with status, counts and export paths")
    listing.set_defaults(handler=_cmd_list)

    download = sub.add_parser("download", help="copy a dataset's export zip (the old GET /download/{id})")
    download.add_argument("dataset", help="partition key (see `list`) or numeric dataset id")
    download.add_argument("--format", choices=["yolo", "coco", "voc"], default="yolo")
    download.add_argument("-o", "--output", help="where to write the zip (default: its own name, here)")
    download.set_defaults(handler=_cmd_download)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
