"""Augmentation recipes and deterministic, process-pool friendly augmentation of canonical images.

A recipe is plain data (names and parameters of albumentations transforms) so it can be mirrored by a Dagster
`Config`, stored as JSON next to every augmented image, and replayed: the random state of each copy is derived
from (seed, source image key, copy index) alone, so re-running a partition gives byte-identical JPEGs.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import math
import multiprocessing
import os
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dataset_pipeline.domain.image_checks import load_upright_rgb
from dataset_pipeline.domain.model import (
    GEOMETRY_ATTRIBUTES,
    SPLITS,
    AttributeValue,
    Box,
    CanonicalImage,
    LabelState,
)

# albumentations asks PyPI for a newer version on import (up to 2 s, in every spawned worker); a pipeline
# must not phone home, so opt out unless the environment already decided.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A
from albumentations.core.composition import BaseCompose
from albumentations.core.type_definitions import Targets

#: Below this many tasks the spawn start-up of a pool costs more than it saves.
INLINE_BELOW = 16

#: Compositions a recipe may nest other specs in: `params={"transforms": [spec dicts], ...}`.
_COMPOSITIONS: dict[str, type[BaseCompose]] = {
    "OneOf": A.OneOf,
    "SomeOf": A.SomeOf,
    "Sequential": A.Sequential,
}
_ABSTRACT = {"BasicTransform", "DualTransform", "ImageOnlyTransform", "Transform3D"}
#: The image size used to build a recipe once when validating it.
_VALIDATION_SIZE = (640, 480)
#: albumentations computes in float32; rounding to 1/1000 px removes its noise (4.99999988 -> 5.0).
_BOX_DECIMALS = 3


class RecipeError(ValueError):
    """A recipe that albumentations cannot build; the message names the transform and parameter."""


@dataclass(frozen=True)
class TransformSpec:
    """One albumentations transform by class name: `TransformSpec("Affine", {"rotate": [-10, 10]}, 0.5)`."""

    name: str
    params: dict[str, Any]
    p: float


@dataclass(frozen=True)
class AugmentationRecipe:
    """What to do to which images: transforms, copies per source image, box filters and output quality."""

    transforms: list[TransformSpec]
    copies_per_image: int = 1
    seed: int = 0
    min_visibility: float = 0.3
    min_area: float = 16.0
    splits: tuple[str, ...] = ("train",)
    jpeg_quality: int = 90


#: Mild, label-preserving augmentation for detection: geometry that keeps the image size, colour, blur/noise.
DEFAULT_RECIPE = AugmentationRecipe(
    transforms=[
        # height/width are filled from each image, so the crop is resized back to the original size.
        TransformSpec("RandomSizedBBoxSafeCrop", {"erosion_rate": 0.0}, 0.3),
        TransformSpec("HorizontalFlip", {}, 0.5),
        TransformSpec(
            "Affine",
            {
                "scale": [0.9, 1.1],
                "translate_percent": [-0.05, 0.05],
                "rotate": [-10, 10],
                "rotate_method": "ellipse",
                "border_mode": cv2.BORDER_CONSTANT,
                "fill": 114,
            },
            0.5,
        ),
        TransformSpec("RandomBrightnessContrast", {"brightness_limit": 0.2, "contrast_limit": 0.2}, 0.5),
        TransformSpec(
            "HueSaturationValue", {"hue_shift_limit": 10, "sat_shift_limit": 20, "val_shift_limit": 10}, 0.3
        ),
        TransformSpec(
            "OneOf",
            {
                "transforms": [
                    {"name": "Blur", "params": {"blur_limit": [3, 5]}, "p": 1.0},
                    {"name": "GaussNoise", "params": {"std_range": [0.02, 0.08]}, "p": 1.0},
                ]
            },
            0.2,
        ),
    ],
)


# --- recipes as JSON ---------------------------------------------------------------------------------------


def _json_safe(value: Any, where: str) -> Any:
    """Tuples become lists and numpy scalars Python numbers, so a stored recipe reads back equal."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_json_safe(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item, f"{where}.{key}") for key, item in value.items()}
    raise RecipeError(f"{where}: {type(value).__name__} is not JSON-safe; use numbers, strings and lists")


def spec_to_dict(spec: TransformSpec) -> dict[str, Any]:
    return {"name": spec.name, "params": _json_safe(spec.params, spec.name), "p": float(spec.p)}


def spec_from_dict(data: Mapping[str, Any], where: str = "transform") -> TransformSpec:
    unknown = set(data) - {"name", "params", "p"}
    if unknown or "name" not in data or "p" not in data:
        raise RecipeError(f"{where}: expected keys name, p and optional params, got {sorted(data)}")
    return TransformSpec(name=str(data["name"]), params=dict(data.get("params") or {}), p=float(data["p"]))


def recipe_to_dict(recipe: AugmentationRecipe) -> dict[str, Any]:
    """JSON-safe form stored with each augmented image; `recipe_from_dict` reads it back."""
    return {
        "transforms": [spec_to_dict(spec) for spec in recipe.transforms],
        "copies_per_image": recipe.copies_per_image,
        "seed": recipe.seed,
        "min_visibility": recipe.min_visibility,
        "min_area": recipe.min_area,
        "splits": list(recipe.splits),
        "jpeg_quality": recipe.jpeg_quality,
    }


def recipe_from_dict(data: Mapping[str, Any]) -> AugmentationRecipe:
    """Rebuild a recipe; unknown keys are an error so a typo is not silently ignored."""
    known = {"transforms", "copies_per_image", "seed", "min_visibility", "min_area", "splits", "jpeg_quality"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise RecipeError(f"recipe: unknown key(s) {unknown}; known keys are {sorted(known)}")
    defaults = AugmentationRecipe(transforms=[])
    return AugmentationRecipe(
        transforms=[
            spec_from_dict(item, f"transform #{i + 1}") for i, item in enumerate(data.get("transforms", []))
        ],
        copies_per_image=int(data.get("copies_per_image", defaults.copies_per_image)),
        seed=int(data.get("seed", defaults.seed)),
        min_visibility=float(data.get("min_visibility", defaults.min_visibility)),
        min_area=float(data.get("min_area", defaults.min_area)),
        splits=tuple(data.get("splits", defaults.splits)),
        jpeg_quality=int(data.get("jpeg_quality", defaults.jpeg_quality)),
    )


# --- building albumentations pipelines ---------------------------------------------------------------------


def _transform_names() -> list[str]:
    return sorted(
        name
        for name, obj in vars(A).items()
        if inspect.isclass(obj) and issubclass(obj, A.BasicTransform) and name not in _ABSTRACT
    )


def _transform_class(name: str, where: str) -> type[A.BasicTransform] | type[BaseCompose]:
    """Only albumentations transforms that can carry boxes; anything else is named back with suggestions."""
    if name in _COMPOSITIONS:
        return _COMPOSITIONS[name]
    cls = getattr(A, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, A.BasicTransform)) or name in _ABSTRACT:
        close = difflib.get_close_matches(name, [*_transform_names(), *_COMPOSITIONS], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see albumentations' transform list"
        raise RecipeError(f"{where}: {name!r} is not an albumentations {A.__version__} transform{hint}")
    targets = cls._targets if isinstance(cls._targets, tuple) else (cls._targets,)
    if Targets.BBOXES not in targets and not issubclass(cls, A.ImageOnlyTransform):
        raise RecipeError(f"{where}: {name} cannot move bounding boxes, so it cannot be used for detection")
    return cls


def _build_transform(
    spec: TransformSpec, image_size: tuple[int, int] | None, where: str
) -> A.BasicTransform | BaseCompose:
    where = f"{where} {spec.name!r}"
    cls = _transform_class(spec.name, where)
    if not 0.0 <= spec.p <= 1.0:
        raise RecipeError(f"{where}: p must be between 0 and 1, got {spec.p}")
    params = dict(spec.params)
    if "p" in params:
        raise RecipeError(f"{where}: give the probability as the spec's p, not in params")
    if issubclass(cls, BaseCompose):
        children = params.pop("transforms", None)
        if not isinstance(children, list) or not children:
            raise RecipeError(f"{where}: params.transforms must be a non-empty list of transform specs")
        params["transforms"] = [
            _build_transform(spec_from_dict(child, f"{where}[{i}]"), image_size, f"{where}[{i}]")
            for i, child in enumerate(children)
        ]
    else:
        signature = inspect.signature(cls)
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
        unknown = sorted(set(params) - set(signature.parameters))
        if unknown and not accepts_any:
            allowed = sorted(set(signature.parameters) - {"p"})
            raise RecipeError(f"{where}: unknown parameter(s) {unknown}; {spec.name} accepts {allowed}")
        if image_size is not None:
            width, height = image_size
            # A crop's required output size, left out by the recipe, is the image's: the copy keeps its size.
            for name, value in {"height": height, "width": width, "size": (height, width)}.items():
                parameter = signature.parameters.get(name)
                if parameter is not None and parameter.default is inspect.Parameter.empty:
                    params.setdefault(name, value)
    try:
        return cls(**params, p=spec.p)
    except Exception as exc:  # albumentations reports bad values as pydantic ValueErrors or TypeErrors
        raise RecipeError(f"{where}: {exc}") from exc


def build_pipeline(recipe: AugmentationRecipe, *, image_size: tuple[int, int] | None = None) -> A.Compose:
    """Build the albumentations pipeline; `image_size` (width, height) fills a crop's missing output size.

    Building costs about a millisecond, so callers build one per image rather than share a stateful pipeline.
    """
    transforms = [
        _build_transform(spec, image_size, f"transform #{i + 1}") for i, spec in enumerate(recipe.transforms)
    ]
    bbox_params = A.BboxParams(
        format="pascal_voc",
        label_fields=["box_indices"],
        min_visibility=recipe.min_visibility,
        min_area=recipe.min_area,
        clip=True,
    )
    try:
        return A.Compose(transforms, bbox_params=bbox_params)
    except Exception as exc:
        raise RecipeError(f"recipe: albumentations could not compose it: {exc}") from exc


def validate_recipe(recipe: AugmentationRecipe) -> None:
    """Raise `RecipeError` naming the first bad setting; builds the pipeline once as albumentations would."""
    if recipe.copies_per_image < 0:  # 0 is a recipe too: no copies, the originals alone are split
        raise RecipeError(f"recipe: copies_per_image must not be negative, got {recipe.copies_per_image}")
    if not 0.0 <= recipe.min_visibility <= 1.0:
        raise RecipeError(f"recipe: min_visibility must be between 0 and 1, got {recipe.min_visibility}")
    if recipe.min_area < 0:
        raise RecipeError(f"recipe: min_area must not be negative, got {recipe.min_area}")
    if not 1 <= recipe.jpeg_quality <= 100:
        raise RecipeError(f"recipe: jpeg_quality must be between 1 and 100, got {recipe.jpeg_quality}")
    bad_splits = sorted(set(recipe.splits) - set(SPLITS))
    if not recipe.splits or bad_splits:
        raise RecipeError(
            f"recipe: splits must be a non-empty subset of {list(SPLITS)}, got {list(recipe.splits)}"
        )
    if not recipe.transforms:
        raise RecipeError("recipe: transforms is empty; an augmented copy would equal its source")
    recipe_to_dict(recipe)  # parameters that cannot be stored as JSON cannot be replayed either
    build_pipeline(recipe, image_size=_VALIDATION_SIZE)


# --- boxes, images, seeds ----------------------------------------------------------------------------------


def clip_boxes_xyxy(
    boxes: np.ndarray, width: float, height: float, tolerance_px: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Clip (N, 4) xyxy pixel boxes into the image and say which are still boxes.

    albumentations rejects a normalised 1.0000002, so boxes are clipped before and after it. A box that
    sticks out by more than `tolerance_px` does not belong to an image of this size and is dropped, as is one
    with no width or height left after clipping.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    limits = np.array([width, height, width, height], dtype=np.float64)
    clipped = np.clip(boxes, 0.0, limits)
    overshoot = np.maximum(-boxes, boxes - limits).max(axis=1, initial=-np.inf)
    keep = (
        np.isfinite(boxes).all(axis=1)
        & (overshoot <= tolerance_px)
        & (clipped[:, 2] > clipped[:, 0])
        & (clipped[:, 3] > clipped[:, 1])
    )
    return clipped, keep


def derive_seed(seed: int, source_key: str, copy_index: int) -> int:
    """A 64-bit seed from the inputs alone; `hash()` would differ between processes (PYTHONHASHSEED)."""
    digest = hashlib.sha256(json.dumps([seed, source_key, copy_index]).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """OpenCV's encoder: several times faster than Pillow's and deterministic for the same pixels."""
    ok, buffer = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as JPEG")
    return buffer.tobytes()


# --- augmenting --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class AugmentTask:
    """Everything one augmented copy needs, small enough to pickle to a worker process.

    `seed` is the base seed (normally `recipe.seed`); the copy's own seed is derived from it, the source key
    and the copy index.
    """

    source_path: Path
    source_key: str  # stable name of the source image, e.g. CanonicalImage.file_name
    boxes_xyxy: np.ndarray  # (N, 4) float pixels of the upright image
    class_indices: np.ndarray  # (N,) int
    attributes: tuple[Mapping[str, AttributeValue], ...]
    recipe: dict[str, Any]  # recipe_to_dict(...)
    copy_index: int
    seed: int


@dataclass(frozen=True)
class AugmentResult:
    source_key: str
    copy_index: int
    seed: int  # the derived seed the pipeline ran with
    jpeg: bytes
    width: int
    height: int
    boxes: tuple[Box, ...]
    boxes_dropped: int  # boxes of the source that did not survive (out of frame, below min_visibility/area)


def make_tasks(images: Iterable[CanonicalImage], recipe: AugmentationRecipe) -> list[AugmentTask]:
    """Tasks for every copy of every image in the recipe's splits.

    Unlabelled images are skipped: their copies would be exported as background, which nobody checked.
    """
    recipe_dict = recipe_to_dict(recipe)
    tasks: list[AugmentTask] = []
    for image in images:
        if image.split not in recipe.splits or image.label_state is LabelState.UNLABELLED:
            continue
        boxes = np.array([[b.x_min, b.y_min, b.x_max, b.y_max] for b in image.boxes], dtype=np.float64)
        classes = np.array([b.class_index for b in image.boxes], dtype=np.int64)
        attributes = tuple(
            {k: v for k, v in b.attributes.items() if k not in GEOMETRY_ATTRIBUTES} for b in image.boxes
        )
        for copy_index in range(recipe.copies_per_image):
            tasks.append(
                AugmentTask(
                    source_path=image.source_path,
                    source_key=image.file_name,
                    boxes_xyxy=boxes.reshape(-1, 4),
                    class_indices=classes,
                    attributes=attributes,
                    recipe=recipe_dict,
                    copy_index=copy_index,
                    seed=recipe.seed,
                )
            )
    return tasks


def augment_image(task: AugmentTask) -> AugmentResult:
    """Produce one augmented copy; top-level so a spawn process pool can pickle it."""
    try:
        return _augment(task)
    except Exception as exc:
        exc.add_note(f"while augmenting {task.source_key} (copy {task.copy_index}) from {task.source_path}")
        raise


def _augment(task: AugmentTask) -> AugmentResult:
    recipe = recipe_from_dict(task.recipe)
    image = load_upright_rgb(task.source_path)
    height, width = image.shape[:2]
    boxes, keep = clip_boxes_xyxy(task.boxes_xyxy, width, height)
    indices = np.flatnonzero(keep)

    seed = derive_seed(task.seed, task.source_key, task.copy_index)
    pipeline = build_pipeline(recipe, image_size=(width, height))
    # One shared generator: per-transform generators seeded alike (set_random_seed) would make every
    # transform's "do I apply?" draw the same.
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
    out = pipeline(image=image, bboxes=boxes[indices], box_indices=indices)

    augmented = np.ascontiguousarray(out["image"])
    out_height, out_width = augmented.shape[:2]
    out_boxes, out_keep = clip_boxes_xyxy(
        np.asarray(out["bboxes"], dtype=np.float64).reshape(-1, 4), out_width, out_height
    )
    out_boxes = out_boxes.round(_BOX_DECIMALS)
    out_indices = np.asarray(out["box_indices"], dtype=np.int64)
    kept = tuple(
        Box(
            class_index=int(task.class_indices[source]),
            x_min=float(x_min),
            y_min=float(y_min),
            x_max=float(x_max),
            y_max=float(y_max),
            attributes=dict(task.attributes[source]),
        )
        for (x_min, y_min, x_max, y_max), source in zip(
            out_boxes[out_keep], out_indices[out_keep], strict=True
        )
    )
    return AugmentResult(
        source_key=task.source_key,
        copy_index=task.copy_index,
        seed=seed,
        jpeg=encode_jpeg(augmented, recipe.jpeg_quality),
        width=out_width,
        height=out_height,
        boxes=kept,
        boxes_dropped=len(task.boxes_xyxy) - len(kept),
    )


def _init_worker() -> None:
    # Each worker is one of several processes already; OpenCV's own threads would only oversubscribe.
    cv2.setNumThreads(1)


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class _Progress:
    total: int
    callback: Callable[[int, int], None] | None
    done: int = 0
    step: int = field(init=False)

    def __post_init__(self) -> None:
        self.step = max(1, math.ceil(self.total / 20))

    def advance(self) -> None:
        self.done += 1
        if self.callback is not None and (self.done % self.step == 0 or self.done == self.total):
            self.callback(self.done, self.total)


def augment_many(
    tasks: Sequence[AugmentTask],
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[AugmentResult]:
    """Augment in a spawn process pool, yielding results in input order; `progress(done, total)` every ~5%.

    At most a few tasks per worker are in flight, so a slow consumer holds back the pool instead of letting
    finished JPEGs pile up in memory. Small inputs run inline.
    """
    workers = _default_workers() if workers is None else max(1, workers)
    tracker = _Progress(len(tasks), progress)
    if len(tasks) < INLINE_BELOW or workers == 1:
        for task in tasks:
            result = augment_image(task)
            tracker.advance()
            yield result
        return

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
        waiting = iter(tasks)
        in_flight: deque[Future[AugmentResult]] = deque(
            pool.submit(augment_image, task) for _, task in zip(range(workers * 4), waiting, strict=False)
        )
        try:
            while in_flight:
                result = in_flight.popleft().result()
                following = next(waiting, None)
                if following is not None:
                    in_flight.append(pool.submit(augment_image, following))
                tracker.advance()
                yield result
        finally:
            for future in in_flight:
                future.cancel()
