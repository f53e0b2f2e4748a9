"""The version commands (list, download, diff, prune) against a real database.

The data is written with the repository API rather than by running the graph, so these tests pin down what the
CLI does with versions, verdicts, splits and exports whatever the assets look like.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from dataset_pipeline import cli
from dataset_pipeline.db import repository
from dataset_pipeline.db.database import Database
from dataset_pipeline.db.models import (
    Augmentation,
    Dataset,
    DatasetVersion,
    Export,
    Image,
    Label,
    SplitAssignment,
    SplitReport,
)
from dataset_pipeline.db.version_content import load_version_content
from dataset_pipeline.domain.model import Box

KEY = "alice-traffic-cars"
CLASSES_V1 = ("car", "person")
CLASSES_V2 = ("car", "person", "truck")


@dataclass
class Built:
    """What `build` wrote: root-relative paths by role and the bytes of each export zip."""

    root: Path
    version_ids: dict[int, int] = field(default_factory=dict)
    export_bytes: dict[tuple[int, str], bytes] = field(default_factory=dict)
    export_paths: dict[tuple[int, str], str] = field(default_factory=dict)
    shared: list[str] = field(default_factory=list)  # v1's upload and files, which v2 shares
    augmented: str = ""


def image(
    path: str, sha: str, boxes: list[Box], *, quarantined: bool = False, **extra
) -> repository.ImageRow:
    return repository.ImageRow(
        relative_path=path,
        sha256=sha,
        size_bytes=100,
        format="JPEG",
        mode="RGB",
        width=100,
        height=100,
        exif_orientation=1,
        dhash=None,
        label_state="labelled" if boxes else "background",
        source_split=None,
        quarantined=quarantined,
        boxes=boxes,
        **extra,
    )


def verdict(class_names: tuple[str, ...], images: int, usable: int, quarantined: int) -> repository.Verdict:
    return repository.Verdict(
        passed=True,
        reason=None,
        summary={"images": images, "usable_images": usable, "quarantined": quarantined},
        content_hash=f"hash-{len(class_names)}-{images}",
        class_names=class_names,
    )


def write_zip(root: Path, relative: str, member: str) -> bytes:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, f"content of {relative}\n")
    return path.read_bytes()


def add_export(
    session, built: Built, version: DatasetVersion, split_id: int | None, fmt: str, run: str
) -> None:
    relative = f"alice/traffic/cars/v{version.number}/exports/{run}/cars-{fmt}.zip"
    data = write_zip(built.root, relative, f"{fmt}/manifest.json")
    repository.add_export(
        session, version, split_id, fmt, relative, len(data), hashlib.sha256(data).hexdigest(), run
    )
    built.export_bytes[(version.number, fmt)] = data
    built.export_paths[(version.number, fmt)] = relative


def build(db: Database, root: Path) -> Built:
    """Two versions of alice/traffic/cars: an upload and a re-validation that found files changed.

    v1: a (car, person), b (car, person), c (background), d (car, quarantined), plus an augmented copy of a;
    split a=train, b=val; yolo and coco exports. v2 shares v1's upload and files: b re-encoded with its person
    box gone, c gone, e added with a new class (truck), a's person box nudged; split a=val, b=val; a yolo export.
    """
    built = Built(root=root)
    base = "alice/traffic/cars/v1"
    (root / base / "source").mkdir(parents=True)
    write_zip(root, f"{base}/source/cars.zip", "images/a.jpg")
    for name in ("a", "b", "c", "d", "e"):
        (root / base / "files" / "images").mkdir(parents=True, exist_ok=True)
        (root / base / "files" / "images" / f"{name}.jpg").write_bytes(name.encode() * 50)
    built.shared = [f"{base}/source/cars.zip", f"{base}/files"]

    with db.session() as session:
        project = repository.get_or_create_project(session, "alice", "traffic")
        dataset = Dataset(project_id=project.id, name="cars", partition_key=KEY, status="exported")
        session.add(dataset)
        session.flush()

        v1 = repository.add_version(
            session,
            dataset,
            None,
            cause="upload",
            run_id="run1",
            created_by="alice",
            upload_sha256="ab" * 32,
            source_path=f"{base}/source/cars.zip",
            source_kind="zip",
            files_path=f"{base}/files",
            format="yolo",
            file_count=5,
            total_bytes=250,
        )
        repository.store_validation(
            session,
            v1,
            [
                image("images/a.jpg", "sha-a", [Box(0, 10, 10, 50, 50), Box(1, 60, 60, 90, 90)]),
                image("images/b.jpg", "sha-b", [Box(0, 0, 0, 20, 20), Box(1, 30, 30, 40, 40)]),
                image("images/c.jpg", "sha-c", []),
                image("images/d.jpg", "sha-d", [Box(0, 5, 5, 15, 15)], quarantined=True),
            ],
            [],
            verdict(CLASSES_V1, images=4, usable=3, quarantined=1),
            "run1",
        )
        ids1 = repository.image_ids(session, v1.id)
        augmented = f"{base}/augmented/run1"
        (root / augmented).mkdir(parents=True)
        (root / augmented / "a_flip.jpg").write_bytes(b"flipped" * 20)
        repository.add_augmentation(
            session,
            v1,
            {"flip": 1.0},
            augmented,
            [
                image(
                    "a_flip.jpg",
                    "sha-a-flip",
                    [Box(0, 50, 10, 90, 50)],
                    is_augmented=True,
                    source_image_id=ids1["images/a.jpg"],
                )
            ],
            "run1",
        )
        built.augmented = augmented
        split1 = repository.add_split(
            session, v1, None, {ids1["images/a.jpg"]: "train", ids1["images/b.jpg"]: "val"}, {}
        )
        add_export(session, built, v1, split1.id, "yolo", "run1")
        add_export(session, built, v1, split1.id, "coco", "run1")

        v2 = repository.add_version(
            session, dataset, v1, cause="revalidation", run_id="run2", created_by="alice"
        )
        repository.store_validation(
            session,
            v2,
            [
                image("images/a.jpg", "sha-a", [Box(0, 10, 10, 50, 50), Box(1, 62, 60, 92, 90)]),
                image("images/b.jpg", "sha-b-reencoded", [Box(0, 0, 0, 20, 20)]),
                image("images/d.jpg", "sha-d", [Box(0, 5, 5, 15, 15)], quarantined=True),
                image("images/e.jpg", "sha-e", [Box(2, 1, 1, 30, 30)]),
            ],
            [],
            verdict(CLASSES_V2, images=4, usable=3, quarantined=1),
            "run2",
        )
        ids2 = repository.image_ids(session, v2.id)
        split2 = repository.add_split(
            session, v2, None, {ids2["images/a.jpg"]: "val", ids2["images/b.jpg"]: "val"}, {}
        )
        add_export(session, built, v2, split2.id, "yolo", "run2")
        built.version_ids = {1: v1.id, 2: v2.id}
    return built


def add_third_version(db: Database, *, passed: bool) -> None:
    """v3: a label edit by bob on top of v2, validated (passed or not) and never exported."""
    with db.session() as session:
        dataset = repository.find_dataset(session, KEY)
        v2 = repository.version_of(session, dataset)
        v3 = repository.add_version(session, dataset, v2, cause="label_edit", run_id="run3", created_by="bob")
        repository.add_verdict(
            session,
            v3,
            repository.Verdict(
                passed=passed,
                reason=None if passed else "62% of images have errors (at most 50% allowed)",
                summary={"images": 4, "usable_images": 1 if not passed else 3, "quarantined": 1},
                content_hash="hash-v3",
                class_names=CLASSES_V2,
            ),
            "run3",
        )
        if not passed:
            repository.set_status(
                session, dataset, "invalid", "62% of images have errors (at most 50% allowed)"
            )


@pytest.fixture
def built(db: Database, storage_root: Path, monkeypatch: pytest.MonkeyPatch) -> Built:
    monkeypatch.setenv("DATABASE_URL", db.url)
    monkeypatch.setenv("DATASET_STORAGE_ROOT", str(storage_root))
    return build(db, storage_root)


def test_list_shows_every_version_with_its_verdict_and_the_newest_exports(built: Built, db: Database, capsys):
    with db.session() as session:
        project = repository.get_or_create_project(session, "bob", "p")
        session.add(
            Dataset(
                project_id=project.id,
                name="broken",
                partition_key="bob-p-broken",
                status="failed",
                status_reason="the archive is not a zip file",
            )
        )

    assert cli.main(["list"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    lines = out.splitlines()
    start = next(index for index, line in enumerate(lines) if KEY in line)
    header, block = lines[start], lines[start + 1 : start + 3]
    assert "alice/traffic" in header and "exported" in header and "v2 yolo" in header
    assert "images=4 usable=3 quarantined=1" in header
    v1, v2 = (line.strip() for line in block)
    assert v1.startswith("v1 upload by alice ") and f"sha256 {'ab' * 6}…" in v1
    assert v1.endswith("images=4 usable=3 passed")
    assert v2.startswith("v2 revalidation by alice ") and v2.endswith("passed")
    assert "exports of v2:" in out
    assert str(built.root / built.export_paths[(2, "yolo")]) in out
    assert str(built.root / built.export_paths[(1, "yolo")]) not in out  # only the newest version's
    broken = lines.index(next(line for line in lines if "bob-p-broken" in line))
    assert "failed" in lines[broken] and "no version" in lines[broken]
    assert lines[broken + 1].strip() == "reason: the archive is not a zip file"


def test_download_writes_the_newest_export_of_the_asked_version(built: Built, tmp_path, monkeypatch, capsys):
    first = tmp_path / "v1.zip"
    assert cli.main(["download", KEY, "--version", "1", "-o", str(first)]) == cli.EXIT_OK
    assert first.read_bytes() == built.export_bytes[(1, "yolo")]
    assert "version 1 of dataset" in capsys.readouterr().out

    coco = tmp_path / "v1-coco.zip"
    assert cli.main(["download", KEY, "--version", "1", "--format", "coco", "-o", str(coco)]) == cli.EXIT_OK
    assert coco.read_bytes() == built.export_bytes[(1, "coco")]

    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert cli.main(["download", KEY]) == cli.EXIT_OK  # newest version, yolo, its own name
    assert (here / "cars-yolo.zip").read_bytes() == built.export_bytes[(2, "yolo")]
    assert [p.name for p in here.iterdir()] == ["cars-yolo.zip"]  # no .part left behind

    assert cli.main(["download", KEY, "--version", "9"]) == cli.EXIT_NOT_FOUND
    assert "has no version 9 (versions: 1, 2)" in capsys.readouterr().err
    assert cli.main(["download", "no-such-dataset"]) == cli.EXIT_NOT_FOUND
    assert "no dataset 'no-such-dataset'" in capsys.readouterr().err


def test_download_of_a_version_without_the_export_names_the_versions_that_have_one(built: Built, db, capsys):
    assert cli.main(["download", KEY, "--version", "2", "--format", "coco"]) == cli.EXIT_NOT_FOUND
    err = capsys.readouterr().err
    assert "version 2 of dataset alice-traffic-cars has no coco export yet (it has yolo)" in err
    assert "versions with a coco export: 1" in err and "dataset_export" in err

    add_third_version(db, passed=True)
    assert cli.main(["download", KEY]) == cli.EXIT_NOT_FOUND
    err = capsys.readouterr().err
    assert "version 3" in err and "versions with a yolo export: 1, 2" in err and "--version" in err


def test_download_of_a_version_that_failed_validation_says_so(built: Built, db, capsys):
    add_third_version(db, passed=False)
    assert cli.main(["download", KEY]) == cli.EXIT_NOT_FOUND
    err = capsys.readouterr().err
    assert "version 3 of dataset alice-traffic-cars failed validation (62% of images have errors" in err
    assert "versions with a yolo export: 1, 2" in err
    assert "dataset_export" not in err and "materialise" not in err


def test_download_says_when_the_recorded_file_is_gone(built: Built, tmp_path, capsys):
    (built.root / built.export_paths[(2, "yolo")]).unlink()
    assert cli.main(["download", KEY, "-o", str(tmp_path / "x.zip")]) == cli.EXIT_NOT_FOUND
    assert "does not exist; check DATASET_STORAGE_ROOT" in capsys.readouterr().err
    assert not (tmp_path / "x.zip").exists()


def test_loader_reads_original_images_boxes_classes_and_splits(built: Built, db):
    with db.session() as session:
        v1 = session.get(DatasetVersion, built.version_ids[1])
        content = load_version_content(session, v1)
    assert content.number == 1
    assert content.class_names == CLASSES_V1
    assert content.image_names == ("images/a.jpg", "images/b.jpg", "images/c.jpg", "images/d.jpg")
    assert content.image_sha256 == ("sha-a", "sha-b", "sha-c", "sha-d")
    assert content.image_splits == ("train", "val", None, None)
    # the augmented copy of a is not part of the version's content
    assert sorted(zip(content.box_image.tolist(), content.box_class.tolist(), strict=True)) == [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
        (3, 0),
    ]
    rows = {
        (i, tuple(xyxy))
        for i, xyxy in zip(content.box_image.tolist(), content.box_xyxy.tolist(), strict=True)
    }
    assert (0, (60.0, 60.0, 90.0, 90.0)) in rows and (3, (5.0, 5.0, 15.0, 15.0)) in rows


def test_diff_json_between_two_versions(built: Built, capsys):
    assert cli.main(["diff", KEY, "--from", "1", "--to", "2", "--json"]) == cli.EXIT_OK
    diff = json.loads(capsys.readouterr().out)
    assert (diff["from"], diff["to"]) == (1, 2)
    assert diff["images"]["added"] == ["images/e.jpg"]
    assert diff["images"]["removed"] == ["images/c.jpg"]
    assert diff["images"]["changed"] == ["images/b.jpg"]
    assert diff["images"]["moved_split"] == [{"image": "images/a.jpg", "from": "train", "to": "val"}]
    assert diff["boxes"]["added"] == 1  # e's truck
    assert diff["boxes"]["removed"] == 1  # b's person
    assert diff["boxes"]["changed"] == 1 and diff["boxes"]["moved"] == 1  # a's person, nudged
    assert diff["boxes"]["relabelled"] == 0
    assert diff["classes"] == {"person": -1, "truck": 1}

    # defaults: --to the newest, --from its parent
    assert cli.main(["diff", KEY, "--json"]) == cli.EXIT_OK
    assert json.loads(capsys.readouterr().out) == diff
    assert cli.main(["diff", KEY]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "Version 1 → 2" in out and "images/e.jpg" in out


def test_diff_without_an_earlier_version_or_with_an_unknown_one(built: Built, capsys):
    assert cli.main(["diff", KEY, "--to", "1"]) == cli.EXIT_USAGE
    assert "first version" in capsys.readouterr().err
    assert cli.main(["diff", KEY, "--from", "5"]) == cli.EXIT_NOT_FOUND
    assert "has no version 5" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["diff", KEY, "--from", "0"])
    assert exit_info.value.code == cli.EXIT_USAGE


def counts(db: Database, version_id: int) -> dict[str, int]:
    with db.session() as session:
        counted = {
            model.__tablename__: session.scalar(
                sa.select(sa.func.count()).select_from(model).where(model.version_id == version_id)
            )
            for model in (Image, Label, Export, SplitReport, Augmentation)
        }
        counted["split_assignments"] = session.scalar(
            sa.select(sa.func.count())
            .select_from(SplitAssignment)
            .join(SplitReport, SplitReport.id == SplitAssignment.split_report_id)
            .where(SplitReport.version_id == version_id)
        )
        counted["versions"] = session.scalar(
            sa.select(sa.func.count()).select_from(DatasetVersion).where(DatasetVersion.id == version_id)
        )
    return counted


def files_under(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*")}


def test_prune_dry_run_changes_nothing_and_yes_removes_the_old_version_and_its_own_files(
    built: Built, db: Database, tmp_path, capsys
):
    # v1 also has a voc export that is a symlink to a file outside the storage: never followed, never deleted.
    outside = tmp_path / "outside.zip"
    outside.write_bytes(b"not yours")
    voc = "alice/traffic/cars/v1/exports/run1/cars-voc.zip"
    (built.root / voc).symlink_to(outside)
    with db.session() as session:
        v1 = session.get(DatasetVersion, built.version_ids[1])
        repository.add_export(session, v1, None, "voc", voc, 9, "0" * 64, "run1")

    before_rows = counts(db, built.version_ids[1])
    before_files = files_under(built.root)
    own = [built.export_paths[(1, "yolo")], built.export_paths[(1, "coco")], built.augmented]
    freed = sum(len(built.export_bytes[(1, fmt)]) for fmt in ("yolo", "coco")) + len(b"flipped" * 20)

    assert cli.main(["prune", KEY, "--keep", "1"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "dry run: would delete version(s) 1 of dataset alice-traffic-cars" in out
    for relative in own:
        assert f"would remove {relative}" in out
    assert f"would free {freed:,} bytes" in out and "--yes" in out
    assert all(shared not in out for shared in built.shared)
    assert counts(db, built.version_ids[1]) == before_rows and before_rows["labels"] == 6
    assert files_under(built.root) == before_files

    assert cli.main(["prune", KEY, "--keep", "1", "--yes"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "deleted version(s) 1 of dataset alice-traffic-cars" in out
    assert f"freed {freed:,} bytes" in out
    assert f"skipped {voc}" in out and "symlink" in out
    assert set(counts(db, built.version_ids[1]).values()) == {0}
    assert counts(db, built.version_ids[2])["labels"] == 5
    with db.session() as session:
        dataset = repository.find_dataset(session, KEY)
        assert [v.number for v in repository.versions_of(session, dataset.id)] == [2]
        assert session.get(DatasetVersion, built.version_ids[2]).parent_id is None
    for relative in own:
        assert not (built.root / relative).exists()
    assert not (built.root / "alice/traffic/cars/v1/augmented").exists()  # left empty, so removed
    for relative in built.shared:
        assert (built.root / relative).exists()
    assert (built.root / "alice/traffic/cars/v1/files/images/a.jpg").is_file()
    assert (built.root / built.export_paths[(2, "yolo")]).is_file()
    assert outside.read_bytes() == b"not yours"

    # the newest version still works end to end
    assert cli.main(["download", KEY, "-o", str(tmp_path / "v2.zip")]) == cli.EXIT_OK
    assert cli.main(["prune", KEY, "--keep", "1", "--yes"]) == cli.EXIT_OK
    assert "nothing to prune" in capsys.readouterr().out


def test_prune_of_an_unknown_dataset_or_without_keep(built: Built, capsys):
    assert cli.main(["prune", "nope", "--keep", "1"]) == cli.EXIT_NOT_FOUND
    assert "no dataset 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["prune", KEY])
    assert exit_info.value.code == cli.EXIT_USAGE


def test_report_prints_every_finding_of_a_version_errors_first_and_as_csv(built: Built, db: Database, capsys):
    import csv
    import io

    from dataset_pipeline.db.models import DatasetVersion
    from dataset_pipeline.domain.model import Issue, Severity

    findings = [
        Issue(Severity.WARNING, "stats.few_samples", "", "class 'bus' has 2 usable boxes"),
        Issue(
            Severity.ERROR,
            "yolo.class_out_of_range",
            "labels/d.txt",
            "class 7 is not 0..1",
            line=3,
            image="images/d.jpg",
        ),
        Issue(Severity.ERROR, "coco.bbox_invalid", "a.json", "bbox, has 3 numbers", annotation_id="12"),
    ]
    with db.session() as session:
        repository.add_findings(session, session.get(DatasetVersion, built.version_ids[1]), findings, "run1")

    assert cli.main(["report", KEY, "--version", "1"]) == cli.EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{KEY} v1: passed; images=4 usable=3 quarantined=1")
    rows = out[2:]
    assert [row.split()[0] for row in rows] == ["error", "error", "warning"]  # errors first
    assert any("labels/d.txt:3" in row and "class 7 is not 0..1" in row for row in rows)
    assert any("a.json (annotation 12)" in row for row in rows)
    assert any("(dataset)" in row and "stats.few_samples" in row for row in rows)

    assert cli.main(["report", KEY, "--version", "1", "--csv", "--severity", "error"]) == cli.EXIT_OK
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["code"], r["file"], r["line"], r["image"]) for r in table] == [
        ("coco.bbox_invalid", "a.json", "", ""),
        ("yolo.class_out_of_range", "labels/d.txt", "3", "images/d.jpg"),
    ]
    assert cli.main(["report", KEY, "--version", "9"]) == cli.EXIT_NOT_FOUND
    assert cli.main(["report", "no-such-dataset"]) == cli.EXIT_NOT_FOUND
