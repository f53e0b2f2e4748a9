"""Readable, safe names for datasets: Dagster partition keys and storage folder names."""

from __future__ import annotations

import hashlib
import re

PARTITION_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_UNSAFE = re.compile(r"[^a-z0-9_-]+")


def _slug(text: str) -> str:
    return _UNSAFE.sub("-", text.lower()).strip("-_") or "x"


def partition_key_for(user: str, project: str, name: str, version: int = 1) -> str:
    """`user-project-name[-vN]`, lower case; a short hash suffix keeps it unique when slugging lost information."""
    raw = f"{user}-{project}-{name}" + (f"-v{version}" if version > 1 else "")
    key = "-".join(_slug(part) for part in (user, project, name)) + (f"-v{version}" if version > 1 else "")
    if key != raw or len(key) > 64:
        suffix = hashlib.sha256(raw.encode()).hexdigest()[:6]
        key = f"{key[: 64 - 7].rstrip('-_')}-{suffix}"
    assert PARTITION_KEY.fullmatch(key), key
    return key


def dataset_folder_name(name: str, version: int) -> str:
    return name if version == 1 else f"{name}-v{version}"


def dataset_name_from_drop(file_name: str) -> str:
    """`cars.zip` -> `cars`; folders keep their name."""
    return file_name[:-4] if file_name.lower().endswith(".zip") else file_name
