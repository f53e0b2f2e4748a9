"""The `dataset-pipeline` command: the UI, the demo, submitting uploads, and list, download, diff, prune."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy.orm import Session

    from dataset_pipeline.db.database import Database
    from dataset_pipeline.db.models import Dataset, DatasetVersion, VersionValidation
    from dataset_pipeline.resources.storage import DatasetStorage, LocalDatasetStorage

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3


def _cmd_dev(args: argparse.Namespace) -> int:
    from dataset_pipeline.devserver import drop_sample_on_first_start, run_dev

    return run_dev(
        host=args.host, port=args.port, before_start=drop_sample_on_first_start, verbose=args.verbose
    )


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
    from dataset_pipeline.resources.storage import LocalDatasetStorage
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
                    launched_by="demo",
                )
        database = Database(runtime.database_url)
        storage = LocalDatasetStorage()
        with database.session() as session:
            dataset = repository.find_dataset(session, key)
            assert dataset is not None
            print(f"\ndataset {key}: status {dataset.status}")
            version = repository.latest_version(session, dataset.id)
            verdict = repository.validation_of(session, version.id) if version is not None else None
            if version is None or verdict is None:
                print(f"  no validated version: {dataset.status_reason or 'see the run in the Dagster UI'}")
            else:
                summary = verdict.summary or {}
                print(
                    f"  version {version.number}: images {summary.get('images')}, usable "
                    f"{summary.get('usable_images')}, quarantined {summary.get('quarantined')}, issues by "
                    f"severity {summary.get('by_severity')}"
                )
                print("  exports:")
                for export in repository.exports_of(session, version.id):
                    print(
                        f"    {export.format:5s} {_shown_path(storage, export.path)}  ({export.size_bytes:,} bytes)"
                    )
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

    settings = Settings.from_env()
    url, embedded = resolve_database_url(settings)
    where = (
        f"the embedded PostgreSQL in {settings.embedded_pgdata}" if embedded is not None else "DATABASE_URL"
    )
    print(f"using {where}, storage {settings.storage_root}", file=sys.stderr)
    database = Database(url)
    try:
        database.migrate()
        yield database
    finally:
        database.dispose()
        if embedded is not None:
            embedded.stop()


def _cmd_list(args: argparse.Namespace) -> int:
    """Datasets with their versions, verdicts and the newest version's exports, from the database."""
    from dataset_pipeline.db import repository
    from dataset_pipeline.resources.storage import LocalDatasetStorage

    storage = LocalDatasetStorage()
    if args.rejected:
        return _print_rejected(storage)
    with _open_database() as database, database.session() as session:
        datasets = repository.list_datasets(session)
        if not datasets:
            print("no datasets yet: drop a .zip into storage/inbox/<user>/<project>/ or run `make demo`")
        for dataset in datasets:
            user, project = repository.owner_of(session, dataset)
            versions = repository.versions_of(session, dataset.id)
            verdicts = repository.validations_of(session, [v.id for v in versions])
            newest = versions[-1] if versions else None
            verdict = verdicts.get(newest.id) if newest is not None else None
            summary = (verdict.summary or {}) if verdict is not None else {}
            version = f"v{newest.number} {newest.format or '-'}" if newest is not None else "no version"
            print(
                f"{dataset.id:>4}  {dataset.partition_key:40s} {user}/{project}  {dataset.status:10s} {version:9s} "
                f"images={summary.get('images', '-')} usable={summary.get('usable_images', '-')} "
                f"quarantined={summary.get('quarantined', '-')} "
                f"errors={summary.get('by_severity', {}).get('error', '-')}"
            )
            if dataset.status_reason:
                print(f"      reason: {dataset.status_reason}")
            for each in versions:
                print(f"      {_version_line(each, verdicts.get(each.id))}")
            exports = repository.exports_of(session, newest.id) if newest is not None else []
            if exports:
                print(f"      exports of v{newest.number}:")
            for export in exports:
                print(f"        {export.format:5s} {_shown_path(storage, export.path)}")
    return EXIT_OK


def _print_rejected(storage: LocalDatasetStorage) -> int:
    """Drops the sensor or a run moved to inbox/_rejected/, newest first, with the reason for each."""
    import datetime as dt

    rejected = storage.rejected_drops()
    if not rejected:
        print(f"no rejected drops in {storage.rejected_dir()}")
    for drop in rejected:
        when = dt.datetime.fromtimestamp(drop.rejected_at).astimezone().strftime("%Y-%m-%d %H:%M")
        print(f"{when}  {drop.path}")
        for line in drop.reason.splitlines():
            print(f"      {line}")
    return EXIT_OK


def _version_line(version: DatasetVersion, verdict: VersionValidation | None) -> str:
    """`v2 label_edit by alice 2026-12-01 12:00 sha256 0a1b2c3d4e5f… images=10 usable=9 passed`."""
    when = version.created_at.astimezone().strftime("%Y-%m-%d %H:%M") if version.created_at else "-"
    line = f"v{version.number} {version.cause} by {version.created_by} {when} sha256 {version.upload_sha256[:12]}…"
    if verdict is None:
        return f"{line} not validated yet"
    summary = verdict.summary or {}
    line += f" images={summary.get('images', '-')} usable={summary.get('usable_images', '-')}"
    return f"{line} passed" if verdict.passed else f"{line} failed: {verdict.reason or 'no reason recorded'}"


def _shown_path(storage: DatasetStorage, relative: str) -> str:
    """The file a root-relative path names, or the path itself when it cannot be resolved safely."""
    from dataset_pipeline.resources.storage import UnsafePathError

    try:
        return str(storage.resolve(relative))
    except UnsafePathError:
        return relative


def _cmd_download(args: argparse.Namespace) -> int:
    """Copy the newest export of a version to a file (the old GET /download/{dataset_id})."""
    import hashlib
    from pathlib import Path

    from dataset_pipeline.db import repository
    from dataset_pipeline.resources.storage import LocalDatasetStorage, UnsafePathError

    storage = LocalDatasetStorage()
    with _open_database() as database, database.session() as session:
        found = _dataset_and_version(session, args.dataset, args.version)
        if isinstance(found, int):
            return found
        dataset, version = found
        where = f"version {version.number} of dataset {dataset.partition_key}"
        exports = {export.format: export for export in repository.exports_of(session, version.id)}
        export = exports.get(args.format)
        if export is None:
            print(
                f"error: {_why_no_export(session, dataset, version, args.format, sorted(exports))}",
                file=sys.stderr,
            )
            return EXIT_NOT_FOUND
        relative, sha256 = export.path, export.sha256
    try:
        source = storage.resolve(relative)
    except UnsafePathError as error:
        print(f"error: the {args.format} export of {where} cannot be read: {error}", file=sys.stderr)
        return EXIT_FAILURE
    if not source.is_file():
        print(
            f"error: the {args.format} export of {where} is recorded at {relative}, but {source} does not exist; "
            f"check DATASET_STORAGE_ROOT ({storage.root_path}) or materialise dataset_export for partition "
            f"{dataset.partition_key} again",
            file=sys.stderr,
        )
        return EXIT_NOT_FOUND
    output = Path(args.output or source.name)
    temporary = output.with_name(f".{output.name}.part")
    digest = hashlib.sha256()
    try:
        with source.open("rb") as reader, temporary.open("wb") as writer:
            while chunk := reader.read(1 << 20):
                digest.update(chunk)
                writer.write(chunk)
        if digest.hexdigest() != sha256:
            print(
                f"error: {source} does not match the sha256 recorded for the {args.format} export of {where} "
                f"(recorded {sha256}, on disk {digest.hexdigest()}); materialise dataset_export for partition "
                f"{dataset.partition_key} again",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        os.replace(temporary, output)
    except OSError as error:
        print(f"error: could not copy {source} to {output}: {error}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        temporary.unlink(missing_ok=True)
    print(f"{output} ({output.stat().st_size:,} bytes, {where}, {args.format}, sha256 {sha256})")
    return EXIT_OK


def _why_no_export(
    session: Session, dataset: Dataset, version: DatasetVersion, fmt: str, formats: list[str]
) -> str:
    """What a user asking for a missing export needs to hear: why there is none, and what to ask for instead."""
    from dataset_pipeline.db import repository

    where = f"version {version.number} of dataset {dataset.partition_key}"
    with_export = {
        number: fmts
        for number, fmts in repository.export_formats_by_version(session, dataset.id).items()
        if fmt in fmts
    }
    elsewhere = (
        f"versions with a {fmt} export: {', '.join(f'{n}' for n in with_export)} (pick one with --version N)"
        if with_export
        else f"no version of {dataset.partition_key} has a {fmt} export"
    )
    verdict = repository.validation_of(session, version.id)
    if verdict is not None and not verdict.passed:
        fix = {
            "label_edit": "edit its labels again to fix what validation found",
            "revalidation": f"fix the files under {version.files_path} and re-validate",
        }.get(version.cause, "fix the upload and submit it again (`dataset-pipeline submit`)")
        return (
            f"{where} failed validation ({verdict.reason or 'no reason recorded'}), so it is never exported; "
            f"{elsewhere}. To get a new version, {fix}; the validation report in the Dagster UI lists each "
            "problem by file and line."
        )
    if verdict is None:
        return (
            f"{where} is not validated yet, so it has no exports; {elsewhere}. Wait for its run to finish "
            "(`dataset-pipeline list` shows where it stands)."
        )
    other = f" (it has {', '.join(formats)})" if formats else ""
    return (
        f"{where} has no {fmt} export yet{other}; {elsewhere}. Materialise dataset_export for partition "
        f"{dataset.partition_key} to make one."
    )


def _dataset_and_version(
    session: Session, key: str, number: int | None
) -> tuple[Dataset, DatasetVersion] | int:
    """The dataset and its version `number` (newest when None), or the exit code after saying what is wrong."""
    from dataset_pipeline.db import repository

    dataset = repository.find_dataset(session, key)
    if dataset is None:
        print(f"error: no dataset {key!r}; `dataset-pipeline list` shows them", file=sys.stderr)
        return EXIT_NOT_FOUND
    try:
        return dataset, repository.version_of(session, dataset, number)
    except repository.VersionNotFound as error:
        print(f"error: {error}; `dataset-pipeline list` shows them", file=sys.stderr)
        return EXIT_NOT_FOUND


def _cmd_diff(args: argparse.Namespace) -> int:
    """What changed between two versions: images, boxes, classes, splits."""
    import json

    from dataset_pipeline.db import repository
    from dataset_pipeline.db.models import DatasetVersion
    from dataset_pipeline.db.version_content import load_version_content
    from dataset_pipeline.domain.version_diff import diff_versions

    with _open_database() as database, database.session() as session:
        found = _dataset_and_version(session, args.dataset, args.to)
        if isinstance(found, int):
            return found
        dataset, new = found
        from_number = args.from_
        if from_number is None:
            parent = session.get(DatasetVersion, new.parent_id) if new.parent_id is not None else None
            from_number = parent.number if parent is not None else new.number - 1
            if from_number < 1:
                print(
                    f"error: version {new.number} is the first version of dataset {dataset.partition_key}; "
                    "there is nothing before it to compare with (give --from and --to)",
                    file=sys.stderr,
                )
                return EXIT_USAGE
        found = _dataset_and_version(session, args.dataset, from_number)
        if isinstance(found, int):
            return found
        old = found[1]
        for version in (old, new):
            if repository.validation_of(session, version.id) is None:
                print(
                    f"note: version {version.number} of dataset {dataset.partition_key} is not validated yet, "
                    "so it has no images or labels to compare",
                    file=sys.stderr,
                )
        diff = diff_versions(load_version_content(session, old), load_version_content(session, new))
    print(json.dumps(diff.to_json(), indent=2) if args.json else diff.markdown())
    return EXIT_OK


REPORT_COLUMNS = ("severity", "code", "file", "line", "annotation_id", "image", "message")


def _cmd_report(args: argparse.Namespace) -> int:
    """A version's validation report in the terminal (or as CSV): what a run's metadata shows only in part."""
    import csv

    from dataset_pipeline.db import repository

    with _open_database() as database, database.session() as session:
        found = _dataset_and_version(session, args.dataset, args.version)
        if isinstance(found, int):
            return found
        dataset, version = found
        verdict = repository.validation_of(session, version.id)
        if verdict is None:
            print(
                f"error: version {version.number} of dataset {dataset.partition_key} is not validated yet; "
                "materialise validated_dataset for it (the inbox sensor's run does)",
                file=sys.stderr,
            )
            return EXIT_NOT_FOUND
        findings = [
            f for f in repository.findings_of(session, version.id) if args.severity in (None, f.severity)
        ]
    if args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(REPORT_COLUMNS)
        for f in findings:
            writer.writerow((f.severity, f.code, f.file, f.line, f.annotation_id, f.image_path, f.message))
        return EXIT_OK
    summary = verdict.summary or {}
    state = "passed" if verdict.passed else f"failed: {verdict.reason or 'no reason recorded'}"
    print(
        f"{dataset.partition_key} v{version.number}: {state}; images={summary.get('images', '-')} "
        f"usable={summary.get('usable_images', '-')} quarantined={summary.get('quarantined', '-')}"
    )
    counts = summary.get("by_severity", {})
    print("findings: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("error", "warning", "info")))
    for finding in map(repository.issue_of, findings):
        where = finding.location() or "(dataset)"
        print(f"{finding.severity:7s}  {finding.code:28s}  {where}  {finding.message}")
    return EXIT_OK


def _cmd_prune(args: argparse.Namespace) -> int:
    """Delete all but the newest versions of a dataset, then the files only they referred to."""
    import sqlalchemy as sa

    from dataset_pipeline.db import repository
    from dataset_pipeline.db.models import Dataset
    from dataset_pipeline.resources.storage import LocalDatasetStorage, UnsafePathError

    storage = LocalDatasetStorage()
    with _open_database() as database, database.session() as session:
        dataset = repository.find_dataset(session, args.dataset)
        if dataset is None:
            print(f"error: no dataset {args.dataset!r}; `dataset-pipeline list` shows them", file=sys.stderr)
            return EXIT_NOT_FOUND
        key = dataset.partition_key
        user, project = repository.owner_of(session, dataset)
        # The lock add_version takes: no version is added while we decide which to drop.
        session.execute(sa.select(Dataset.id).where(Dataset.id == dataset.id).with_for_update())
        # A dry run deletes inside a savepoint and rolls it back, so it reports exactly what --yes would do.
        savepoint = None if args.yes else session.begin_nested()
        pruned, paths, blobs = repository.prune_versions(session, dataset, args.keep)
        if savepoint is not None:
            savepoint.rollback()
    if not pruned:
        print(f"dataset {key} has no more than {args.keep} version(s); nothing to prune")
        return EXIT_OK
    try:
        dataset_dir = storage.resolve(f"{user}/{project}/{dataset.name}")
    except UnsafePathError:
        dataset_dir = None  # then no emptied folder is removed, only the paths the database named
    numbers = ", ".join(map(str, pruned))
    if not args.yes:
        print(
            f"dry run: would delete version(s) {numbers} of dataset {key} and everything computed from them"
        )
        total = 0
        for relative in sorted(paths):
            path, problem = _prunable(storage, relative)
            size = _tree_size(path) if path is not None and problem is None else 0
            total += size
            print(f"  would {'skip' if problem else 'remove'} {relative} ({problem or f'{size:,} bytes'})")
        print(f"would free {total:,} bytes; run again with --yes to do it")
        return EXIT_OK
    print(f"deleted version(s) {numbers} of dataset {key} and everything computed from them")
    freed, failed = 0, 0
    for relative in sorted(paths):
        path, problem = _prunable(storage, relative)
        if path is None or problem is not None:
            print(f"  skipped {relative} ({problem})")
            continue
        size = _tree_size(path)
        try:
            _remove(path)
        except OSError as error:
            failed += 1
            print(f"  could not remove {path}: {error}; delete it by hand", file=sys.stderr)
            continue
        freed += size
        print(f"  removed {relative} ({size:,} bytes)")
        if dataset_dir is not None:
            _remove_empty_parents(path, dataset_dir)
    blob_bytes = storage.remove_unreferenced_blobs(blobs)
    if blob_bytes:
        print(f"  removed file contents no other version uses ({blob_bytes:,} bytes)")
    freed += blob_bytes
    print(f"freed {freed:,} bytes")
    return EXIT_FAILURE if failed else EXIT_OK


def _prunable(storage: DatasetStorage, relative: str) -> tuple[Path | None, str | None]:
    """The file or folder to delete for a root-relative path, or why it is left alone."""
    from dataset_pipeline.resources.storage import UnsafePathError

    try:
        path = storage.resolve(relative)  # refuses symlinks anywhere on the way and escapes from the root
    except UnsafePathError as error:
        return None, f"not touched: {error}"
    if not os.path.lexists(path):
        return path, "already gone"
    return path, None


def _tree_size(path: Path) -> int:
    """Bytes a file, or every file under a folder, frees when deleted: a file linked elsewhere too (a blob
    another version shares) frees nothing. Symlinks are not followed."""

    def own_size(file: str) -> int:
        stat = os.lstat(file)
        return stat.st_size if stat.st_nlink == 1 else 0

    try:
        if not path.is_dir() or path.is_symlink():
            return own_size(str(path))
    except FileNotFoundError:
        return 0
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += own_size(os.path.join(folder, name))
    return total


def _remove(path: Path) -> None:
    """Delete a file or a folder tree; symlinks inside are removed, never followed; what is gone is fine."""
    import shutil

    def ignore_gone(function: object, name: str, exc_info: tuple) -> None:
        if not isinstance(exc_info[1], FileNotFoundError):
            raise exc_info[1]

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, onerror=ignore_gone)
    else:
        path.unlink(missing_ok=True)


def _remove_empty_parents(path: Path, stop: Path) -> None:
    """Remove folders a deletion left empty (`v1/exports/<run>/`, `v1/`), never `stop` or above it."""
    for parent in path.parents:
        if parent == stop or not parent.is_relative_to(stop):
            return
        try:
            parent.rmdir()
        except OSError:
            return


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


def _cmd_project(args: argparse.Namespace) -> int:
    """Show or set a project's defaults (how its VOC files are read and written)."""
    from dataset_pipeline.db import repository
    from dataset_pipeline.domain.naming import name_problem

    for value, kind in ((args.user, "user"), (args.project, "project")):
        if (problem := name_problem(value, kind)) is not None:
            print(f"error: {problem}", file=sys.stderr)
            return EXIT_USAGE
    with _open_database() as database, database.session() as session:
        if args.voc_pixel_origin is None:
            project = repository.get_or_create_project(session, args.user, args.project)
        else:
            project = repository.set_project_voc_pixel_origin(
                session, args.user, args.project, args.voc_pixel_origin
            )
        origin = project.voc_pixel_origin
    meaning = "pixel edges as written (CVAT, Datumaro)" if origin == 0 else "1-based pixels (VOC devkit)"
    print(f"{args.user}/{args.project}: voc_pixel_origin={origin} ({meaning})")
    return EXIT_OK


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dataset-pipeline",
        description="Prepare object-detection datasets (YOLO, COCO, Pascal VOC) with Dagster and PostgreSQL.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser("dev", help="start PostgreSQL (embedded unless DATABASE_URL) and the Dagster UI")
    dev.add_argument("--host", default=os.environ.get("DAGSTER_HOST", "127.0.0.1"))
    dev.add_argument("--port", type=int, default=int(os.environ.get("DAGSTER_PORT", "3000")))
    dev.add_argument(
        "--verbose", action="store_true", help="also show the daemon's line for every sensor tick"
    )
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

    listing = sub.add_parser(
        "list", help="datasets with their versions, verdicts and the newest version's export paths"
    )
    listing.add_argument(
        "--rejected",
        action="store_true",
        help="list the drops moved to inbox/_rejected/ instead, with the reason for each",
    )
    listing.set_defaults(handler=_cmd_list)

    download = sub.add_parser(
        "download",
        help="copy the export zip of a version (the old GET /download/{id})",
        description="Copy the newest export of a dataset version in one format. "
        "Exit codes: 0 written, 1 could not copy, 3 no such dataset, version or export.",
    )
    download.add_argument("dataset", help="partition key (see `list`) or numeric dataset id")
    download.add_argument("--version", type=_positive, help="version number (default: the newest)")
    download.add_argument("--format", choices=["yolo", "coco", "voc"], default="yolo")
    download.add_argument("-o", "--output", help="where to write the zip (default: its own name, here)")
    download.set_defaults(handler=_cmd_download)

    diff = sub.add_parser(
        "diff",
        help="what changed between two versions: images, boxes, classes, splits",
        description="Compare two versions of a dataset. Exit codes: 0 compared, 2 nothing to compare with, "
        "3 no such dataset or version.",
    )
    diff.add_argument("dataset", help="partition key (see `list`) or numeric dataset id")
    diff.add_argument(
        "--from", dest="from_", type=_positive, help="older version (default: the parent of --to)"
    )
    diff.add_argument("--to", type=_positive, help="newer version (default: the newest)")
    diff.add_argument("--json", action="store_true", help="print the diff as JSON instead of a summary")
    diff.set_defaults(handler=_cmd_diff)

    prune = sub.add_parser(
        "prune",
        help="delete all but the newest N versions and the files only they used (dry run without --yes)",
        description="Delete the older versions of a dataset with everything computed from them, then the "
        "files no kept version refers to. Without --yes only prints what it would remove. "
        "Exit codes: 0 done, 1 some files could not be removed, 3 no such dataset.",
    )
    prune.add_argument("dataset", help="partition key (see `list`) or numeric dataset id")
    prune.add_argument(
        "--keep", type=_positive, required=True, help="how many of the newest versions to keep"
    )
    prune.add_argument("--yes", action="store_true", help="really delete (default: dry run)")
    prune.set_defaults(handler=_cmd_prune)

    report = sub.add_parser(
        "report",
        help="a version's validation report: severity, code, file, line, message (--csv for a file)",
        description="Print every finding of a version's validation, errors first. "
        "Exit codes: 0 printed, 3 no such dataset or version, or not validated yet.",
    )
    report.add_argument("dataset", help="partition key (see `list`) or numeric dataset id")
    report.add_argument("--version", type=_positive, help="version number (default: the newest)")
    report.add_argument(
        "--severity", choices=["error", "warning", "info"], help="only findings of this severity"
    )
    report.add_argument("--csv", action="store_true", help="write CSV to standard output instead")
    report.set_defaults(handler=_cmd_report)

    project = sub.add_parser(
        "project",
        help="show or set a project's defaults (--voc-pixel-origin)",
        description="Show a project's defaults, or set them for the uploads and exports that follow; a run's "
        "launchpad config overrides them. Exit codes: 0 done, 2 bad name.",
    )
    project.add_argument("user", help="owner, e.g. alice")
    project.add_argument("project", help="project, e.g. traffic")
    project.add_argument(
        "--voc-pixel-origin",
        type=int,
        choices=[0, 1],
        help="0: VOC <bndbox> values are the box's pixel edges (CVAT, Datumaro, Roboflow; the default); "
        "1: the devkit's 1-based pixels",
    )
    project.set_defaults(handler=_cmd_project)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
