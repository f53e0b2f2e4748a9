"""Throwaway databases for tests: created on the server under test, dropped afterwards."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from dataset_pipeline.embedded_postgres import drop_database, ensure_database, normalize_url


@contextlib.contextmanager
def fresh_database(server_url: str | None, prefix: str = "dp_dev") -> Iterator[str | None]:
    """A new database on `server_url`'s server, dropped afterwards; None in, None out (embedded)."""
    if not server_url:
        yield None
        return
    server_url = normalize_url(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    url = ensure_database(server_url, name)
    try:
        yield url
    finally:
        drop_database(server_url, name)
