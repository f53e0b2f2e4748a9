"""Migration 0002: a database written by the previous head (0001) upgrades to versions with its datasets intact.

The rows are written the way the previous main wrote them (`git show 9253bff:dataset_pipeline/db/repository.py`
and the assets beside it): absolute paths, `images.split`, augmented copies marked per image with the recipe,
the copy index and the copy's seed, one split report keyed by the dataset.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from dataset_pipeline.db import repository
from dataset_pipeline.db.database import Database, alembic_config
from dataset_pipeline.db.models import Base
from dataset_pipeline.resources.storage import LocalDatasetStorage
from dataset_pipeline_tests.databases import fresh_database

pytestmark = pytest.mark.db

#: What `recipe_to_dict` gave the previous main; each augmented image stored it with its copy index and seed.
RECIPE = {
    "transforms": [{"name": "HorizontalFlip", "params": {}, "p": 0.5}],
    "copies_per_image": 2,
    "seed": 7,
    "min_visibility": 0.3,
    "min_area": 16.0,
    "splits": ["train"],
    "jpeg_quality": 90,
}
DATASET_COLUMNS_KEPT = {
    "id",
    "project_id",
    "name",
    "partition_key",
    "status",
    "status_reason",
    "created_at",
    "updated_at",
}
CHILD_TABLES = (
    "images",
    "labels",
    "dataset_validations",
    "class_distributions",
    "label_edits",
    "exports",
    "split_reports",
)


@pytest.fixture
def old_url(pg_server_url: str) -> Iterator[str]:
    """A throwaway database at revision 0001, the schema the previous main ran on; dropped afterwards."""
    with fresh_database(pg_server_url, prefix="dp_mig0002") as url:
        assert url is not None
        command.upgrade(alembic_config(url), "0001")  # no connection attribute: env.py uses sqlalchemy.url
        yield url


@pytest.fixture
def old_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The storage root the old rows were written under. Its name holds '_' (a LIKE wildcard) on purpose."""
    root = (tmp_path / "store_root").resolve()
    root.mkdir()
    monkeypatch.setenv("DATASET_STORAGE_ROOT", str(root))
    return root


@dataclass
class OldRows:
    """What the previous main wrote, keyed the way the assertions need it."""

    connection: sa.Connection
    tables: dict[str, sa.Table]
    user_id: int = 0
    project_id: int = 0
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)  # partition key -> datasets row
    images: dict[str, dict[str, int]] = field(default_factory=dict)  # partition key -> relative path -> id
    splits: dict[int, str] = field(default_factory=dict)  # image id -> images.split, where set
    labels: dict[int, list[tuple]] = field(default_factory=dict)  # image id -> boxes

    def insert(self, table: str, **values: Any) -> Any:
        result = self.connection.execute(sa.insert(self.tables[table]).values(**values))
        return result.inserted_primary_key[0]

    def dataset(self, **values: Any) -> int:
        row = {
            "project_id": self.project_id,
            "version": 1,
            "source_kind": "zip",
            "format": "yolo",
            "layout": None,  # the previous main never filled it in
            "status_reason": None,
            "class_names": [],
            "file_count": 0,
            "total_bytes": 0,
            "validation_summary": {},
            **values,
        }
        row["id"] = self.insert("datasets", **row)
        self.datasets[row["partition_key"]] = row
        return row["id"]

    def image(self, key: str, relative_path: str, boxes: list[tuple] = (), **values: Any) -> int:
        """An images row as `insert_images_with_labels` wrote it, then its boxes as `copy_labels` did."""
        dataset_id = self.datasets[key]["id"]
        row = {
            "dataset_id": dataset_id,
            "relative_path": relative_path,
            "sha256": uuid.uuid4().hex * 2,
            "size_bytes": 1000,
            "format": "JPEG",
            "mode": "RGB",
            "width": 640,
            "height": 480,
            "exif_orientation": 1,
            "dhash": 12345,
            "label_state": "labelled" if boxes else "background",
            "source_split": None,
            "split": None,
            "quarantined": False,
            "is_augmented": False,
            "source_image_id": None,
            "recipe": None,
            **values,
        }
        image_id = self.insert("images", **row)
        self.images.setdefault(key, {})[relative_path] = image_id
        if row["split"] is not None:
            self.splits[image_id] = row["split"]
        for class_index, x_min, y_min, x_max, y_max in boxes:
            self.insert(
                "labels",
                dataset_id=dataset_id,
                image_id=image_id,
                class_index=class_index,
                x_min=x_min,
                y_min=y_min,
                x_max=x_max,
                y_max=y_max,
                attributes={"occluded": False},
            )
        self.labels[image_id] = list(boxes)
        return image_id

    def augmented(self, key: str, source: str, copy_index: int, seed: int, **values: Any) -> int:
        """An augmented copy as `write_augmented_images` + `replace_augmented` wrote it."""
        stem = Path(source).with_suffix("").as_posix().replace("/", "__")
        return self.image(
            key,
            f"{stem}__aug{copy_index}.jpg",
            is_augmented=True,
            dhash=None,
            source_image_id=self.images[key][source],
            recipe={**RECIPE, "copy_index": copy_index, "seed": seed},
            **values,
        )

    def finding(self, key: str, severity: str, code: str, file: str, line: int | None, message: str) -> None:
        self.insert(
            "dataset_validations",
            dataset_id=self.datasets[key]["id"],
            run_id="run-validate",
            severity=severity,
            code=code,
            file=file,
            line=line,
            annotation_id=None,
            image_path=None,
            message=message,
        )

    def export(self, key: str, fmt: str, path: Path) -> None:
        """`upsert_export`: the zip's absolute path as `str(path)`."""
        self.insert(
            "exports",
            dataset_id=self.datasets[key]["id"],
            format=fmt,
            path=str(path),
            size_bytes=4096,
            sha256=fmt[0] * 64,
            run_id="run-export",
        )

    def split_report(self, key: str) -> None:
        """`store_splits`: one report row per dataset, its primary key the dataset id."""
        self.insert(
            "split_reports",
            dataset_id=self.datasets[key]["id"],
            run_id="run-split",
            config={"train": 0.8, "val": 0.1, "test": 0.1, "seed": 0},
            counts={"images": {"train": 3, "val": 1, "test": 1}, "dropped_augmented": 1},
            metrics={"label_distribution": 0.01, "examples_distribution": 0.02, "zero_folds": 0},
            random_baseline_metrics={
                "label_distribution": 0.2,
                "examples_distribution": 0.1,
                "zero_folds": 1,
            },
        )


def reflect_0001(connection: sa.Connection) -> dict[str, sa.Table]:
    metadata = sa.MetaData()
    metadata.reflect(connection)
    return dict(metadata.tables)


def write_like_previous_main(old: OldRows, root: Path) -> None:
    """Three datasets of ann's project `cars` in the states the previous main left them in:

    - `ann-cars-traffic` went through every stage (exported): a label edit, a distribution, augmented copies,
      a split over originals and copies, two zips;
    - `ann-cars-blurry` failed validation (invalid), its images quarantined;
    - `ann-cars-traffic-v2`, a changed upload of the same name, validated only: a dataset of its own.
    """
    traffic = root / "ann" / "cars" / "traffic"
    old.dataset(
        name="traffic",
        partition_key="ann-cars-traffic",
        source_path=str(traffic / "source" / "traffic.zip"),
        content_sha256="a1" * 32,
        status="exported",
        class_names=["car", "bus"],
        file_count=9,
        total_bytes=123_456,
        storage_path=str(traffic),
        validation_summary={"images": 5, "usable_images": 4, "quarantined": 1, "policy": "quarantine"},
    )
    key = "ann-cars-traffic"
    old.image(
        key, "images/a.jpg", [(0, 10.0, 20.0, 110.0, 220.0), (1, 300.0, 40.0, 400.0, 90.5)], split="train"
    )
    old.image(key, "images/b.jpg", [(0, 1.0, 2.0, 3.0, 4.0)], split="val")
    old.image(key, "images/c.jpg", [(1, 5.0, 6.0, 70.0, 80.0)], split="test", source_split="test")
    old.image(key, "images/empty.jpg", split="train")
    old.image(key, "images/broken.jpg", [(0, 0.0, 0.0, 9.0, 9.0)], quarantined=True)
    flipped = [(0, 12.0, 22.0, 108.0, 218.0)]
    old.augmented(key, "images/a.jpg", 0, 1111, boxes=flipped, split="train")
    old.augmented(key, "images/a.jpg", 1, 2222, boxes=flipped)  # left out by the split
    old.augmented(key, "images/empty.jpg", 0, 3333, split="train")
    old.finding(key, "warning", "box-clipped", "labels/a.txt", 2, "box clipped to the image")
    old.finding(key, "error", "image-unreadable", "images/broken.jpg", None, "cannot decode")
    for class_index, name, boxes in ((0, "car", 3), (1, "bus", 2)):
        old.insert(
            "class_distributions",
            dataset_id=old.datasets[key]["id"],
            split="all",
            class_index=class_index,
            class_name=name,
            boxes=boxes,
            images=2,
            share=boxes / 5,
            small=0,
            medium=1,
            large=boxes - 1,
            aspect_median=1.25,
        )
    old.split_report(key)
    old.insert(
        "label_edits",
        dataset_id=old.datasets[key]["id"],
        edited_by="bob",
        operation="rename_class",
        params={"operation": "rename_class", "class_name": "truck", "new_name": "bus"},
        boxes_before=5,
        boxes_after=5,
        classes_before=["car", "truck"],
        classes_after=["car", "bus"],
        run_id="run-edit",
    )
    for fmt in ("yolo", "coco"):
        old.export(key, fmt, traffic / "exports" / f"{key}-{fmt}.zip")

    blurry = root / "ann" / "cars" / "blurry"
    old.dataset(
        name="blurry",
        partition_key="ann-cars-blurry",
        source_path=str(blurry / "source" / "blurry"),
        source_kind="folder",
        content_sha256="b2" * 32,
        format="coco",
        status="invalid",
        status_reason="0 usable images, 2 quarantined, 0 missing (share 100%, limit 50%, policy quarantine)",
        class_names=["person"],
        file_count=3,
        total_bytes=999,
        storage_path=str(blurry),
        validation_summary={"images": 2, "usable_images": 0, "quarantined": 2, "policy": "quarantine"},
    )
    old.image("ann-cars-blurry", "one.png", [(0, 1.0, 1.0, 5.0, 5.0)], quarantined=True, format="PNG")
    old.image("ann-cars-blurry", "two.png", quarantined=True, format="PNG", label_state="unlabelled")
    old.finding("ann-cars-blurry", "error", "image-unreadable", "one.png", None, "truncated")
    old.finding("ann-cars-blurry", "error", "image-unreadable", "two.png", None, "truncated")

    traffic_v2 = root / "ann" / "cars" / "traffic-v2"
    old.dataset(
        name="traffic",
        version=2,
        partition_key="ann-cars-traffic-v2",
        source_path=str(traffic_v2 / "source" / "traffic.zip"),
        content_sha256="c3" * 32,
        status="validated",
        class_names=["car"],
        file_count=2,
        total_bytes=50,
        storage_path=str(traffic_v2),
        validation_summary={"images": 1, "usable_images": 1, "quarantined": 0, "policy": "quarantine"},
    )
    old.image("ann-cars-traffic-v2", "images/a.jpg", [(0, 10.0, 20.0, 110.0, 220.0)])


def counts_by_dataset(connection: sa.Connection, table: str) -> dict[int, int]:
    rows = connection.execute(sa.text(f"SELECT dataset_id, count(*) FROM {table} GROUP BY dataset_id"))
    return dict(rows.all())


def boxes_by_image(connection: sa.Connection) -> dict[int, list[tuple]]:
    rows = connection.execute(
        sa.text("SELECT image_id, class_index, x_min, y_min, x_max, y_max FROM labels ORDER BY image_id, id")
    )
    found: dict[int, list[tuple]] = {}
    for image_id, *box in rows:
        found.setdefault(image_id, []).append(tuple(box))
    return found


def write_at_0001(url: str, write: Callable[[OldRows], None]) -> tuple[OldRows, dict[str, dict[int, int]]]:
    """User ann and her project `cars`, then what `write` adds, in one transaction on the 0001 schema; returns
    the rows and how many each child table holds per dataset."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            old = OldRows(connection, reflect_0001(connection))
            old.user_id = old.insert("users", name="ann")
            old.project_id = old.insert("projects", user_id=old.user_id, name="cars")
            write(old)
            counts = {table: counts_by_dataset(connection, table) for table in CHILD_TABLES}
    finally:
        engine.dispose()
    return old, counts


def migrate(url: str) -> None:
    """Upgrade to head the way the app does when it starts."""
    database = Database(url)
    try:
        database.migrate()
    finally:
        database.dispose()


def test_a_database_of_the_previous_head_upgrades_with_its_datasets_intact(old_url, old_root):
    old, before = write_at_0001(old_url, lambda old: write_like_previous_main(old, old_root))
    migrate(old_url)
    traffic = old.datasets["ann-cars-traffic"]
    blurry = old.datasets["ann-cars-blurry"]
    engine = sa.create_engine(old_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            # The schema is exactly what the models describe, so the app's ORM reads it as it reads a new one.
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            head = ScriptDirectory.from_config(alembic_config(old_url)).get_current_head()
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == head
            assert {c["name"] for c in sa.inspect(conn).get_columns("datasets")} == DATASET_COLUMNS_KEPT
            assert "split" not in {c["name"] for c in sa.inspect(conn).get_columns("images")}

            datasets = {
                row.partition_key: row
                for row in conn.execute(
                    sa.text("SELECT id, project_id, name, partition_key, status, status_reason FROM datasets")
                )
            }
            assert {
                key: (r.id, r.project_id, r.name, r.status, r.status_reason) for key, r in datasets.items()
            } == {
                key: (d["id"], old.project_id, d["name"], d["status"], d["status_reason"])
                for key, d in old.datasets.items()
            }

            versions = conn.execute(sa.text("SELECT * FROM dataset_versions ORDER BY id")).mappings().all()
            assert sorted(v["dataset_id"] for v in versions) == sorted(d["id"] for d in old.datasets.values())
            version_of = {v["dataset_id"]: v for v in versions}
            for key, d in old.datasets.items():
                folder = Path(d["storage_path"]).relative_to(old_root).as_posix()
                v = version_of[d["id"]]
                assert v["number"] == 1
                assert v["parent_id"] is None
                assert v["cause"] == "upload"
                assert v["created_by"] == "ann"
                assert v["upload_sha256"] == d["content_sha256"]
                assert v["files_path"] == f"{folder}/files", key
                assert v["source_path"] == Path(d["source_path"]).relative_to(old_root).as_posix(), key
                assert v["source_kind"] == d["source_kind"]
                assert (v["format"], v["layout"]) == (d["format"], d["layout"])
                assert (v["file_count"], v["total_bytes"]) == (d["file_count"], d["total_bytes"])
            version_id = {d["id"]: version_of[d["id"]]["id"] for d in old.datasets.values()}

            verdicts = {
                row.dataset_id: row
                for row in conn.execute(
                    sa.text(
                        "SELECT version_id, dataset_id, passed, reason, summary, class_names FROM version_validations"
                    )
                )
            }
            assert set(verdicts) == {d["id"] for d in old.datasets.values()}  # all three were validated
            for d in old.datasets.values():
                verdict = verdicts[d["id"]]
                assert verdict.version_id == version_id[d["id"]]
                assert verdict.summary == d["validation_summary"]
                assert verdict.class_names == d["class_names"]  # what validation settled is the verdict's
            assert (verdicts[traffic["id"]].passed, verdicts[traffic["id"]].reason) == (True, None)
            assert (verdicts[blurry["id"]].passed, verdicts[blurry["id"]].reason) == (
                False,
                blurry["status_reason"],
            )

            # Every row of every stage is still there, now keyed by its dataset's one version.
            for table in CHILD_TABLES:
                rows = conn.execute(
                    sa.text(f"SELECT dataset_id, version_id, count(*) FROM {table} GROUP BY 1, 2")
                )
                assert {(dataset_id, version): n for dataset_id, version, n in rows} == {
                    (dataset_id, version_id[dataset_id]): n for dataset_id, n in before[table].items()
                }, table
            images = {row.id: row for row in conn.execute(sa.text("SELECT * FROM images"))}
            assert len(images) == sum(len(paths) for paths in old.images.values())
            for key, paths in old.images.items():  # same ids, same paths, same dataset
                dataset_id = old.datasets[key]["id"]
                assert {p: (images[i].relative_path, images[i].dataset_id) for p, i in paths.items()} == {
                    p: (p, dataset_id) for p in paths
                }
            assert boxes_by_image(conn) == {
                image_id: boxes for image_id, boxes in old.labels.items() if boxes
            }

            # The augmented copies: one augmentation of the traffic version, in its old `augmented/` folder.
            augmentation = conn.execute(sa.text("SELECT * FROM augmentations")).mappings().one()
            assert augmentation["dataset_id"] == traffic["id"]
            assert augmentation["version_id"] == version_id[traffic["id"]]
            assert augmentation["folder"] == "ann/cars/traffic/augmented"
            assert augmentation["recipe"] == {k: v for k, v in RECIPE.items() if k != "seed"}
            assert augmentation["images_made"] == 3
            copies = {i: row for i, row in images.items() if row.is_augmented}
            assert len(copies) == 3
            assert {row.augmentation_id for row in copies.values()} == {augmentation["id"]}
            assert all(row.augmentation_id is None for row in images.values() if not row.is_augmented)
            traffic_images = old.images["ann-cars-traffic"]
            assert {images[i].relative_path: images[i].source_image_id for i in copies} == {
                "images__a__aug0.jpg": traffic_images["images/a.jpg"],
                "images__a__aug1.jpg": traffic_images["images/a.jpg"],
                "images__empty__aug0.jpg": traffic_images["images/empty.jpg"],
            }
            assert {images[i].recipe["seed"] for i in copies} == {1111, 2222, 3333}  # each copy keeps its own

            # The split: a report with an id of its own over that augmentation, and the old images.split values.
            report = conn.execute(sa.text("SELECT * FROM split_reports")).mappings().one()
            assert report["id"] is not None
            assert report["version_id"] == version_id[traffic["id"]]
            assert report["augmentation_id"] == augmentation["id"]
            assert report["counts"]["images"] == {"train": 3, "val": 1, "test": 1}
            assignments = conn.execute(
                sa.text("SELECT split_report_id, image_id, split FROM split_assignments")
            ).all()
            assert {row.split_report_id for row in assignments} == {report["id"]}
            assert {row.image_id: row.split for row in assignments} == old.splits
            assert len(old.splits) == 6  # four originals and two copies were in a split

            exports = conn.execute(
                sa.text("SELECT format, path, split_report_id, version_id FROM exports")
            ).all()
            assert {row.format: row.path for row in exports} == {
                "yolo": "ann/cars/traffic/exports/ann-cars-traffic-yolo.zip",
                "coco": "ann/cars/traffic/exports/ann-cars-traffic-coco.zip",
            }
            assert {row.split_report_id for row in exports} == {report["id"]}
            edit = conn.execute(sa.text("SELECT version_id, edited_by, classes_after FROM label_edits")).one()
            assert edit == (version_id[traffic["id"]], "bob", ["car", "bus"])
    finally:
        engine.dispose()

    # The app's own code reads the migrated data.
    database = Database(old_url)
    storage = LocalDatasetStorage(root=str(old_root))
    try:
        with database.session() as session:
            dataset = repository.find_dataset(session, "ann-cars-traffic")
            assert dataset is not None and dataset.status == "exported"
            version = repository.version_of(session, dataset)
            assert version.number == 1 and version.upload_sha256 == "a1" * 32
            assert [v.number for v in repository.versions_of(session, dataset.id)] == [1]
            assert storage.resolve(version.files_path) == old_root / "ann" / "cars" / "traffic" / "files"
            assert storage.resolve(version.source_path) == Path(traffic["source_path"])
            verdict = repository.validation_of(session, version.id)
            assert verdict is not None and verdict.passed and verdict.class_names == ["car", "bus"]

            usable = repository.load_images(session, version.id)
            assert [i.relative_path for i in usable] == [
                "images/a.jpg",
                "images/b.jpg",
                "images/c.jpg",
                "images/empty.jpg",
            ]
            assert [len(i.boxes) for i in usable] == [2, 1, 1, 0]
            assert usable[0].boxes[1].x_max == 400.0 and usable[0].boxes[1].attributes == {"occluded": False}
            augmentation = repository.latest_augmentation(session, version.id)
            assert augmentation is not None
            with_copies = repository.load_images(session, version.id, augmentation_id=augmentation.id)
            assert sum(i.is_augmented for i in with_copies) == 3 and len(with_copies) == 7

            split = repository.latest_split(session, version.id)
            assert split is not None and split.augmentation_id == augmentation.id
            assert repository.assignments_of(session, split.id) == old.splits

            exports = repository.exports_of(session, version.id)
            assert [(e.format, e.path) for e in exports] == [
                ("coco", "ann/cars/traffic/exports/ann-cars-traffic-coco.zip"),
                ("yolo", "ann/cars/traffic/exports/ann-cars-traffic-yolo.zip"),
            ]
            assert (
                storage.resolve(exports[1].path)
                == old_root / "ann/cars/traffic/exports/ann-cars-traffic-yolo.zip"
            )
            assert [f.code for f in repository.findings_of(session, version.id)] == [
                "image-unreadable",
                "box-clipped",
            ]
            assert repository.has_distribution(session, version.id)
            # The same upload dropped again is still recognised as this dataset's.
            assert repository.duplicate_of(session, dataset.project_id, "a1" * 32) == (dataset, version)

            blurry_row = repository.find_dataset(session, "ann-cars-blurry")
            assert blurry_row is not None
            blurry_version = repository.version_of(session, blurry_row)
            blurry_verdict = repository.validation_of(session, blurry_version.id)
            assert blurry_verdict is not None and not blurry_verdict.passed
            assert blurry_verdict.reason == blurry["status_reason"]
            assert repository.load_images(session, blurry_version.id) == []  # both quarantined
            assert len(repository.load_images(session, blurry_version.id, usable_only=False)) == 2
            assert repository.exports_of(session, blurry_version.id) == []

            v2 = repository.find_dataset(session, "ann-cars-traffic-v2")
            assert v2 is not None and v2.id != dataset.id and v2.name == dataset.name
            v2_version = repository.version_of(session, v2)
            assert v2_version.files_path == "ann/cars/traffic-v2/files"
            assert [i.relative_path for i in repository.load_images(session, v2_version.id)] == [
                "images/a.jpg"
            ]
    finally:
        database.dispose()


def test_paths_outside_the_storage_root_are_kept_as_they_were(old_url, old_root, tmp_path):
    """Only a path under the root becomes relative; any other stays absolute rather than being cut up.

    `storeXroot` differs from the root `store_root` only where the root has a '_', which a LIKE pattern would
    take for any character.
    """
    lookalike = tmp_path / "storeXroot" / "ann" / "cars" / "elsewhere"

    def write(old: OldRows) -> None:
        old.dataset(
            name="elsewhere",
            partition_key="ann-cars-elsewhere",
            source_path=str(lookalike / "source" / "elsewhere.zip"),
            content_sha256="d4" * 32,
            status="exported",
            class_names=["car"],
            storage_path=str(lookalike),
        )
        old.image("ann-cars-elsewhere", "a.jpg", [(0, 1.0, 1.0, 2.0, 2.0)], split="train")
        old.augmented("ann-cars-elsewhere", "a.jpg", 0, 5, split="train")
        old.split_report("ann-cars-elsewhere")
        old.export("ann-cars-elsewhere", "voc", Path("/mnt/archive/ann-cars-elsewhere-voc.zip"))
        old.dataset(
            name="inside",
            partition_key="ann-cars-inside",
            source_path=str(old_root / "inbox" / "ann" / "cars" / "inside.zip"),
            content_sha256="e5" * 32,
            status="validated",
            storage_path=str(old_root / "ann" / "cars" / "inside"),
        )

    write_at_0001(old_url, write)
    migrate(old_url)

    engine = sa.create_engine(old_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            paths = {
                key: (source, files)
                for key, source, files in conn.execute(
                    sa.text(
                        "SELECT d.partition_key, v.source_path, v.files_path FROM dataset_versions v "
                        "JOIN datasets d ON d.id = v.dataset_id"
                    )
                )
            }
            folder = conn.execute(sa.text("SELECT folder FROM augmentations")).scalar_one()
            export = conn.execute(sa.text("SELECT path FROM exports")).scalar_one()
    finally:
        engine.dispose()
    assert paths["ann-cars-elsewhere"] == (f"{lookalike}/source/elsewhere.zip", f"{lookalike}/files")
    assert folder == f"{lookalike}/augmented"
    assert export == "/mnt/archive/ann-cars-elsewhere-voc.zip"
    assert paths["ann-cars-inside"] == ("inbox/ann/cars/inside.zip", "ann/cars/inside/files")


def test_a_dataset_whose_ingest_never_finished_gets_no_version(old_url, old_root):
    """The previous main recorded a dataset before unpacking it; one that failed there (or was still pending)
    has no files. It must not become a version: the new `duplicate_of` treats every upload version as done, so
    the same file dropped again would be turned away as a duplicate of its own failed attempt."""

    def write(old: OldRows) -> None:
        old.dataset(
            name="bad",
            partition_key="ann-cars-bad",
            source_path=str(old_root / "ann" / "cars" / "bad" / "source" / "bad.zip"),
            content_sha256="f6" * 32,
            format=None,
            status="failed",
            status_reason="bad.zip: entry '../evil' would leave the target folder",
        )
        old.dataset(
            name="slow",
            partition_key="ann-cars-slow",
            source_path=str(old_root / "inbox" / "ann" / "cars" / "slow.zip"),
            content_sha256="07" * 32,
            format=None,
            status="pending",
        )

    old, _ = write_at_0001(old_url, write)
    migrate(old_url)
    database = Database(old_url)
    try:
        with database.session() as session:
            for key, sha in (("ann-cars-bad", "f6" * 32), ("ann-cars-slow", "07" * 32)):
                dataset = repository.find_dataset(session, key)
                assert dataset is not None
                assert (dataset.status, dataset.status_reason) == (
                    old.datasets[key]["status"],
                    old.datasets[key]["status_reason"],
                )
                assert repository.latest_version(session, dataset.id) is None
                assert repository.duplicate_of(session, old.project_id, sha) is None
            assert session.scalar(sa.text("SELECT count(*) FROM dataset_versions")) == 0
            assert session.scalar(sa.text("SELECT count(*) FROM version_validations")) == 0
    finally:
        database.dispose()
