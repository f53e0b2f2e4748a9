"""What changed on disk since a dataset was last validated: the nightly re-validation's findings."""

from __future__ import annotations

from collections.abc import Mapping

from dataset_pipeline.domain.model import Issue, Severity

FILE_MISSING = "file-missing-since-validation"
FILE_CHANGED = "file-changed-since-validation"


def changes_since(previous: Mapping[str, str], current: Mapping[str, str]) -> list[Issue]:
    """Compare image sha256s (relative path -> sha256) of the last validation with what is on disk now.

    A missing image is an error (the dataset lost data); a changed one a warning (it was checked again).
    """
    issues = []
    for path in sorted(previous):
        if path not in current:
            issues.append(
                Issue(
                    Severity.ERROR,
                    FILE_MISSING,
                    path,
                    f"was part of the dataset (sha256 {previous[path][:12]}…) and is gone from disk; "
                    "restore it or upload the dataset again",
                )
            )
        elif current[path] != previous[path]:
            issues.append(
                Issue(
                    Severity.WARNING,
                    FILE_CHANGED,
                    path,
                    f"changed on disk since the last validation (sha256 {previous[path][:12]}… -> "
                    f"{current[path][:12]}…); it was checked again",
                    image=path,
                )
            )
    return issues
