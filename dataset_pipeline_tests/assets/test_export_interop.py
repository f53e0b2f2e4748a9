"""Exports that other tools take as they stand: names kept, COCO ids kept, VOC written in the origin asked for.

Every dataset here goes through the real graph (upload, validation, labels, split, export) on PostgreSQL; an
export is uploaded again as the next dataset where a round trip is checked, so what is compared is what a user
would get out of the zips.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pytest
from PIL import Image

from dataset_pipeline.assets import ALL_ASSETS
from dataset_pipeline.db import repository
from dataset_pipeline.formats import parse_dataset
from dataset_pipeline.local_run import process_upload
from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import LocalDatasetStorage

SIZE = (64, 48)


@pytest.fixture
def resources(db, storage_root):
    return {"database": DatabaseResource(url=db.url), "storage": LocalDatasetStorage(root=str(storage_root))}


def picture(seed: int, fmt: str = "JPEG", size: tuple[int, int] = SIZE) -> bytes:
    """Noise, so no two pictures are near-duplicates (which the split would keep together)."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def write_zip(target: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in sorted(entries.items()):
            archive.writestr(name, data)
    return target


def export_of(
    instance,
    resources,
    db,
    source: Path,
    name: str,
    *,
    copies: int = 0,
    read_origin: int | None = None,
    write_origin: int | None = None,
) -> dict[str, Path]:
    """Run the whole graph for an upload, keeping its splits; the newest export zip of each format."""
    run_config: dict[str, Any] = {
        "augmented_dataset": {"copies_per_image": copies},
        "dataset_splits": {"keep_source_splits": True},
    }
    if read_origin is not None:
        run_config["validated_dataset"] = {"voc_pixel_origin": read_origin}
    if write_origin is not None:
        run_config["dataset_export"] = {"voc_pixel_origin": write_origin}
    key, _ = process_upload(
        instance,
        source,
        user="ann",
        project="interop",
        name=name,
        resources=resources,
        run_config=run_config,
    )
    storage = resources["storage"]
    with db.session() as session:
        dataset = repository.find_dataset(session, key)
        version = repository.version_of(session, dataset)
        return {e.format: storage.resolve(e.path) for e in repository.exports_of(session, version.id)}


def reexport(instance, resources, db, key: str, write_origin: int) -> Path:
    """Export the dataset again, VOC only, in another pixel origin; the new VOC zip."""
    result = dg.materialize(
        ALL_ASSETS,
        selection=["dataset_export"],
        instance=instance,
        partition_key=key,
        resources=resources,
        run_config={
            "ops": {"dataset_export": {"config": {"formats": ["voc"], "voc_pixel_origin": write_origin}}}
        },
    )
    assert result.success
    with db.session() as session:
        version = repository.version_of(session, repository.find_dataset(session, key))
        export = next(e for e in repository.exports_of(session, version.id) if e.format == "voc")
        return resources["storage"].resolve(export.path)


def unpack(archive: Path, target: Path) -> Path:
    with zipfile.ZipFile(archive) as bundle:
        bundle.extractall(target)
    return target


def boxes_by_name(root: Path, **options: Any) -> dict[str, list[tuple[str, float, float, float, float]]]:
    """file name -> sorted (class, x_min, y_min, x_max, y_max), as our reader takes a folder."""
    parsed = parse_dataset(root, **options)
    result = {}
    for image in parsed.images:
        boxes = []
        for box in image.boxes:
            x0, y0, x1, y1 = box.coords
            if box.coords_format == "cxcywh_normalized":
                x0, y0, x1, y1 = (
                    (x0 - x1 / 2) * SIZE[0],
                    (y0 - y1 / 2) * SIZE[1],
                    (x0 + x1 / 2) * SIZE[0],
                    (y0 + y1 / 2) * SIZE[1],
                )
            boxes.append((parsed.class_names[box.class_index], x0, y0, x1, y1))
        result[Path(image.path).name] = sorted(boxes)
    return result


def assert_same_boxes(got: dict, want: dict, relative: float = 1e-6) -> None:
    assert got.keys() == want.keys()
    for name, boxes in want.items():
        assert len(got[name]) == len(boxes), name
        for a, b in zip(got[name], boxes, strict=True):
            assert a[0] == b[0], name
            for u, v in zip(a[1:], b[1:], strict=True):
                assert math.isclose(u, v, rel_tol=relative, abs_tol=relative), (name, a, b)


# --- names ------------------------------------------------------------------------------------------------


def yolo_with_two_img_jpg(tmp_path: Path) -> Path:
    """Two `img.jpg` in different split folders, a PNG, and labels beside them (Roboflow's YOLO layout)."""
    entries = {
        "data.yaml": b"train: train/images\nval: valid/images\nnames:\n  0: car\n  1: truck\n",
        "train/images/img.jpg": picture(1),
        "train/labels/img.txt": b"0 0.5 0.5 0.25 0.25\n",
        "train/images/street.png": picture(2, "PNG"),
        "train/labels/street.txt": b"1 0.25 0.25 0.125 0.25\n",
        "valid/images/img.jpg": picture(3),
        "valid/labels/img.txt": b"1 0.5 0.5 0.5 0.5\n",
    }
    return write_zip(tmp_path / "two-img.zip", entries)


def test_exports_keep_every_original_name_and_rename_one_of_two_img_jpg_deterministically(
    tmp_path, db, dagster_instance, resources
):
    exports = export_of(dagster_instance, resources, db, yolo_with_two_img_jpg(tmp_path), "names", copies=1)
    renamed = f"img-{hashlib.sha256(b'valid/images/img.jpg').hexdigest()[:8]}.jpg"
    expected_places = {
        "yolo": {"images/train/img.jpg", "images/train/street.png", f"images/val/{renamed}"},
        "coco": {"images/train/img.jpg", "images/train/street.png", f"images/val/{renamed}"},
        "voc": {"JPEGImages/img.jpg", "JPEGImages/street.png", f"JPEGImages/{renamed}"},
    }
    for fmt, archive in exports.items():
        with zipfile.ZipFile(archive) as bundle:
            manifest = json.loads(bundle.read("manifest.json"))
            images = {
                path for path in manifest["images"] if not manifest["images"][path].get("augmented_from")
            }
            assert images == expected_places[fmt], fmt
            renamed_path = next(path for path in images if path.endswith(renamed))
            assert manifest["images"][renamed_path] == {"original": "valid/images/img.jpg"}
            kept = next(path for path in images if path.endswith("/img.jpg"))
            assert manifest["images"][kept] == {"original": "train/images/img.jpg"}
            # the augmented copies are named after their source and say which copy they are
            copies = {
                path: origin for path, origin in manifest["images"].items() if "augmented_from" in origin
            }
            assert {Path(path).name for path in copies} == {"img_aug0.jpg", "street_aug0.jpg"}
            assert all(origin["copy"] == 0 for origin in copies.values())
            # the PNG is copied as it was, byte for byte
            png = next(path for path in images if path.endswith("street.png"))
            assert bundle.read(png)[:8] == b"\x89PNG\r\n\x1a\n"
            if fmt == "voc":
                assert f"Annotations/{Path(renamed).stem}.xml" in bundle.namelist()
                assert "Annotations/img.xml" in bundle.namelist()
            assert manifest["voc_pixel_origin"] == 0


# --- YOLO data.yaml ---------------------------------------------------------------------------------------


def test_yolo_data_yaml_has_no_path_so_ultralytics_resolves_it_from_its_own_folder(
    tmp_path, db, dagster_instance, resources
):
    exports = export_of(dagster_instance, resources, db, yolo_with_two_img_jpg(tmp_path), "yaml")
    with zipfile.ZipFile(exports["yolo"]) as bundle:
        import yaml

        config = yaml.safe_load(bundle.read("data.yaml"))
    assert "path" not in config
    assert config["train"] == "images/train" and config["val"] == "images/val"
    assert config["names"] == {0: "car", 1: "truck"}  # as Ultralytics writes it: index -> name


# --- COCO ids -----------------------------------------------------------------------------------------------

CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "human"},
    {"id": 2, "name": "bicycle", "supercategory": "vehicle"},
    {"id": 5, "name": "airplane", "supercategory": "vehicle"},
    {"id": 7, "name": "train", "supercategory": "vehicle"},
    {"id": 9, "name": "boat", "supercategory": "vehicle"},
    {"id": 11, "name": "fire hydrant", "supercategory": "outdoor"},
]


def coco_upload(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    images, annotations = [], []
    for number, image_id in enumerate([1000, 1007, 1010, 1013]):
        name = f"frame_{image_id}.jpg"
        images.append({"id": image_id, "file_name": name, "width": SIZE[0], "height": SIZE[1]})
        for k, category in enumerate((CATEGORIES[number], CATEGORIES[(number + 3) % 6])):
            x, y = 4.0 + 10 * k, 6.0 + 5 * k
            annotations.append(
                {
                    "id": 500 + 10 * number + k,
                    "image_id": image_id,
                    "category_id": category["id"],
                    "bbox": [x, y, 20.0, 16.0],
                    "area": 250.5,
                    "iscrowd": 0,
                    "segmentation": [[x, y, x + 20, y, x + 20, y + 16, x + 10, y + 8]],
                }
            )
    document = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    entries = {f"images/train/{image['file_name']}": picture(image["id"]) for image in images}
    entries["annotations/instances_train.json"] = json.dumps(document).encode()
    return write_zip(tmp_path / "coco.zip", entries), document


def test_coco_to_coco_keeps_category_ids_image_ids_supercategories_and_polygons(
    tmp_path, db, dagster_instance, resources
):
    coco_api = pytest.importorskip("pycocotools.coco")
    upload, document = coco_upload(tmp_path)
    exports = export_of(dagster_instance, resources, db, upload, "coco-ids", copies=1)
    folder = unpack(exports["coco"], tmp_path / "out")
    written = json.loads((folder / "annotations/instances_train.json").read_text())
    assert written["categories"] == CATEGORIES
    ids = {image["file_name"]: image["id"] for image in written["images"]}
    for image in document["images"]:
        assert ids[image["file_name"]] == image["id"]
    augmented = {name: image_id for name, image_id in ids.items() if "_aug" in name}
    assert augmented and min(augmented.values()) > 1013  # new ids above the largest original
    originals = {image_id for name, image_id in ids.items() if "_aug" not in name}
    source = {(a["image_id"], tuple(a["bbox"])): a for a in document["annotations"]}
    for annotation in written["annotations"]:
        if annotation["image_id"] in originals:
            wanted = source[(annotation["image_id"], tuple(annotation["bbox"]))]
            assert annotation["category_id"] == wanted["category_id"]
            assert annotation["segmentation"] == wanted["segmentation"]
            assert annotation["area"] == wanted["area"]
        else:  # an augmented copy: its box only, its area its own
            assert annotation["segmentation"] == []
            assert annotation["area"] == pytest.approx(annotation["bbox"][2] * annotation["bbox"][3])
    api = coco_api.COCO(str(folder / "annotations/instances_train.json"))
    assert sorted(api.getCatIds()) == [1, 2, 5, 7, 9, 11]
    assert set(api.getImgIds()) >= {1000, 1007, 1010, 1013}
    with zipfile.ZipFile(exports["yolo"]) as bundle:
        manifest = json.loads(bundle.read("manifest.json"))
    assert manifest["classes"] == [
        {"name": c["name"], "yolo_index": index, "coco_id": c["id"]} for index, c in enumerate(CATEGORIES)
    ]


# --- round trips -----------------------------------------------------------------------------------------


def test_yolo_to_coco_to_voc_to_yolo_gives_back_every_box(tmp_path, db, dagster_instance, resources):
    from dataset_pipeline.domain.synthetic import generate_dataset

    first = generate_dataset(tmp_path / "yolo", n_images=10, fmt="yolo", seed=4, image_size=SIZE, zipped=True)
    coco = export_of(dagster_instance, resources, db, first, "hop-yolo")["coco"]
    voc = export_of(dagster_instance, resources, db, coco, "hop-coco")["voc"]
    last = export_of(dagster_instance, resources, db, voc, "hop-voc")["yolo"]
    want = boxes_by_name(unpack(first, tmp_path / "first"))
    assert_same_boxes(boxes_by_name(unpack(last, tmp_path / "last")), want)
    assert_same_boxes(boxes_by_name(unpack(voc, tmp_path / "voc")), want)


def voc_upload(tmp_path: Path, origin: int) -> tuple[Path, dict[str, list[tuple[str, ...]]]]:
    """Three hand-written VOC files whose numbers are as a tool with `origin` would write them."""
    objects = {
        "cat_1": [("cat", "3", "5", "30", "40"), ("dog", "10.5", "12.25", "50.75", "47")],
        "cat_2": [("dog", "1", "1", "64", "48")] if origin == 1 else [("dog", "0", "0", "64", "48")],
        "dog_3": [("cat", "20", "2", "21.125", "9.5")],
    }
    entries = {"ImageSets/Main/train.txt": "".join(f"{stem}\n" for stem in objects).encode()}
    for number, (stem, boxes) in enumerate(objects.items()):
        entries[f"JPEGImages/{stem}.jpg"] = picture(100 + number)
        body = "".join(
            f"<object><name>{name}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
            f"<ymax>{y1}</ymax></bndbox></object>"
            for name, x0, y0, x1, y1 in boxes
        )
        entries[f"Annotations/{stem}.xml"] = (
            f"<annotation><filename>{stem}.jpg</filename><size><width>{SIZE[0]}</width>"
            f"<height>{SIZE[1]}</height><depth>3</depth></size>{body}</annotation>"
        ).encode()
    return write_zip(tmp_path / f"voc{origin}.zip", entries), objects


def voc_numbers(folder: Path) -> dict[str, list[tuple[str, ...]]]:
    """stem -> sorted (name, xmin, ymin, xmax, ymax) exactly as the XML text says."""
    result = {}
    for xml in sorted((folder / "Annotations").glob("*.xml")):
        root = ET.parse(xml).getroot()
        result[xml.stem] = sorted(
            (
                obj.findtext("name"),
                *(obj.findtext(f"bndbox/{tag}") for tag in ("xmin", "ymin", "xmax", "ymax")),
            )
            for obj in root.iter("object")
        )
    return result


@pytest.mark.parametrize("origin", [0, 1])
def test_voc_to_yolo_to_voc_in_the_same_origin_writes_the_numbers_it_read(
    origin, tmp_path, db, dagster_instance, resources
):
    upload, objects = voc_upload(tmp_path, origin)
    yolo = export_of(dagster_instance, resources, db, upload, f"voc{origin}", read_origin=origin)["yolo"]
    voc = export_of(dagster_instance, resources, db, yolo, f"voc{origin}-back", write_origin=origin)["voc"]
    folder = unpack(voc, tmp_path / "back")
    assert voc_numbers(folder) == {stem: sorted(boxes) for stem, boxes in objects.items()}
    assert json.loads((folder / "manifest.json").read_text())["voc_pixel_origin"] == origin
    # read as the devkit says, a box starting at pixel 1 starts at the image's edge
    pixels = boxes_by_name(unpack(yolo, tmp_path / "yolo"))
    first = {"cat_1.jpg": 3 - origin, "cat_2.jpg": 0}
    for name, x_min in first.items():
        assert min(box[1] for box in pixels[name]) == pytest.approx(x_min, abs=1e-9)


# --- an independent reader -------------------------------------------------------------------------------


def uploaded_truth(fmt: str, tmp_path: Path) -> tuple[Path, dict[tuple[str, str], list[tuple]]]:
    """A generated upload and what it holds: (split, file name) -> sorted (class, x0, y0, x1, y1)."""
    from dataset_pipeline.domain.synthetic import generate_dataset, make_canonical_dataset

    n_images, seed = 12, 21
    upload = generate_dataset(
        tmp_path / f"truth-{fmt}", n_images=n_images, fmt=fmt, seed=seed, image_size=SIZE, zipped=True
    )
    canonical = make_canonical_dataset(n_images, seed=seed, image_size=SIZE)
    truth = {
        (image.split, image.file_name): sorted(
            (canonical.class_names[b.class_index], b.x_min, b.y_min, b.x_max, b.y_max) for b in image.boxes
        )
        for image in canonical.images
    }
    return upload, truth


@pytest.mark.parametrize("upload_format", ["yolo", "coco", "voc"])
def test_datumaro_reads_every_export_with_our_names_splits_and_boxes(
    upload_format, tmp_path, db, dagster_instance, resources
):
    from dataset_pipeline_tests.readers import read_with_datumaro

    upload, truth = uploaded_truth(upload_format, tmp_path)
    exports = export_of(dagster_instance, resources, db, upload, f"datumaro-{upload_format}")
    exports["voc1"] = reexport(dagster_instance, resources, db, f"ann-interop-datumaro-{upload_format}", 1)
    for fmt, archive in exports.items():
        read = read_with_datumaro(archive, fmt.rstrip("1"), voc_pixel_origin=1 if fmt == "voc1" else 0)
        assert read.keys() == truth.keys(), fmt
        for key, boxes in truth.items():
            assert len(read[key]) == len(boxes), (fmt, key)
            for got, want in zip(sorted(read[key]), boxes, strict=True):
                assert got[0] == want[0], (fmt, key)
                assert got[1:] == pytest.approx(want[1:], abs=1e-3), (fmt, key, got, want)


def test_the_project_default_origin_set_by_the_cli_applies_to_reading_and_writing(
    tmp_path, db, dagster_instance, resources, monkeypatch, capsys
):
    from dataset_pipeline import cli

    monkeypatch.setenv("DATABASE_URL", db.url)
    assert cli.main(["project", "ann", "interop", "--voc-pixel-origin", "1"]) == cli.EXIT_OK
    assert "ann/interop: voc_pixel_origin=1" in capsys.readouterr().out
    assert cli.main(["project", "ann", "interop"]) == cli.EXIT_OK  # shows it without changing it
    assert "voc_pixel_origin=1 (1-based pixels (VOC devkit))" in capsys.readouterr().out
    assert cli.main(["project", "ann", "inbox", "--voc-pixel-origin", "0"]) == cli.EXIT_USAGE

    upload, objects = voc_upload(tmp_path, 1)
    exports = export_of(dagster_instance, resources, db, upload, "devkit")  # no run config: the default
    folder = unpack(exports["voc"], tmp_path / "voc")
    assert voc_numbers(folder) == {stem: sorted(boxes) for stem, boxes in objects.items()}
    assert json.loads((folder / "manifest.json").read_text())["voc_pixel_origin"] == 1
    pixels = boxes_by_name(unpack(exports["yolo"], tmp_path / "yolo"))
    assert min(box[1] for box in pixels["cat_1.jpg"]) == pytest.approx(2.0)  # devkit xmin 3 is edge 2


# --- upload layouts from other tools ------------------------------------------------------------------------


def _voc_xml(stem: str, suffix: str, boxes: list[tuple[str, int, int, int, int]]) -> bytes:
    objects = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax>"
        "</bndbox></object>"
        for n, a, b, c, d in boxes
    )
    return (
        f"<annotation><filename>{stem}{suffix}</filename><size><width>{SIZE[0]}</width>"
        f"<height>{SIZE[1]}</height><depth>3</depth></size>{objects}</annotation>"
    ).encode()


def other_tool_upload(layout: str, tmp_path: Path) -> tuple[Path, dict[str, list[tuple]]]:
    """A small upload in a layout of another tool, and its boxes by file name (xyxy pixel edges)."""
    truth = {
        "a": [("cat", 12.0, 10.0, 28.0, 22.0), ("dog", 30.0, 5.0, 60.0, 45.0)],
        "b": [("dog", 0.0, 0.0, 20.0, 16.0)],
    }
    entries: dict[str, bytes] = {}
    if layout == "voc_side_by_side":  # Roboflow's Pascal VOC: each XML beside its image, per split
        for number, (stem, boxes) in enumerate(truth.items()):
            split = ("train", "valid")[number]
            entries[f"{split}/{stem}.jpg"] = picture(200 + number)
            entries[f"{split}/{stem}.xml"] = _voc_xml(stem, ".jpg", [(n, *map(int, b)) for n, *b in boxes])
        suffix = ".jpg"
    elif layout == "createml":  # Roboflow's CreateML: box centre and size in pixels
        document = []
        for number, (stem, boxes) in enumerate(truth.items()):
            entries[f"train/{stem}.jpg"] = picture(300 + number)
            annotations = [
                {
                    "label": n,
                    "coordinates": {
                        "x": (x0 + x1) / 2,
                        "y": (y0 + y1) / 2,
                        "width": x1 - x0,
                        "height": y1 - y0,
                    },
                }
                for n, x0, y0, x1, y1 in boxes
            ]
            document.append({"image": f"{stem}.jpg", "annotations": annotations})
        entries["train/_annotations.createml.json"] = json.dumps(document).encode()
        suffix = ".jpg"
    else:  # KITTI: type truncated occluded alpha left top right bottom h w l x y z rotation_y
        for number, (stem, boxes) in enumerate(truth.items()):
            entries[f"training/image_2/{stem}.png"] = picture(400 + number, "PNG")
            lines = [
                f"{n.capitalize()} 0.25 1 -1.5 {x0:.2f} {y0:.2f} {x1:.2f} {y1:.2f} 1.5 1.6 3.9 1.0 1.5 10.0 0.1"
                for n, x0, y0, x1, y1 in boxes
            ]
            lines.append("DontCare -1 -1 -10 50.00 40.00 60.00 47.00 -1 -1 -1 -1000 -1000 -1000 -10")
            entries[f"training/label_2/{stem}.txt"] = ("\n".join(lines) + "\n").encode()
        truth = {stem: [(n.capitalize(), *b) for n, *b in boxes] for stem, boxes in truth.items()}
        suffix = ".png"
    upload = write_zip(tmp_path / f"{layout}.zip", entries)
    return upload, {f"{stem}{suffix}": sorted(boxes) for stem, boxes in truth.items()}


@pytest.mark.parametrize("layout", ["voc_side_by_side", "createml", "kitti"])
def test_uploads_in_other_tools_layouts_come_out_of_every_export_with_their_boxes(
    layout, tmp_path, db, dagster_instance, resources
):
    upload, truth = other_tool_upload(layout, tmp_path)
    exports = export_of(dagster_instance, resources, db, upload, layout.replace("_", "-"))
    assert sorted(exports) == ["coco", "voc", "yolo"]
    for fmt, archive in exports.items():
        assert_same_boxes(boxes_by_name(unpack(archive, tmp_path / fmt)), truth)
    if layout == "kitti":  # truncation, occlusion and alpha travel as attributes of the box
        annotations = json.loads((tmp_path / "coco/annotations/instances_train.json").read_text())[
            "annotations"
        ]
        assert {a["attributes"]["kitti_occluded"] for a in annotations} == {1}
        assert {a["attributes"]["kitti_truncated"] for a in annotations} == {0.25}
