"""validated_dataset: parse every label, decode every image, apply the rules, record one verdict per version.

A version is validated once. Validating it again (the nightly schedule) only compares its images on disk with
what was recorded, hashing only files whose size or modification time moved and decoding only files whose
bytes changed; when nothing changed, no row is written, and when something did, a new version records it.
"""

import dataclasses
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from dataset_pipeline.assets.common import (
    ASSET_GROUP,
    CPU_POOL,
    TRANSIENT_ERROR_RETRY,
    current_version,
    progress_logger,
    retry_transient_errors_only,
    rounded,
    version_metadata,
)
from dataset_pipeline.assets.ingest import raw_upload
from dataset_pipeline.db import repository
from dataset_pipeline.db.models import Dataset, DatasetVersion, Image, ImageCheck, VersionValidation
from dataset_pipeline.domain.image_checks import check_images
from dataset_pipeline.domain.model import DatasetFormat, ImageFacts, Issue, Severity, VocPixelOrigin
from dataset_pipeline.domain.revalidation import FILE_CHANGED, FILE_MISSING, changes_since
from dataset_pipeline.domain.safe_extract import sha256_file
from dataset_pipeline.domain.validation import (
    DUPLICATE_CODES,
    GateDecision,
    ValidatedImage,
    decide_for,
    decide_gate,
    duplicate_issues,
    summarize_markdown,
    validate,
)
from dataset_pipeline.formats import parse_dataset
from dataset_pipeline.partitions import dataset_partitions, per_dataset_check
from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import LocalDatasetStorage

USABLE_CHECK = "usable_images"
QUARANTINE_CHECK = "quarantine"
#: Quarantined images named in the quarantine check's metadata; `dataset-pipeline report` lists all problems.
QUARANTINED_SHOWN = 10
#: Findings listed in the materialisation's table; all of them are in `dataset_validations`.
ISSUES_SHOWN = 200
#: How many findings the message of a failed gate quotes; `dataset-pipeline report` prints them all.
PROBLEMS_IN_FAILURE = 3


class ValidationConfig(dg.Config):
    policy: Literal["quarantine", "strict"] = Field(
        default="quarantine",
        description="quarantine: images with any error are excluded whole; strict: any error fails the dataset",
    )
    max_error_share: float = Field(
        default=0.5, description="Fail when more than this share of images is quarantined or missing"
    )
    near_duplicate_distance: int = Field(
        default=4, description="dHash Hamming distance counted as a near-duplicate"
    )
    workers: int = Field(default=0, description="Image-check processes; 0 = one per CPU")
    voc_pixel_origin: int | None = Field(
        default=None,
        ge=0,
        le=1,
        description="How VOC <bndbox> numbers are read: 0 = the box's pixel edges as written (CVAT, Datumaro, "
        "Roboflow), 1 = the devkit's 1-based pixels; empty = the project's default (`dataset-pipeline "
        "project --voc-pixel-origin`)",
    )


@dg.asset(
    partitions_def=dataset_partitions,
    deps=[raw_upload],
    group_name=ASSET_GROUP,
    pool=CPU_POOL,
    kinds={"python", "postgres"},
    output_required=False,
    check_specs=[
        per_dataset_check(
            USABLE_CHECK,
            "validated_dataset",
            "Stops the graph for this dataset when nothing usable is left or too many images "
            "were quarantined or lost.",
        ),
        per_dataset_check(
            QUARANTINE_CHECK,
            "validated_dataset",
            "Warns when any image of the dataset was quarantined, so a partial dataset is not a plain "
            "success; it does not stop the graph.",
            blocking=False,
        ),
    ],
    retry_policy=TRANSIENT_ERROR_RETRY,
    description="Every label parsed into the canonical model and every image decoded; problems recorded with "
    "file and line; bad images quarantined whole; one verdict per version.",
)
@retry_transient_errors_only
def validated_dataset(
    context: dg.AssetExecutionContext,
    config: ValidationConfig,
    database: DatabaseResource,
    storage: LocalDatasetStorage,
):
    with database.session() as session:
        dataset, version = current_version(session, context.partition_key)
        verdict = repository.validation_of(session, version.id)
        project_origin = repository.voc_pixel_origin_of(session, dataset)
    root = storage.resolve(version.files_path)
    if verdict is None:
        origin = project_origin if config.voc_pixel_origin is None else config.voc_pixel_origin
        events = _validate_new_version(context, config, database, dataset, version, root, origin)
    else:
        events = _revalidate(context, config, database, dataset, version, verdict, root)
    gate: dg.AssetCheckResult | None = None
    for event in events:
        if isinstance(event, dg.AssetCheckResult) and event.check_name == USABLE_CHECK:
            gate = event
        yield event
    if gate is not None and not gate.passed:
        # Failed here rather than by Dagster's blocking-check error, whose message names only the check
        raise _gate_failure(database, gate.metadata["dataset"].value, gate.metadata["version"].value)


def _gate_failure(database: DatabaseResource, key: str, number: int) -> dg.Failure:
    """What a user reads when the gate stops the graph: which dataset, why, the first problems by file and
    line, and what to do."""
    with database.session() as session:
        dataset = repository.dataset_by_partition(session, key)
        version = repository.version_of(session, dataset, number)
        verdict = repository.validation_of(session, version.id)
        first = [
            repository.issue_of(row)
            for row in repository.findings_of(session, version.id, PROBLEMS_IN_FAILURE)
        ]
    reason = (verdict.reason if verdict is not None else None) or "no reason recorded"
    problems = "; ".join(f"{issue.location()}: {issue.message}" for issue in first)
    return dg.Failure(
        f"Dataset {key} version {number} did not pass validation: {reason.rstrip('.')}. "
        + (f"First problems: {problems}. " if problems else "")
        + "Fix the files and submit the dataset again, which makes a new version; "
        f"`dataset-pipeline report {key} --version {number}` lists every problem by file and line.",
        allow_retries=False,
    )


def _validate_new_version(
    context: dg.AssetExecutionContext,
    config: ValidationConfig,
    database: DatabaseResource,
    dataset: Dataset,
    version: DatasetVersion,
    root: Path,
    voc_pixel_origin: VocPixelOrigin,
):
    carried = _carry_over(context, config, database, dataset, version, root, voc_pixel_origin)
    if carried is not None:
        yield from carried
        return
    parsed = parse_dataset(root, voc_pixel_origin=voc_pixel_origin)
    paths = [image.path for image in parsed.images]
    context.log.info(
        f"{parsed.format} ({parsed.layout}): {len(paths)} images, {len(parsed.class_names)} classes"
    )
    with database.session() as session:
        hashes = repository.file_hashes(session, version.id)
        keys = {path: (hashes[path], _suffix(path)) for path in paths if path in hashes}
        cached = repository.cached_checks(session, keys.values())
    unchecked = [path for path in paths if keys.get(path) not in cached]
    context.log.info(
        f"{len(paths) - len(unchecked)} images were checked before (same bytes); decoding {len(unchecked)}"
    )
    fresh = check_images(
        root, unchecked, workers=config.workers or None, progress=progress_logger(context, "image checks")
    )
    facts = {fact.path: fact for fact in fresh}
    facts.update({path: _facts_from_check(path, cached[keys[path]]) for path in paths if path not in facts})
    outcome = validate(
        parsed,
        facts,
        policy=config.policy,
        near_duplicate_distance=config.near_duplicate_distance,
    )
    rows = [_image_row(image, root) for image in outcome.images if image.facts is not None]
    decision = decide_for(outcome, config.max_error_share)
    summary = _summary(decision, outcome.issues)
    summary["near_duplicate_distance"] = config.near_duplicate_distance
    if parsed.format is DatasetFormat.VOC:
        summary["voc_pixel_origin"] = voc_pixel_origin
    record = repository.Verdict(
        passed=decision.passed,
        reason=decision.reason,
        summary=summary,
        content_hash=None,
        class_names=list(outcome.class_names),
        class_info=list(parsed.class_info),
    )
    with database.session() as session:
        repository.add_checks(
            session, (_check_row(f) for f in fresh if f.sha256 == keys.get(f.path, ("",))[0])
        )
        content_hash = repository.store_validation(
            session, version, rows, outcome.issues, record, context.run.run_id
        )
        _set_status(session, dataset, decision)
    yield _materialization(
        dataset,
        version,
        decision,
        record,
        content_hash,
        outcome.issues,
        summarize_markdown(outcome, decision),
        decoded=len(fresh),
        checked_before=len(paths) - len(unchecked),
    )
    yield from _check_results(database, dataset, version, decision)


def _carry_over(
    context: dg.AssetExecutionContext,
    config: ValidationConfig,
    database: DatabaseResource,
    dataset: Dataset,
    version: DatasetVersion,
    root: Path,
    voc_pixel_origin: VocPixelOrigin,
) -> list | None:
    """An upload that differs from the upload before it only in the bytes of some images, each still
    decoding cleanly at the size its boxes were checked against: then every label, box, quarantine decision
    and finding but those about the changed bytes is the parent's, so they are copied inside the database and
    only the changed images are checked (a re-export fixing a few pictures validates in a fraction of the
    first time). None when anything else changed; the version is then validated in full."""
    with database.session() as session:
        parent = session.get(DatasetVersion, version.parent_id) if version.parent_id else None
        if parent is None or parent.cause != "upload":
            return None
        if (parent.format, parent.layout) != (version.format, version.layout):
            return None
        verdict = repository.validation_of(session, parent.id)
        if verdict is None or not _same_settings(verdict.summary, config, version.format, voc_pixel_origin):
            return None
        now, before = repository.file_hashes(session, version.id), repository.file_hashes(session, parent.id)
        stored = repository.stored_facts(session, parent.id)
        changed = sorted(path for path, sha in now.items() if before.get(path) != sha)
        if now.keys() != before.keys() or any(
            path not in stored or stored[path].quarantined for path in changed
        ):
            return None  # a file added or removed, or a label or class file changed: labels may differ
        old_checks = repository.cached_checks(session, [(before[path], _suffix(path)) for path in changed])
        keys = {path: (now[path], _suffix(path)) for path in changed}
        cached = repository.cached_checks(session, keys.values())
    if len(old_checks) != len(changed):
        return None
    fresh = check_images(root, [path for path in changed if keys[path] not in cached], workers=1)
    facts = {fact.path: fact for fact in fresh}
    facts.update({path: _facts_from_check(path, cached[keys[path]]) for path in changed if path not in facts})
    for path in changed:
        fact, old = facts[path], stored[path]
        if (
            not fact.usable
            or fact.sha256 != now[path]
            or (fact.width, fact.height) != (old.width, old.height)
        ):
            return None  # it no longer decodes, or its boxes were checked against another size
    everyone = [
        facts.get(path) or ImageFacts(path, old.sha256, old.size_bytes, None, 0, 0, None, 1, old.dhash)
        for path, old in stored.items()
    ]
    outdated = [
        (path, code, message)
        for path in changed
        for _, code, message in old_checks[(before[path], _suffix(path))].issues
    ]
    added = [
        *(issue for path in changed for issue in facts[path].issues),
        *duplicate_issues(everyone, config.near_duplicate_distance),
    ]
    decision = _decision_of(verdict)
    run_id = context.run.run_id
    with database.session() as session:
        repository.add_checks(session, (_check_row(fact) for fact in fresh))
        copied = repository.copy_images_with_labels(
            session, parent, version, [(facts[path], _mtime_ns(root / path)) for path in changed]
        )
        repository.copy_findings(
            session, parent, version, added, run_id, without_codes=DUPLICATE_CODES, without=outdated
        )
        summary = {**verdict.summary, **_finding_counts(repository.finding_counts(session, version.id))}
        record = repository.Verdict(
            passed=verdict.passed,
            reason=verdict.reason,
            summary=summary,
            content_hash=None,
            class_names=list(verdict.class_names),
            class_info=repository.class_info_of(verdict),
        )
        content_hash = repository.add_verdict(session, version, record, run_id)
        _set_status(session, dataset, decision)
        shown = repository.first_findings(session, version.id, ISSUES_SHOWN)
    context.log.info(
        f"{dataset.partition_key} version {version.number}: {len(changed)} of {copied} images have new "
        f"bytes since version {parent.number}, each decoding at its size; the rest is version "
        f"{parent.number}'s, copied ({len(fresh)} decoded)"
    )
    markdown = (
        decision.headline()
        + f"\n\nThe files are version {parent.number}'s but for the bytes of {len(changed)} images, which "
        f"still decode at the size their boxes were checked against: labels, boxes and decisions are "
        f"version {parent.number}'s; {len(fresh)} images were decoded."
    )
    return [
        _materialization(
            dataset,
            version,
            decision,
            record,
            content_hash,
            shown,
            markdown,
            decoded=len(fresh),
            checked_before=copied - len(fresh),
            carried_over_from=parent.number,
        ),
        *_check_results(database, dataset, version, decision),
    ]


def _same_settings(summary: dict, config: ValidationConfig, fmt: str | None, voc_pixel_origin: int) -> bool:
    """Whether the parent was validated with the rules this run would apply."""
    same = (
        summary.get("policy") == config.policy
        and summary.get("max_error_share") == config.max_error_share
        and summary.get("near_duplicate_distance") == config.near_duplicate_distance
    )
    return same and (fmt != DatasetFormat.VOC or summary.get("voc_pixel_origin") == voc_pixel_origin)


def _revalidate(
    context: dg.AssetExecutionContext,
    config: ValidationConfig,
    database: DatabaseResource,
    dataset: Dataset,
    version: DatasetVersion,
    verdict: VersionValidation,
    root: Path,
):
    """Compare the version's images on disk with its rows; a change becomes a new version, nothing else."""
    with database.session() as session:
        stored = repository.load_images(session, version.id, usable_only=False)
        records = repository.image_records(session, version.id)
    current, hashed = _hashes_on_disk(root, stored)
    drift = changes_since({image.relative_path: image.sha256 for image in stored}, current)
    decision = _decision_of(verdict)
    if not drift:
        context.log.info(
            f"re-validated {dataset.partition_key} version {version.number}: {len(stored)} images unchanged "
            f"({hashed} hashed because their size or time moved)"
        )
        yield dg.AssetObservation(
            asset_key=context.asset_key,
            partition=context.partition_key,
            metadata={
                **version_metadata(dataset, version),
                "revalidated": "unchanged",
                "hashed": hashed,
                "data_version": verdict.content_hash,
            },
        )
        yield from _check_results(database, dataset, version, decision)
        return

    changed = sorted(issue.file for issue in drift if issue.code == FILE_CHANGED)
    refreshed = {fact.path: fact for fact in check_images(root, changed, workers=config.workers or None)}
    rows, extra = _rows_after_drift(root, stored, records, refreshed, drift)
    missing = sum(issue.code == FILE_MISSING for issue in drift)
    quarantined = sum(row.quarantined for row in rows)
    policy = verdict.summary.get("policy", config.policy)
    decision = decide_gate(
        images=len(rows),
        usable=sum(row.usable for row in rows),
        quarantined=quarantined,
        missing=missing,
        policy=policy,
        max_error_share=verdict.summary.get("max_error_share", config.max_error_share),
        strict_error=policy == "strict" and bool(quarantined),
    )
    issues = [*drift, *extra]
    summary = _summary(decision, issues)
    if "voc_pixel_origin" in verdict.summary:
        summary["voc_pixel_origin"] = verdict.summary["voc_pixel_origin"]
    record = repository.Verdict(
        passed=decision.passed,
        reason=decision.reason,
        summary=summary,
        content_hash=None,
        class_names=list(verdict.class_names),
        class_info=repository.class_info_of(verdict),
    )
    with database.session() as session:
        dataset = session.get(Dataset, dataset.id)
        parent = session.get(DatasetVersion, version.id)
        new = repository.add_version(
            session,
            dataset,
            parent,
            cause="revalidation",
            run_id=context.run.run_id,
            created_by="revalidation",
        )
        repository.insert_images_with_labels(session, new, rows)
        repository.copy_findings(session, parent, new, issues, context.run.run_id)
        content_hash = repository.add_verdict(session, new, record, context.run.run_id)
        _set_status(session, dataset, decision)
    context.log.warning(
        f"{dataset.partition_key}: {missing} images missing and {len(changed)} changed since version "
        f"{version.number}; recorded as version {new.number}"
    )
    markdown = (
        decision.headline()
        + "\n\n"
        + "\n".join(
            f"- {issue.severity} `{issue.code}` at `{issue.location()}`: {issue.message}"
            for issue in issues[:20]
        )
    )
    yield _materialization(dataset, new, decision, record, content_hash, issues, markdown)
    yield from _check_results(database, dataset, new, decision)


def _hashes_on_disk(root: Path, stored: list[repository.StoredImage]) -> tuple[dict[str, str], int]:
    """relative path -> sha256 of what is on disk now; a file whose size and mtime match is not read."""
    current: dict[str, str] = {}
    hashed = 0
    for image in stored:
        path = root / image.relative_path
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if stat.st_size == image.size_bytes and stat.st_mtime_ns == image.mtime_ns:
            current[image.relative_path] = image.sha256
        else:
            current[image.relative_path] = sha256_file(path)
            hashed += 1
    return current, hashed


def _rows_after_drift(
    root: Path,
    stored: list[repository.StoredImage],
    records: dict[int, Image],
    refreshed: dict[str, ImageFacts],
    drift: list[Issue],
) -> tuple[list[repository.ImageRow], list[Issue]]:
    """The parent's images and boxes, without what is gone; a changed image whose size no longer fits its
    boxes, or that no longer decodes, is quarantined (its labels were drawn on other bytes)."""
    missing = {issue.file for issue in drift if issue.code == FILE_MISSING}
    rows: list[repository.ImageRow] = []
    extra: list[Issue] = []
    for image in stored:
        if image.relative_path in missing:
            continue
        fact = refreshed.get(image.relative_path)
        row = repository.ImageRow.taken_over(records[image.id], image.boxes)
        if fact is not None:
            fits = fact.usable and (fact.width, fact.height) == (image.width, image.height)
            row = dataclasses.replace(
                row,
                sha256=fact.sha256,
                size_bytes=fact.size_bytes,
                mtime_ns=_mtime_ns(root / image.relative_path),
                format=fact.format,
                mode=fact.mode,
                width=fact.width or image.width,
                height=fact.height or image.height,
                exif_orientation=fact.exif_orientation,
                dhash=fact.dhash,
                quarantined=image.quarantined or not fits,
            )
            extra.extend(fact.issues)
            if not fits and fact.usable:
                extra.append(
                    Issue(
                        Severity.ERROR,
                        "image.size_changed",
                        image.relative_path,
                        f"is {fact.width}x{fact.height} now but its boxes were drawn on {image.width}x"
                        f"{image.height}; it is quarantined: upload the dataset again with matching labels",
                        image=image.relative_path,
                    )
                )
        rows.append(row)
    return rows, extra


def _image_row(image: ValidatedImage, root: Path) -> repository.ImageRow:
    facts = image.facts
    assert facts is not None
    return repository.ImageRow(
        relative_path=image.path,
        sha256=facts.sha256,
        size_bytes=facts.size_bytes,
        mtime_ns=_mtime_ns(root / image.path),
        format=facts.format,
        mode=facts.mode,
        width=facts.width,
        height=facts.height,
        exif_orientation=facts.exif_orientation,
        dhash=facts.dhash,
        label_state=str(image.label_state),
        source_split=image.split,
        quarantined=image.quarantined,
        boxes=image.boxes,
        source_id=image.source_id,
    )


def _suffix(path: str) -> str:
    return Path(path).suffix.lower()[:16]


def _check_row(fact: ImageFacts) -> dict:
    """An image check as the content-addressed cache keeps it: facts and findings, without the path."""
    return {
        "sha256": fact.sha256,
        "suffix": _suffix(fact.path),
        "size_bytes": fact.size_bytes,
        "format": fact.format,
        "mode": fact.mode,
        "width": fact.width,
        "height": fact.height,
        "exif_orientation": fact.exif_orientation,
        "dhash": fact.dhash,
        "issues": [[str(issue.severity), issue.code, issue.message] for issue in fact.issues],
    }


def _facts_from_check(path: str, check: ImageCheck) -> ImageFacts:
    return ImageFacts(
        path=path,
        sha256=check.sha256,
        size_bytes=check.size_bytes,
        format=check.format,
        width=check.width,
        height=check.height,
        mode=check.mode,
        exif_orientation=check.exif_orientation,
        dhash=check.dhash,
        issues=tuple(
            Issue(Severity(severity), code, path, message, image=path)
            for severity, code, message in check.issues
        ),
    )


def _mtime_ns(path: Path) -> int | None:
    """Recorded beside the hash, so the next re-validation reads only files whose time moved."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _finding_counts(findings: Iterable[tuple[str, str, int]]) -> dict:
    """A summary's `by_severity` and `by_code`, from (severity, code, count) of the findings."""
    by_severity: Counter[str] = Counter()
    by_code: Counter[str] = Counter()
    for severity, code, count in findings:
        by_severity[severity] += count
        by_code[code] += count
    return {
        "by_severity": {str(severity): by_severity.get(str(severity), 0) for severity in Severity},
        "by_code": dict(sorted(by_code.items())),
    }


def _summary(decision: GateDecision, issues: list[Issue]) -> dict:
    return {
        "images": decision.images,
        "usable_images": decision.usable,
        "quarantined": decision.quarantined,
        "missing_since_last_validation": decision.missing,
        "error_share": decision.error_share,
        "max_error_share": decision.max_error_share,
        "policy": decision.policy,
        **_finding_counts((str(issue.severity), issue.code, 1) for issue in issues),
    }


def _decision_of(verdict: VersionValidation) -> GateDecision:
    """The stored verdict read back, so an unchanged re-validation reports exactly what was decided."""
    summary = verdict.summary
    return GateDecision(
        passed=verdict.passed,
        reason=verdict.reason,
        images=summary.get("images", 0),
        usable=summary.get("usable_images", 0),
        quarantined=summary.get("quarantined", 0),
        missing=summary.get("missing_since_last_validation", 0),
        error_share=summary.get("error_share", 0.0),
        policy=summary.get("policy", "quarantine"),
        max_error_share=summary.get("max_error_share", 0.5),
    )


def _set_status(session, dataset: Dataset, decision: GateDecision) -> None:
    repository.set_status(
        session,
        session.get(Dataset, dataset.id),
        "validated" if decision.passed else "invalid",
        None if decision.passed else decision.reason,
    )


def _materialization(
    dataset: Dataset,
    version: DatasetVersion,
    decision: GateDecision,
    record: repository.Verdict,
    content_hash: str,
    issues: list[Issue],
    markdown: str,
    **extra: int,
) -> dg.MaterializeResult:
    by_severity = record.summary.get("by_severity", {})
    return dg.MaterializeResult(
        metadata={
            **version_metadata(dataset, version),
            "passed": decision.passed,
            "images": decision.images,
            "usable_images": decision.usable,
            "quarantined": decision.quarantined,
            "missing_since_last_validation": decision.missing,
            "errors": by_severity.get(str(Severity.ERROR), 0),
            "warnings": by_severity.get(str(Severity.WARNING), 0),
            "classes": len(record.class_names),
            "summary": dg.MetadataValue.md(markdown),
            "report": issues_table(issues),
            **extra,
        },
        data_version=dg.DataVersion(content_hash),
    )


def _check_results(
    database: DatabaseResource, dataset: Dataset, version: DatasetVersion, decision: GateDecision
) -> list[dg.AssetCheckResult]:
    """The gate (blocking) and the quarantine warning, both from the one decision."""
    with database.session() as session:
        first = (
            repository.quarantined_paths(session, version.id, QUARANTINED_SHOWN)
            if decision.quarantined
            else []
        )
    quarantine = dg.AssetCheckResult(
        check_name=QUARANTINE_CHECK,
        passed=decision.quarantined == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            **version_metadata(dataset, version),
            "quarantined": decision.quarantined,
            "images": decision.images,
            "first_quarantined": dg.MetadataValue.json(first),
        },
        description=None
        if decision.quarantined == 0
        else f"{decision.quarantined} of {decision.images} images of {dataset.partition_key} version "
        f"{version.number} are quarantined and left out of training; `dataset-pipeline report "
        f"{dataset.partition_key} --version {version.number}` lists why",
    )
    return [_check_result(dataset, version, decision), quarantine]


def _check_result(dataset: Dataset, version: DatasetVersion, decision: GateDecision) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=USABLE_CHECK,
        passed=decision.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            **version_metadata(dataset, version),
            "usable_images": decision.usable,
            "error_share": rounded(decision.error_share),
        },
        description=None
        if decision.passed
        else f"dataset {dataset.partition_key} version {version.number} is not usable: {decision.reason}",
    )


def issues_table(issues, limit: int = ISSUES_SHOWN) -> dg.TableMetadataValue:
    """The first problems as a table the UI can sort; the full report is in `dataset_validations`."""
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn("severity", "string"),
            dg.TableColumn("code", "string"),
            dg.TableColumn("where", "string"),
            dg.TableColumn("message", "string"),
        ]
    )
    ordered = sorted(issues, key=lambda i: (i.severity != Severity.ERROR, i.severity != Severity.WARNING))
    records = [
        dg.TableRecord(
            {"severity": str(i.severity), "code": i.code, "where": i.location(), "message": i.message}
        )
        for i in ordered[:limit]
    ]
    return dg.MetadataValue.table(records, schema)
