"""Readable, safe names for datasets: Dagster partition keys and storage folder names."""

from __future__ import annotations

import hashlib
import re

PARTITION_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_UNSAFE = re.compile(r"[^a-z0-9_-]+")
#: Names that come from outside (user, project, dataset) must match this before they touch a path.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
RESERVED_NAMES = frozenset({"inbox", "_rejected", "_processing", "blobs"})


def name_problem(value: object, kind: str) -> str | None:
    """Why `value` cannot be a user, project or dataset name, or None when it can."""
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value) or ".." in value:
        return (
            f"{kind} name {value!r} is not allowed: use 1-64 characters from letters, digits, '_', '-', '.', "
            "starting with a letter or digit, without '..'"
        )
    if value.lower() in RESERVED_NAMES:
        return f"{kind} name {value!r} is reserved"
    return None


def _slug(text: str) -> str:
    return _UNSAFE.sub("-", text.lower()).strip("-_") or "x"


def partition_key_for(user: str, project: str, name: str) -> str:
    """`user-project-name`, lower case; a short hash suffix keeps it unique when slugging lost information.

    Every version of a dataset shares its key: the partition's materialisations are the version history.
    """
    raw = f"{user}-{project}-{name}"
    key = "-".join(_slug(part) for part in (user, project, name))
    if key != raw or len(key) > 64:
        suffix = hashlib.sha256(raw.encode()).hexdigest()[:6]
        key = f"{key[: 64 - 7].rstrip('-_')}-{suffix}"
    assert PARTITION_KEY.fullmatch(key), key
    return key


def dataset_name_from_drop(file_name: str) -> str:
    """`cars.zip` -> `cars`; folders keep their name."""
    return file_name[:-4] if file_name.lower().endswith(".zip") else file_name
