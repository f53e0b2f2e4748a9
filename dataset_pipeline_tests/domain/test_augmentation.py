"""Recipes fail loudly and by name; augmented copies are deterministic and their boxes follow the pixels."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataset_pipeline.domain.augmentation import (
    DEFAULT_RECIPE,
    AugmentationRecipe,
    AugmentTask,
    RecipeError,
    TransformSpec,
    augment_image,
    augment_many,
    clip_boxes_xyxy,
    derive_seed,
    make_tasks,
    recipe_from_dict,
    recipe_to_dict,
    validate_recipe,
)
from dataset_pipeline.domain.model import Box, CanonicalImage, LabelState
from dataset_pipeline.domain.sample_grid import sample_grid_png

WIDTH, HEIGHT = 64, 48
FLIP_ONLY = AugmentationRecipe(transforms=[TransformSpec("HorizontalFlip", {}, 1.0)])
NOISY = AugmentationRecipe(
    transforms=[
        TransformSpec("RandomBrightnessContrast", {}, 1.0),
        TransformSpec("GaussNoise", {"std_range": [0.05, 0.1]}, 1.0),
    ]
)


def _write_image(path: Path, seed: int = 0, size: tuple[int, int] = (WIDTH, HEIGHT)) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)
    return path


def _task(
    path: Path,
    boxes: list[list[float]],
    recipe: AugmentationRecipe = DEFAULT_RECIPE,
    *,
    seed: int = 0,
    copy_index: int = 0,
    key: str | None = None,
) -> AugmentTask:
    return AugmentTask(
        source_path=path,
        source_key=key or path.name,
        boxes_xyxy=np.array(boxes, dtype=np.float64).reshape(-1, 4),
        class_indices=np.arange(len(boxes), dtype=np.int64),
        attributes=tuple({"difficult": i == 0} for i in range(len(boxes))),
        recipe=recipe_to_dict(recipe),
        copy_index=copy_index,
        seed=seed,
    )


# --- recipes -----------------------------------------------------------------------------------------------


def test_default_recipe_validates_and_survives_json() -> None:
    validate_recipe(DEFAULT_RECIPE)
    stored = json.loads(json.dumps(recipe_to_dict(DEFAULT_RECIPE)))
    assert recipe_from_dict(stored) == DEFAULT_RECIPE
    assert recipe_to_dict(recipe_from_dict(stored)) == stored
    validate_recipe(recipe_from_dict(stored))


def test_the_safe_crop_keeps_the_image_size_with_and_without_boxes(tmp_path: Path) -> None:
    image = _write_image(tmp_path / "crop.jpg")
    crop_only = AugmentationRecipe(transforms=[TransformSpec("RandomSizedBBoxSafeCrop", {}, 1.0)], min_area=1)
    for copy_index in range(3):
        for boxes in ([[10, 10, 30, 30]], []):
            result = augment_image(_task(image, boxes, crop_only, copy_index=copy_index))
            assert (result.width, result.height) == (WIDTH, HEIGHT)
            assert len(result.boxes) == len(boxes) and result.boxes_dropped == 0


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        (TransformSpec("HorizontalFlipp", {}, 0.5), ["HorizontalFlipp", "did you mean HorizontalFlip"]),
        (TransformSpec("Affine", {"scale": "large"}, 0.5), ["Affine", "scale"]),
        (TransformSpec("Affine", {"rotat": 10}, 0.5), ["Affine", "rotat", "rotate"]),
        (TransformSpec("Blur", {}, 1.5), ["Blur", "p must be between 0 and 1"]),
        (TransformSpec("OneOf", {"transforms": [{"name": "GausNoise", "p": 1}]}, 0.5), ["GausNoise"]),
        (TransformSpec("Pad3D", {}, 0.5), ["Pad3D", "cannot move bounding boxes"]),
    ],
)
def test_a_bad_transform_is_named(spec: TransformSpec, named: list[str]) -> None:
    recipe = AugmentationRecipe(transforms=[TransformSpec("HorizontalFlip", {}, 0.5), spec])
    with pytest.raises(RecipeError, match="transform #2") as raised:
        validate_recipe(recipe)
    for text in named:
        assert text in str(raised.value)


def test_bad_recipe_settings_and_keys_are_named() -> None:
    with pytest.raises(RecipeError, match="splits"):
        validate_recipe(dataclasses.replace(DEFAULT_RECIPE, splits=("training",)))
    with pytest.raises(RecipeError, match="jpeg_quality"):
        validate_recipe(dataclasses.replace(DEFAULT_RECIPE, jpeg_quality=0))
    with pytest.raises(RecipeError, match="copies"):
        recipe_from_dict({**recipe_to_dict(DEFAULT_RECIPE), "copies": 3})


# --- boxes -------------------------------------------------------------------------------------------------


def test_clip_boxes_xyxy_absorbs_float_noise_and_drops_what_is_not_a_box() -> None:
    boxes = np.array(
        [
            [0.0, 0.0, WIDTH * 1.0000002, HEIGHT * 1.0000002],  # normalised 1.0000002
            [-1.5, 10, 20, 20],  # within tolerance
            [-30, 10, 20, 20],  # far outside: not this image's box
            [10, 10, 10, 20],  # no width
            [np.nan, 1, 2, 3],
        ]
    )
    clipped, keep = clip_boxes_xyxy(boxes, WIDTH, HEIGHT)
    assert keep.tolist() == [True, True, False, False, False]
    np.testing.assert_array_equal(clipped[0], [0, 0, WIDTH, HEIGHT])
    np.testing.assert_array_equal(clipped[1], [0, 10, 20, 20])
    clipped, keep = clip_boxes_xyxy(np.zeros((0, 4)), WIDTH, HEIGHT)
    assert clipped.shape == (0, 4) and keep.shape == (0,)


def test_boxes_at_the_edge_with_float_noise_do_not_crash(tmp_path: Path) -> None:
    image = _write_image(tmp_path / "edge.jpg")
    edge = [WIDTH * 0.5, HEIGHT * 0.5, WIDTH * 1.0000002, HEIGHT * 1.0000002]
    for recipe in (DEFAULT_RECIPE, FLIP_ONLY):
        result = augment_image(_task(image, [edge, [0, 0, WIDTH * 1.0000002, 10]], recipe))
        for box in result.boxes:
            assert 0 <= box.x_min < box.x_max <= result.width
            assert 0 <= box.y_min < box.y_max <= result.height


def test_boxes_below_min_visibility_are_dropped_and_counted(tmp_path: Path) -> None:
    image = _write_image(tmp_path / "crop.jpg")
    left_half = AugmentationRecipe(
        transforms=[TransformSpec("Crop", {"x_min": 0, "y_min": 0, "x_max": 32, "y_max": HEIGHT}, 1.0)],
        min_visibility=0.3,
        min_area=4,
    )
    boxes = [
        [4, 4, 20, 20],  # fully inside the kept half
        [22, 4, 42, 20],  # half visible: kept, clipped
        [30, 4, 50, 20],  # 10% visible: dropped
        [40, 4, 60, 20],  # outside the crop: dropped
    ]
    result = augment_image(_task(image, boxes, left_half))
    assert (result.width, result.height) == (32, HEIGHT)
    assert result.boxes_dropped == 2
    assert [(b.class_index, b.x_min, b.x_max) for b in result.boxes] == [(0, 4, 20), (1, 22, 32)]
    assert result.boxes[0].attributes == {"difficult": True}


# --- determinism and geometry ------------------------------------------------------------------------------


def test_same_inputs_give_same_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    image = _write_image(tmp_path / "a.jpg")
    boxes = [[5, 5, 30, 30], [20, 10, 60, 40]]
    for recipe in (DEFAULT_RECIPE, NOISY):
        first = augment_image(_task(image, boxes, recipe, seed=7))
        again = augment_image(_task(image, boxes, recipe, seed=7))
        assert first == again
    assert augment_image(_task(image, boxes, NOISY, seed=8)).jpeg != first.jpeg
    assert augment_image(_task(image, boxes, NOISY, seed=7, copy_index=1)).jpeg != first.jpeg
    assert derive_seed(7, "a.jpg", 0) == derive_seed(7, "a.jpg", 0) != derive_seed(7, "b.jpg", 0)


def test_flip_moves_the_box_to_the_mirrored_place(tmp_path: Path) -> None:
    pixels = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    pixels[5:15, 10:20] = 255  # the object under the box
    path = tmp_path / "square.png"
    Image.fromarray(pixels).save(path)

    result = augment_image(_task(path, [[10, 5, 20, 15]], FLIP_ONLY))

    assert result.boxes == (Box(0, WIDTH - 20, 5, WIDTH - 10, 15, {"difficult": True}),)
    flipped = np.asarray(Image.open(io.BytesIO(result.jpeg)).convert("L"), dtype=np.float64)
    assert flipped[5:15, WIDTH - 20 : WIDTH - 10].mean() > 200
    assert flipped[5:15, 10:20].mean() < 50


def test_exif_rotated_source_is_augmented_upright(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[274] = 6  # stored landscape, shown rotated 90 degrees clockwise
    Image.new("RGB", (WIDTH, HEIGHT), (10, 200, 10)).save(path, exif=exif)
    result = augment_image(_task(path, [[1, 1, 40, 60]], FLIP_ONLY))
    assert (result.width, result.height) == (HEIGHT, WIDTH)
    assert result.boxes[0].y_max == 60


def test_pool_keeps_input_order_and_matches_inline_bytes(tmp_path: Path) -> None:
    tasks = [
        _task(_write_image(tmp_path / f"img{i:02d}.jpg", seed=i), [[2, 2, 30 + i, 40]], seed=3)
        for i in range(20)
    ]
    calls: list[tuple[int, int]] = []

    pooled = list(augment_many(tasks, workers=2, progress=lambda done, total: calls.append((done, total))))

    # Spawned workers have their own PYTHONHASHSEED: equal bytes show the seed does not depend on hash().
    inline = [augment_image(task) for task in tasks]
    assert [r.source_key for r in pooled] == [t.source_key for t in tasks]
    assert pooled == inline
    assert calls[-1] == (20, 20) and len(calls) == 20
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_small_inputs_run_inline_and_report_progress(tmp_path: Path) -> None:
    tasks = [
        _task(_write_image(tmp_path / "one.jpg"), [[2, 2, 30, 40]], FLIP_ONLY, copy_index=i) for i in range(3)
    ]
    calls: list[tuple[int, int]] = []
    results = list(augment_many(tasks, progress=lambda done, total: calls.append((done, total))))
    assert [r.copy_index for r in results] == [0, 1, 2]
    assert calls[-1] == (3, 3)


def test_make_tasks_takes_recipe_splits_and_skips_unlabelled(tmp_path: Path) -> None:
    def image(name: str, split: str, state: LabelState = LabelState.LABELLED) -> CanonicalImage:
        boxes = [Box(1, 1, 2, 3, 4, {"truncated": True})] if state is LabelState.LABELLED else []
        return CanonicalImage(name, tmp_path / name, WIDTH, HEIGHT, split, boxes, state)

    recipe = dataclasses.replace(DEFAULT_RECIPE, copies_per_image=2, seed=5)
    tasks = make_tasks(
        [
            image("a.jpg", "train"),
            image("b.jpg", "val"),
            image("c.jpg", "train", LabelState.UNLABELLED),
            image("d.jpg", "train", LabelState.BACKGROUND),
        ],
        recipe,
    )
    assert [(t.source_key, t.copy_index) for t in tasks] == [
        ("a.jpg", 0),
        ("a.jpg", 1),
        ("d.jpg", 0),
        ("d.jpg", 1),
    ]
    assert tasks[0].boxes_xyxy.tolist() == [[1, 2, 3, 4]] and tasks[0].attributes == ({"truncated": True},)
    assert tasks[2].boxes_xyxy.shape == (0, 4)
    assert all(t.seed == 5 and recipe_from_dict(t.recipe) == recipe for t in tasks)


def test_sample_grid_is_a_deterministic_png(tmp_path: Path) -> None:
    source = np.asarray(Image.open(_write_image(tmp_path / "s.jpg")))
    boxes = [Box(0, 0, 0, 20, 20), Box(7, 30, 10, 60, 40)]  # class 7 has no name: its index is drawn
    pairs = [(source, boxes, source[:, ::-1], boxes[:1])] * 5

    png = sample_grid_png(pairs, ["cat"], max_pairs=2)

    assert png == sample_grid_png(pairs, ["cat"], max_pairs=2)
    grid = Image.open(io.BytesIO(png))
    assert grid.format == "PNG" and 900 <= grid.width <= 1100
    assert sample_grid_png([], ["cat"]).startswith(b"\x89PNG")
