"""SQL only through bound parameters.

Statically: no call of `text`, `execute`, `exec_driver_sql` or `copy_expert` anywhere in `dataset_pipeline/` takes
SQL built by string formatting (f-strings, `%`, `+`, `.format()`), directly or through a local variable, except
f-strings that only interpolate `quote_identifier(...)` (identifiers cannot be bound) and `psycopg2.sql`
compositions (`sql.SQL(...).format(sql.Identifier(...))`).

Against PostgreSQL: hostile strings (quotes, `'); DROP TABLE labels; --`, backslashes, `\\.` on its own line, CSV
separators, CR/LF/tab, unicode, the text `NULL`, empty string against None) round-trip exactly through COPY
(`bulk.copy_rows`) and through ORM / bound writes, and every table is still there with its rows afterwards.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import dataset_pipeline
from dataset_pipeline.db import repository
from dataset_pipeline.db.bulk import copy_rows
from dataset_pipeline.db.database import Database
from dataset_pipeline.db.models import (
    Dataset,
    DatasetValidation,
    DatasetVersion,
    Image,
    Label,
    Project,
    User,
)
from dataset_pipeline.domain.model import Box, Issue, LabelState, Severity
from dataset_pipeline_tests.db.test_migrations import EXPECTED_TABLES

# --- static check ----------------------------------------------------------------------------------------

SQL_CALLS = frozenset({"text", "execute", "exec_driver_sql", "copy_expert"})
SQL_KEYWORDS = frozenset({"statement", "sql", "query"})  # the first argument, when passed by name
PACKAGE = Path(dataset_pipeline.__file__).parent
SCOPES = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _called_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _is_call_to(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Call) and _called_name(node.func) == name


@dataclass
class SqlCall:
    where: str  # file:line
    function: str
    how: str | None  # how its SQL is built by string formatting; None = safe


class _SqlCallFinder:
    """The SQL calls of one module, and how their first argument is built (following local variables)."""

    def __init__(self, tree: ast.Module) -> None:
        self.scope_of: dict[ast.AST, ast.AST] = {}
        self.assigned: dict[tuple[ast.AST, str], list[ast.expr]] = {}
        self._index(tree, tree)

    def _index(self, node: ast.AST, scope: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            self.scope_of[child] = scope
            if isinstance(child, ast.Assign | ast.AnnAssign | ast.AugAssign | ast.NamedExpr):
                targets = child.targets if isinstance(child, ast.Assign) else [child.target]
                value = child.value
                if isinstance(child, ast.AugAssign):  # `sql += ...` is concatenation whatever is added
                    value = ast.BinOp(left=child.target, op=child.op, right=child.value, lineno=child.lineno)
                for target in targets:
                    if isinstance(target, ast.Name) and value is not None:
                        self.assigned.setdefault((scope, target.id), []).append(value)
            self._index(child, child if isinstance(child, SCOPES) else scope)

    def formatting(self, node: ast.expr, scope: ast.AST, depth: int = 0) -> str | None:
        """How `node` builds a string by formatting, or None when it does not."""
        if isinstance(node, ast.JoinedStr):
            interpolated = [value for value in node.values if isinstance(value, ast.FormattedValue)]
            if all(
                _is_call_to(value.value, "quote_identifier")
                and value.conversion == -1
                and value.format_spec is None
                for value in interpolated
            ):
                return None  # identifiers only, quoted
            return "an f-string"
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            return "% formatting"
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return "+ concatenation"
        if isinstance(node, ast.Call) and _called_name(node.func) == "format":
            assert isinstance(node.func, ast.Attribute)
            # psycopg2.sql's SQL(...).format(Identifier(...)) composes quoted parts; str.format does not.
            return None if _is_call_to(node.func.value, "SQL") else ".format()"
        if isinstance(node, ast.IfExp):
            return self.formatting(node.body, scope, depth) or self.formatting(node.orelse, scope, depth)
        if isinstance(node, ast.Name) and depth < 5:
            for value in self.assigned.get((scope, node.id), []):
                if how := self.formatting(value, scope, depth + 1):
                    return f"{how} (assigned to `{node.id}` on line {value.lineno})"
        return None

    def calls(self, tree: ast.Module, filename: str) -> Iterator[SqlCall]:
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or _called_name(node.func) not in SQL_CALLS:
                continue
            first = node.args[0] if node.args else None
            if first is None:
                first = next((k.value for k in node.keywords if k.arg in SQL_KEYWORDS), None)
            if first is None or isinstance(first, ast.Starred):
                continue
            how = self.formatting(first, self.scope_of[node])
            yield SqlCall(f"{filename}:{node.lineno}", str(_called_name(node.func)), how)


def sql_calls(source: str, filename: str) -> list[SqlCall]:
    tree = ast.parse(source, filename)
    return list(_SqlCallFinder(tree).calls(tree, filename))


def formatted_sql(source: str, filename: str = "<snippet>") -> list[str]:
    """`file:line: function(...) ...` for every SQL call whose SQL is built by string formatting."""
    return [
        f"{call.where}: {call.function}(...) takes SQL built by {call.how}"
        for call in sql_calls(source, filename)
        if call.how
    ]


def test_sql_is_never_built_by_string_formatting() -> None:
    offenders: list[str] = []
    inspected: list[SqlCall] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).as_posix()
        source = path.read_text(encoding="utf-8")
        inspected += sql_calls(source, relative)
        offenders += formatted_sql(source, relative)
    assert offenders == [], (
        "SQL built by string formatting; bind values as parameters (sa.text(':name') with a dict, the ORM, "
        "or bulk.copy_rows), quote identifiers with quote_identifier() or psycopg2.sql.Identifier:\n"
        + "\n".join(offenders)
    )
    # The check saw what it is meant to see: a silent walker would pass as well.
    files = {call.where.split(":")[0] for call in inspected}
    assert {
        "dataset_pipeline/db/bulk.py",
        "dataset_pipeline/db/repository.py",
        "dataset_pipeline/embedded_postgres.py",
    } <= files
    assert len(inspected) > 20


@pytest.mark.parametrize(
    "snippet",
    [
        'conn.execute(sa.text(f"SELECT {x}"))',
        "conn.execute(\"SELECT * FROM users WHERE name = '%s'\" % name)",
        'conn.exec_driver_sql("SELECT * FROM users WHERE name = " + name)',
        'cursor.copy_expert("COPY {} FROM STDIN".format(table), buffer)',
        'conn.execute(text("SELECT {}".format(x)))',
        'conn.execute(statement=f"DELETE FROM t WHERE id = {x}")',
        'def f(conn, x):\n    query = f"SELECT {x}"\n    conn.execute(sa.text(query))',
        'def f(conn, x):\n    query = "SELECT "\n    query += x\n    conn.execute(sa.text(query))',
        'sa.text(f"DROP DATABASE {quote_identifier(engine, name)} WHERE {x}")',
        'sa.text(f"DROP DATABASE {quote_identifier(engine, name)!r}")',
        'conn.execute(sa.text(f"SELECT 1" if x else f"SELECT {x}"))',
    ],
)
def test_the_check_flags_sql_built_by_formatting(snippet: str) -> None:
    [offender] = formatted_sql(snippet)
    assert offender.startswith("<snippet>:")


@pytest.mark.parametrize(
    "snippet",
    [
        'conn.execute(sa.text("SELECT * FROM users WHERE name = :name"), {"name": name})',
        'cursor.execute("SELECT * FROM users WHERE name = %s", (name,))',
        'sa.text(f"CREATE DATABASE {quote_identifier(engine, name)}")',
        'cursor.copy_expert(sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(table)), buffer)',
        'def f(cursor, t):\n    s = sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(t))\n    cursor.copy_expert(s, b)',
        "session.execute(sa.select(User).where(User.name == name))",
        'def f(x):\n    query = f"SELECT {x}"\n\ndef g(conn, query):\n    conn.execute(sa.text(query))',
    ],
)
def test_the_check_passes_bound_parameters_and_quoted_identifiers(snippet: str) -> None:
    assert formatted_sql(snippet) == []


# --- against PostgreSQL ----------------------------------------------------------------------------------

HOSTILE = [
    "it's",
    "''",
    'say "hi"',
    '""',
    "'); DROP TABLE labels; --",
    '"); DROP TABLE labels; --',
    "x'; DELETE FROM users WHERE ''='",
    "back\\slash",
    "\\",
    "\\\\'",
    "\\.",
    "first\n\\.\nthird",
    "\n\\.\n",
    "\\N",
    "a,b,,c",
    ",",
    "cr\rlf\ncrlf\r\ntab\tend",
    "\r\n",
    "\t",
    "ünïcödé ✓ 漢字 🚀 ﷽",
    "\u2028\ufeff\u200b",
    "NULL",
    "null",
    "None",
    "",
    " ",
    "$$; SELECT pg_sleep(10); $$",
    "%s %(name)s :name ? $1",
    "/* */ -- ;",
    "E'\\x41'",
]
assert all(len(value) <= 64 for value in HOSTILE)  # fits every String(64) column
assert len(set(HOSTILE)) == len(HOSTILE)


def image_row(index: int, value: str) -> repository.ImageRow:
    return repository.ImageRow(
        relative_path=f"{index:02d}/{value}",
        sha256=f"{index:064d}",
        size_bytes=index,
        format=value[:16],
        mode=None if index % 2 else "",  # None and "" must stay apart
        width=10,
        height=10,
        exif_orientation=1,
        dhash=None,
        label_state=LabelState.LABELLED.value,
        source_split=None,
        quarantined=False,
        boxes=[Box(index, 0.0, 0.0, 1.0, 1.0, {"note": value, value or "empty": index})],
        recipe={"note": value, value: [value, None, ""]},
    )


def issue(index: int, value: str) -> Issue:
    return Issue(
        severity=Severity.WARNING,
        code=value,
        file=value,
        message=value,
        line=index if index % 3 else None,
        annotation_id=(value if index % 2 else None) if index % 5 else "",
        image=f"{index:02d}/{value}" if index % 2 else None,
    )


def create_dataset(session: Session) -> tuple[Dataset, DatasetVersion]:
    """Users and projects named with hostile strings (bound writes), and one dataset version full of them (ORM)."""
    projects = [repository.get_or_create_project(session, value, value) for value in HOSTILE]
    assert repository.get_or_create_project(session, HOSTILE[4], HOSTILE[4]).id == projects[4].id
    project = projects[4]
    dataset = Dataset(
        project_id=project.id,
        name="'); DROP TABLE labels; --",
        partition_key="\\'; DROP TABLE datasets; --",
        status="validated",
        status_reason="\\.\nNULL\r\n'",
    )
    session.add(dataset)
    session.flush()
    version = repository.add_version(
        session,
        dataset,
        None,
        cause="upload",
        run_id="'; --",
        created_by=HOSTILE[6],
        upload_sha256="'" * 64,
        source_path="\n".join(HOSTILE),
        source_kind="zip",
        files_path="\\.\n".join(HOSTILE),
        format="coco",
        layout='"; --',
    )
    return dataset, version


def verdict() -> repository.Verdict:
    return repository.Verdict(
        passed=True,
        reason="\\.\nNULL\r\n'",
        summary={value: value for value in HOSTILE},
        content_hash="$$; --" * 10,
        class_names=list(HOSTILE),
    )


def augmented_row(index: int, value: str) -> repository.ImageRow:
    return dataclasses.replace(image_row(index, value), is_augmented=True, recipe={value: index})


def table_counts(engine: sa.Engine) -> dict[str, int]:
    names = set(sa.inspect(engine).get_table_names())
    assert names == EXPECTED_TABLES
    with engine.connect() as connection:
        return {
            name: connection.execute(sa.select(sa.func.count()).select_from(sa.table(name))).scalar_one()
            for name in sorted(names)
        }


def test_hostile_strings_round_trip_through_copy_and_bound_writes(db: Database) -> None:
    with db.session() as session:
        dataset, version = create_dataset(session)
        repository.lock_content(session, dataset.project_id, HOSTILE[4])  # sa.text with a bound :key
        images = [image_row(index, value) for index, value in enumerate(HOSTILE)]
        issues = [issue(index, value) for index, value in enumerate(HOSTILE)]
        stored_hash = repository.store_validation(session, version, images, issues, verdict(), run_id="'; --")
        assert stored_hash == verdict().content_hash  # a hash given is kept as given
        ids = repository.image_ids(session, version.id)
        assert len(ids) == len(HOSTILE)
        manifest = [(value, f"{index:064x}", index) for index, value in enumerate(HOSTILE)]
        assert repository.add_version_files(session, version, manifest) == len(HOSTILE)
        assert repository.file_hashes(session, version.id) == {path: sha for path, sha, _ in manifest}
        repository.add_checks(
            session,
            [
                {
                    "sha256": f"{index:064x}",
                    "suffix": value[:16],
                    "size_bytes": 1,
                    "format": value[:16],
                    "mode": None,
                    "width": 1,
                    "height": 1,
                    "exif_orientation": 1,
                    "dhash": None,
                    "issues": [["error", value, value]],
                }
                for index, value in enumerate(HOSTILE)
            ],
        )
        cached = repository.cached_checks(session, [(f"{i:064x}", v[:16]) for i, v in enumerate(HOSTILE)])
        assert {key: check.issues for key, check in cached.items()} == {
            (f"{i:064x}", v[:16]): [["error", v, v]] for i, v in enumerate(HOSTILE)
        }
        copied = copy_rows(  # copy_rows directly, every text column hostile, NULL and "" side by side
            session.connection(),
            "dataset_validations",
            repository.VALIDATION_COLUMNS,
            [
                (
                    dataset.id,
                    version.id,
                    value,
                    "error",
                    value,
                    value,
                    None,
                    value,
                    None if index % 2 else "",
                    value,
                )
                for index, value in enumerate(HOSTILE)
            ],
        )
        assert copied == len(HOSTILE)
        # What later stages add to the version: an augmentation (COPY of its images), a split, an export.
        augmented = [augmented_row(index, value) for index, value in enumerate(HOSTILE)]
        augmentation = repository.add_augmentation(
            session, version, {value: [value, None] for value in HOSTILE}, "\n".join(HOSTILE), augmented, "'"
        )
        split = repository.add_split(
            session,
            version,
            augmentation.id,
            {ids[image.relative_path]: value[:8] for image, value in zip(images, HOSTILE, strict=True)},
            {"run_id": "'; --", "config": {value: value for value in HOSTILE}, "counts": {}, "metrics": {}},
        )
        repository.add_export(
            session, version, split.id, "'); --", "\r\n".join(HOSTILE), 1, "\\" * 64, "%s %(name)s"
        )
        dataset_id, version_id, partition_key = dataset.id, version.id, dataset.partition_key
        augmentation_id, split_id, image_ids = augmentation.id, split.id, dict(ids)

    with db.session() as session:
        # users and projects: one each per hostile name, named exactly so
        users = session.scalars(sa.select(User.name).order_by(User.id)).all()
        assert users == HOSTILE
        assert session.scalars(sa.select(Project.name).order_by(Project.id)).all() == HOSTILE
        for value in HOSTILE:  # looked up by a bound parameter, each finds exactly itself
            assert session.scalar(sa.select(sa.func.count()).where(User.name == value)) == 1

        dataset = repository.dataset_by_partition(session, partition_key)
        assert dataset.id == dataset_id
        assert dataset.name == "'); DROP TABLE labels; --"
        assert dataset.status_reason == "\\.\nNULL\r\n'"
        assert repository.owner_of(session, dataset) == (HOSTILE[4], HOSTILE[4])
        for value in HOSTILE:  # hostile lookups find nothing and break nothing
            assert repository.find_dataset(session, value) is None
            with pytest.raises(repository.DatasetNotFound):
                repository.dataset_by_partition(session, value)
            assert repository.duplicate_of(session, dataset.project_id, value) is None

        version = repository.version_of(session, dataset)
        assert (version.id, version.number) == (version_id, 1)
        assert version.source_path == "\n".join(HOSTILE)
        assert version.files_path == "\\.\n".join(HOSTILE)
        assert version.layout == '"; --'
        assert (version.created_by, version.run_id) == (HOSTILE[6], "'; --")
        twin = repository.duplicate_of(session, dataset.project_id, "'" * 64)
        assert twin is not None and twin[1].id == version_id
        stored_verdict = repository.validation_of(session, version_id)
        assert stored_verdict is not None
        expected = verdict()
        assert stored_verdict.class_names == HOSTILE
        assert stored_verdict.summary == expected.summary
        assert (stored_verdict.reason, stored_verdict.content_hash) == (
            expected.reason,
            expected.content_hash,
        )

        # images and labels, through COPY (JSON inside CSV for recipe and attributes)
        stored_images = session.execute(
            sa.select(Image.relative_path, Image.format, Image.mode, Image.recipe)
            .where(Image.version_id == version_id, Image.augmentation_id.is_(None))
            .order_by(Image.relative_path)
        ).all()
        assert [tuple(row) for row in stored_images] == [
            (image.relative_path, image.format, image.mode, image.recipe) for image in images
        ]
        attributes = session.execute(
            sa.select(Image.relative_path, Label.attributes)
            .join(Label, Label.image_id == Image.id)
            .where(Image.augmentation_id.is_(None))
            .order_by(Image.relative_path)
        ).all()
        assert [tuple(row) for row in attributes] == [
            (image.relative_path, dict(image.boxes[0].attributes)) for image in images
        ]
        loaded = repository.load_images(session, version_id, augmentation_id=augmentation_id)
        assert sorted((image.relative_path, image.is_augmented) for image in loaded) == sorted(
            [(image.relative_path, False) for image in images]
            + [(image.relative_path, True) for image in augmented]
        )

        # the augmentation, split and export rows
        stored_augmentation = repository.latest_augmentation(session, version_id)
        assert stored_augmentation is not None and stored_augmentation.id == augmentation_id
        assert stored_augmentation.folder == "\n".join(HOSTILE)
        assert stored_augmentation.recipe == {value: [value, None] for value in HOSTILE}
        augmented_recipes = session.execute(
            sa.select(Image.relative_path, Image.recipe)
            .where(Image.augmentation_id == augmentation_id)
            .order_by(Image.relative_path)
        ).all()
        assert [tuple(row) for row in augmented_recipes] == [
            (image.relative_path, image.recipe) for image in augmented
        ]
        stored_split = repository.latest_split(session, version_id)
        assert stored_split is not None and stored_split.id == split_id
        assert stored_split.config == {value: value for value in HOSTILE}
        assert repository.assignments_of(session, split_id) == {
            image_ids[image.relative_path]: value[:8] for image, value in zip(images, HOSTILE, strict=True)
        }
        [export] = repository.exports_of(session, version_id)
        assert (export.format, export.path, export.sha256, export.run_id) == (
            "'); --",
            "\r\n".join(HOSTILE),
            "\\" * 64,
            "%s %(name)s",
        )

        # validations: store_validation's rows, then copy_rows' rows, in order
        columns = (
            DatasetValidation.run_id,
            DatasetValidation.severity,
            DatasetValidation.code,
            DatasetValidation.file,
            DatasetValidation.line,
            DatasetValidation.annotation_id,
            DatasetValidation.image_path,
            DatasetValidation.message,
        )
        stored = [
            tuple(row)
            for row in session.execute(
                sa.select(*columns)
                .where(DatasetValidation.version_id == version_id)
                .order_by(DatasetValidation.id)
            )
        ]
        from_issues = [
            ("'; --", "warning", i.code, i.file, i.line, i.annotation_id, i.image, i.message) for i in issues
        ]
        from_copy = [
            (value, "error", value, value, None, value, None if index % 2 else "", value)
            for index, value in enumerate(HOSTILE)
        ]
        assert stored == from_issues + from_copy
        findings = [(f.severity, f.code, f.message) for f in repository.findings_of(session, version_id)]
        assert sorted(findings) == sorted(  # every finding of the version, errors first
            [("error", value, value) for value in HOSTILE] + [("warning", i.code, i.message) for i in issues]
        )
        assert [severity for severity, _, _ in findings] == ["error"] * len(HOSTILE) + ["warning"] * len(
            HOSTILE
        )
        assert {row[6] for row in stored} >= {None, ""}  # NULL and "" both stored, and told apart
        assert {row[5] for row in stored} >= {None, ""}
        for value in HOSTILE:  # compared by the server, with a bound parameter
            matches = session.scalar(
                sa.select(sa.func.count()).where(
                    DatasetValidation.message == value, DatasetValidation.version_id == version_id
                )
            )
            assert matches == 2

    # Nothing was dropped or deleted: every table is there, holding exactly what was written.
    counts = table_counts(db.engine)
    assert counts == {
        "alembic_version": 1,
        "augmentations": 1,
        "class_distributions": 0,
        "dataset_validations": 2 * len(HOSTILE),
        "dataset_versions": 1,
        "datasets": 1,
        "exports": 1,
        "images": 2 * len(HOSTILE),
        "label_edits": 0,
        "labels": 2 * len(HOSTILE),
        "projects": len(HOSTILE),
        "split_assignments": len(HOSTILE),
        "split_reports": 1,
        "users": len(HOSTILE),
        "version_validations": 1,
        "version_files": len(HOSTILE),
        "image_checks": len(HOSTILE),
    }
