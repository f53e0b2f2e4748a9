"""Bulk writes through PostgreSQL's COPY: ~10x faster than executemany, ~100x faster than one ORM object a row.

Rows are streamed as CSV in chunks, so memory stays flat however many labels a dataset has.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from psycopg2 import sql

_CHUNK_ROWS = 50_000


def _csv_field(value: Any) -> str:
    if value is None:
        return ""  # unquoted empty is NULL in COPY's CSV format
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite value {value!r} cannot be stored")
        return repr(value)
    if isinstance(value, dict | list):
        value = json.dumps(value, sort_keys=True, separators=(",", ":"))
    text = str(value)
    return '"' + text.replace('"', '""') + '"'


def copy_rows(
    connection: sa.Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """COPY `rows` into `table` inside the connection's current transaction; returns the number of rows."""
    raw = connection.connection.driver_connection  # the psycopg2 connection of this transaction
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )  # names quoted as identifiers; every value travels as CSV data, never as SQL
    total = 0
    buffer = io.StringIO()
    pending = 0
    with raw.cursor() as cursor:
        for row in rows:
            buffer.write(",".join(_csv_field(value) for value in row))
            buffer.write("\n")
            pending += 1
            if pending >= _CHUNK_ROWS:
                buffer.seek(0)
                cursor.copy_expert(statement, buffer)
                total += pending
                buffer, pending = io.StringIO(), 0
        if pending:
            buffer.seek(0)
            cursor.copy_expert(statement, buffer)
            total += pending
    return total
