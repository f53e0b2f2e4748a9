"""What the nightly re-validation reports when image files went missing or changed since the last validation."""

from __future__ import annotations

from dataset_pipeline.domain.model import Severity
from dataset_pipeline.domain.revalidation import FILE_CHANGED, FILE_MISSING, changes_since

SHA_A = "a" * 64
SHA_B = "b" * 64
SHA_C = "c" * 64


def test_unchanged_files_report_nothing() -> None:
    hashes = {"images/a.jpg": SHA_A, "images/b.jpg": SHA_B}
    assert changes_since(hashes, dict(hashes)) == []
    assert changes_since({}, {}) == []


def test_new_files_on_disk_report_nothing() -> None:
    assert changes_since({"a.jpg": SHA_A}, {"a.jpg": SHA_A, "new.jpg": SHA_B}) == []


def test_missing_file_is_an_error_naming_the_file() -> None:
    [issue] = changes_since({"images/a.jpg": SHA_A, "images/b.jpg": SHA_B}, {"images/b.jpg": SHA_B})
    assert issue.severity is Severity.ERROR
    assert issue.code == FILE_MISSING
    assert issue.file == "images/a.jpg"
    assert issue.location() == "images/a.jpg"
    assert "gone from disk" in issue.message and SHA_A[:12] in issue.message
    assert "restore it or upload the dataset again" in issue.message


def test_changed_file_is_a_warning_naming_the_file_and_image() -> None:
    [issue] = changes_since(
        {"images/a.jpg": SHA_A, "images/b.jpg": SHA_B}, {"images/a.jpg": SHA_C, "images/b.jpg": SHA_B}
    )
    assert issue.severity is Severity.WARNING
    assert issue.code == FILE_CHANGED
    assert issue.file == "images/a.jpg"
    assert issue.image == "images/a.jpg"
    assert f"{SHA_A[:12]}… -> {SHA_C[:12]}…" in issue.message


def test_every_finding_in_path_order() -> None:
    previous = {"c.jpg": SHA_C, "a.jpg": SHA_A, "b.jpg": SHA_B, "d.jpg": SHA_A}
    current = {"a.jpg": SHA_B, "d.jpg": SHA_A, "e.jpg": SHA_C}
    issues = changes_since(previous, current)
    assert [(issue.file, issue.severity, issue.code) for issue in issues] == [
        ("a.jpg", Severity.WARNING, FILE_CHANGED),
        ("b.jpg", Severity.ERROR, FILE_MISSING),
        ("c.jpg", Severity.ERROR, FILE_MISSING),
    ]


def test_everything_missing() -> None:
    previous = {f"{index}.jpg": SHA_A for index in range(5)}
    issues = changes_since(previous, {})
    assert [issue.file for issue in issues] == sorted(previous)
    assert {issue.severity for issue in issues} == {Severity.ERROR}
