"""raw_upload: take a dropped zip or folder, unpack it safely, tell its format, and record the dataset."""

import hashlib
import os
import shutil
from pathlib import Path

import dagster as dg
from pydantic import Field

from dataset_pipeline.assets.common import (
    ASSET_GROUP,
    TRANSIENT_ERROR_RETRY,
    clean_up_interrupted_writes,
    failing_clearly_when_disk_full,
    retry_transient_errors_only,
)
from dataset_pipeline.db import repository
from dataset_pipeline.db.models import Dataset
from dataset_pipeline.domain.model import DatasetError, DatasetFormat
from dataset_pipeline.domain.naming import dataset_name_from_drop
from dataset_pipeline.domain.safe_extract import (
    ExtractionLimits,
    ExtractionReport,
    copy_folder,
    extract_zip,
    sha256_file,
)
from dataset_pipeline.formats import detect_format
from dataset_pipeline.partitions import dataset_partitions
from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import (
    LocalDatasetStorage,
    UnsafePathError,
    check_name,
    replace_directory,
)


class RawUploadConfig(dg.Config):
    """Where the upload is and whose it is. The inbox sensor and the CLI fill this in; in the launchpad,
    leave `source_path` empty to ingest the newest version's kept upload again."""

    source_path: str = Field(
        default="", description="A .zip or a folder (absolute, or relative to the storage root)"
    )
    user: str = ""
    project: str = ""
    name: str = Field(default="", description="Dataset name; defaults to the file name without .zip")
    max_entries: int = 200_000
    max_total_gb: float = 20.0
    max_compression_ratio: float = 200.0


def content_sha256(source: Path) -> str:
    """sha256 of a zip's bytes, or of a folder's sorted (path, file sha256) list: same bytes, same dataset."""
    if source.is_file():
        return sha256_file(source)
    digest = hashlib.sha256()
    for path in sorted(p for p in source.rglob("*") if p.is_file() and not p.is_symlink()):
        digest.update(f"{path.relative_to(source).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def keep_source_copy(source: Path, target: Path, *, move: bool) -> None:
    """Put the upload into the dataset's `source/`: inbox drops are moved (the inbox then shows only what is
    pending), anything else is copied, never touching the user's original. Atomic either way: a move is one
    rename; a copy goes to a hidden name first, which the next run sweeps away if this process dies."""
    if os.path.lexists(target):
        shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
    if move:
        os.replace(source, target)
        return
    staging = target.with_name(f".{target.name}.incoming")
    try:
        if source.is_dir():
            shutil.copytree(source, staging, symlinks=True)
        else:
            shutil.copyfile(source, staging)
    except BaseException:  # a full disk: drop the partial copy now, it only takes up space
        if staging.is_dir() and not staging.is_symlink():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            staging.unlink(missing_ok=True)
        raise
    os.replace(staging, target)


def kept_copy_of(file_name: str, version_dir: Path) -> Path | None:
    """Where an earlier attempt already put this upload (a retry finds the drop gone from the inbox)."""
    candidate = version_dir / "source" / file_name
    return candidate if candidate.exists() and not candidate.is_symlink() else None


def store_upload(
    dataset: str, source: Path, dataset_dir: Path, limits: ExtractionLimits, *, move: bool
) -> tuple[Path, ExtractionReport, DatasetFormat]:
    """Keep the upload in `source/` of the version's folder, unpack it safely into `files/`, tell its format.

    Raises DatasetError for a bad upload and dg.Failure for a full disk; either way nothing half-written stays.
    """
    kept_source = dataset_dir / "source" / source.name
    with failing_clearly_when_disk_full(dataset_dir, f"keeping the upload of {dataset}"):
        kept_source.parent.mkdir(exist_ok=True)
        if source != kept_source:
            keep_source_copy(source, kept_source, move=move)
    staging = dataset_dir / ".files-new"
    try:
        with failing_clearly_when_disk_full(dataset_dir, f"unpacking {dataset}"):
            if kept_source.is_file():
                report = extract_zip(kept_source, staging, limits)
            else:
                report = copy_folder(kept_source, staging, limits)
        detected = detect_format(staging, shown_as=source.name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_directory(staging, dataset_dir / "files")
    return kept_source, report, detected


@dg.asset(
    partitions_def=dataset_partitions,
    group_name=ASSET_GROUP,
    kinds={"python", "postgres"},
    output_required=False,
    retry_policy=TRANSIENT_ERROR_RETRY,
    description="The upload as a new version of its dataset, unpacked safely under "
    "storage/{user}/{project}/{dataset}/v{N}/files with its format told.",
)
@retry_transient_errors_only
def raw_upload(
    context: dg.AssetExecutionContext,
    config: RawUploadConfig,
    database: DatabaseResource,
    storage: LocalDatasetStorage,
):
    partition_key = context.partition_key
    with database.session() as session:
        existing = repository.find_dataset(session, partition_key)
        latest = repository.latest_version(session, existing.id) if existing else None
        owner = repository.owner_of(session, existing) if existing else None
    if not config.source_path and latest is None:
        raise dg.Failure(
            f"partition {partition_key!r} has no dataset yet: give source_path, user and project",
            allow_retries=False,
        )

    if config.source_path:
        try:
            source = Path(config.source_path)
            source = source if source.is_absolute() else storage.resolve(config.source_path)
            user = check_name(config.user, "user")
            project = check_name(config.project, "project")
            name = check_name(config.name or dataset_name_from_drop(source.name), "dataset")
        except UnsafePathError as error:  # bad input: retrying cannot help
            raise dg.Failure(str(error), allow_retries=False) from error
    else:
        assert existing is not None and latest is not None and owner is not None
        user, project = owner
        name = existing.name
        source = storage.resolve(latest.source_path)
    if existing is not None and existing.name != name:
        raise dg.Failure(
            f"partition {partition_key!r} holds dataset {existing.name!r}, not {name!r}", allow_retries=False
        )
    number = (latest.number if latest else 0) + 1
    version_dir = storage.version_dir(user, project, name, number, create=False)  # made once not a duplicate
    if not source.exists():  # a retry: the first attempt moved the drop into the version's folder already
        source = kept_copy_of(source.name, version_dir) or source
    if not source.exists() or source.is_symlink():
        raise dg.Failure(
            f"{source}: the upload does not exist (or is a symlink); drop it again", allow_retries=False
        )

    context.log.info(f"hashing {source}")
    sha256 = content_sha256(source)
    with database.session() as session:
        project_row = repository.get_or_create_project(session, user, project)
        repository.lock_content(session, project_row.id, sha256)
        duplicate = repository.duplicate_of(session, project_row.id, sha256)
        if duplicate is not None:
            twin, twin_version = duplicate
            same = twin.partition_key == partition_key
            message = (
                f"{source.name} has the same content (sha256 {sha256[:12]}…) as "
                + (
                    f"version {twin_version.number} of this dataset"
                    if same
                    else f"dataset {twin.partition_key!r}"
                )
                + f" of {user}/{project}; it was not processed again."
            )
            context.log.warning(message)
            storage.reject_drop(source, message)
            return  # no materialisation: the rest of the graph is skipped for this partition
        dataset = repository.find_dataset(session, partition_key)
        if dataset is None:
            dataset = Dataset(project_id=project_row.id, name=name, partition_key=partition_key)
            session.add(dataset)
            session.flush()
        repository.set_status(session, dataset, "pending")
        dataset_id = dataset.id

    version_dir = storage.version_dir(user, project, name, number)
    clean_up_interrupted_writes(context, version_dir)
    limits = ExtractionLimits(
        max_entries=config.max_entries,
        max_total_bytes=int(config.max_total_gb * 1024**3),
        max_compression_ratio=config.max_compression_ratio,
    )
    try:
        kept_source, report, detected = store_upload(
            partition_key, source, version_dir, limits, move=source.is_relative_to(storage.inbox_dir())
        )
    except (DatasetError, dg.Failure) as error:  # bad data or a full disk: say so on the dataset too
        reason = error.description if isinstance(error, dg.Failure) else str(error)
        with database.session() as session:
            repository.set_status(session, session.get(Dataset, dataset_id), "failed", reason)
        if isinstance(error, dg.Failure):
            raise
        # The message is the whole story; the parser's own traceback would only repeat it
        raise dg.Failure(
            description=f"Dataset {partition_key}: {reason.rstrip('.')}. Nothing was validated. Fix the upload "
            "and drop it into the inbox again (or `dataset-pipeline submit` it); the README's layout table "
            "shows what each format needs.",
            allow_retries=False,
        ) from None
    with failing_clearly_when_disk_full(version_dir, f"storing the files of {partition_key}"):
        manifest = storage.intern_tree(version_dir / "files")
    reused = len(manifest) - len({sha for _, sha, _ in manifest})

    with database.session() as session:
        dataset = session.get(Dataset, dataset_id)
        parent = repository.latest_version(session, dataset_id)
        version = repository.add_version(
            session,
            dataset,
            parent,
            cause="upload",
            run_id=context.run.run_id,
            created_by=user,
            upload_sha256=sha256,
            source_path=storage.relative(kept_source),
            source_kind="zip" if kept_source.is_file() else "folder",
            files_path=storage.relative(version_dir / "files"),
            format=str(detected),
            file_count=report.files_written,
            total_bytes=report.bytes_written,
        )
        new_blobs = repository.add_version_files(session, version, manifest)
        repository.set_status(session, dataset, "ingested")
        number = version.number

    for issue in report.issues:
        context.log.warning(f"{issue.location()}: {issue.message}")
    yield dg.MaterializeResult(
        metadata={
            "dataset": partition_key,
            "version": number,
            "owner": f"{user}/{project}",
            "format": str(detected),
            "files": report.files_written,
            "bytes": dg.MetadataValue.int(report.bytes_written),
            "skipped_files": len(report.issues) + report.junk_skipped,
            "new_contents": new_blobs,
            "contents_already_stored": len(manifest) - new_blobs - reused,
            "sha256": sha256,
            "stored_at": dg.MetadataValue.path(str(version_dir / "files")),
        },
        data_version=dg.DataVersion(sha256),
    )
