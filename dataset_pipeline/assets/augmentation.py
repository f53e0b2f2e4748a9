"""augmented_dataset: new training images of a version from an albumentations recipe set in the launchpad.

Every run adds an augmentation (its own folder, `v{N}/augmented/{run_id}/`); later stages read the newest.
"""

import hashlib
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import dagster as dg
import numpy as np
from pydantic import Field

from dataset_pipeline.assets.common import (
    ASSET_GROUP,
    CPU_POOL,
    RERUN_WHEN_UPSTREAM_CHANGES,
    TRANSIENT_ERROR_RETRY,
    clean_up_interrupted_writes,
    failing_clearly_when_disk_full,
    progress_logger,
    retry_transient_errors_only,
    validated_version,
    version_metadata,
)
from dataset_pipeline.assets.distribution import class_distribution
from dataset_pipeline.assets.pictures import picture_metadata
from dataset_pipeline.db import repository
from dataset_pipeline.db.models import Dataset
from dataset_pipeline.domain.augmentation import (
    DEFAULT_RECIPE,
    AugmentationRecipe,
    AugmentResult,
    RecipeError,
    augment_many,
    load_upright_rgb,
    make_tasks,
    recipe_to_dict,
    spec_from_dict,
    validate_recipe,
)
from dataset_pipeline.domain.model import Box, CanonicalImage, LabelState
from dataset_pipeline.domain.sample_grid import sample_grid_png
from dataset_pipeline.partitions import dataset_partitions
from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import LocalDatasetStorage, replace_directory

AUGMENTED_FOLDER = "augmented"


class TransformConfig(dg.Config):
    name: str = Field(description="An albumentations transform class, e.g. HorizontalFlip, Affine, OneOf")
    params: dict[str, Any] = Field(default={}, description="Its keyword arguments")
    p: float = Field(default=1.0, description="Probability of applying it")


class AugmentationConfig(dg.Config):
    """The recipe, editable in the launchpad; the default is a mild detection-safe recipe."""

    transforms: list[TransformConfig] = Field(
        default=[
            {"name": t.name, "params": t.params, "p": t.p}  # type: ignore[misc]
            for t in DEFAULT_RECIPE.transforms
        ]
    )
    copies_per_image: int = Field(default=DEFAULT_RECIPE.copies_per_image, ge=0, le=50)
    seed: int = DEFAULT_RECIPE.seed
    min_visibility: float = Field(default=DEFAULT_RECIPE.min_visibility, ge=0.0, le=1.0)
    min_area: float = Field(default=DEFAULT_RECIPE.min_area, ge=0.0)
    splits: list[str] = Field(
        default=list(DEFAULT_RECIPE.splits),
        description="Source splits to augment; images without a source split count as train",
    )
    jpeg_quality: int = Field(default=DEFAULT_RECIPE.jpeg_quality, ge=50, le=100)
    workers: int = Field(default=0, description="Augmentation processes; 0 = one per CPU")

    def recipe(self) -> AugmentationRecipe:
        specs = [
            spec_from_dict(t if isinstance(t, dict) else t.model_dump(), f"transforms[{i}]")
            for i, t in enumerate(self.transforms)
        ]
        return AugmentationRecipe(
            transforms=specs,
            copies_per_image=self.copies_per_image,
            seed=self.seed,
            min_visibility=self.min_visibility,
            min_area=self.min_area,
            splits=tuple(self.splits),
            jpeg_quality=self.jpeg_quality,
        )


def augmented_name(source_relative_path: str, copy_index: int) -> str:
    stem = Path(source_relative_path).with_suffix("").as_posix().replace("/", "__")
    return f"{stem}__aug{copy_index}.jpg"


def canonical_images(originals: Sequence[repository.StoredImage], files: Path) -> list[CanonicalImage]:
    """The version's usable originals as the augmentation domain reads them (no source split counts as train)."""
    return [
        CanonicalImage(
            file_name=image.relative_path,
            source_path=files / image.relative_path,
            width=image.width,
            height=image.height,
            split=image.source_split or "train",
            boxes=image.boxes,
            label_state=LabelState(image.label_state),
        )
        for image in originals
    ]


@contextmanager
def staged_folder(folder: Path, staging_name: str) -> Iterator[Path]:
    """A hidden sibling to write into that becomes `folder` only when the block finishes.

    `replace_directory` rather than a bare `os.replace`: a step retried within the same run finds the folder
    its earlier attempt published.
    """
    staging = folder.with_name(staging_name)
    try:
        staging.mkdir(parents=True)
        yield staging
        replace_directory(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@dg.asset(
    partitions_def=dataset_partitions,
    deps=[class_distribution],
    group_name=ASSET_GROUP,
    pool=CPU_POOL,
    kinds={"python", "postgres"},
    retry_policy=TRANSIENT_ERROR_RETRY,
    automation_condition=RERUN_WHEN_UPSTREAM_CHANGES,
    description="Augmented copies of valid training images, each stored with its source and recipe.",
)
@retry_transient_errors_only
def augmented_dataset(
    context: dg.AssetExecutionContext,
    config: AugmentationConfig,
    database: DatabaseResource,
    storage: LocalDatasetStorage,
) -> dg.MaterializeResult:
    try:
        recipe = config.recipe()
        validate_recipe(recipe)
    except RecipeError as error:
        raise dg.Failure(
            f"Dataset {context.partition_key}: the augmentation recipe is not valid: {str(error).rstrip('.')}. "
            "Nothing was augmented; correct the recipe in the launchpad of augmented_dataset (the README's "
            "augmentation section lists its fields) and materialise it again.",
            allow_retries=False,
        ) from None

    with database.session() as session:
        dataset, version, verdict = validated_version(session, context.partition_key)
        user, project = repository.owner_of(session, dataset)
        originals = repository.load_images(session, version.id)

    files = storage.resolve(version.files_path)
    tasks = make_tasks(canonical_images(originals, files), recipe)
    context.log.info(f"augmenting {len(tasks)} copies of {len(originals)} images")

    run_id = context.run.run_id
    parent = storage.version_dir(user, project, dataset.name, version.number) / AUGMENTED_FOLDER
    folder = parent / run_id
    clean_up_interrupted_writes(context, parent)
    recipe_dict = recipe_to_dict(recipe)
    with (
        failing_clearly_when_disk_full(parent, f"augmenting {context.partition_key}"),
        staged_folder(folder, f".{run_id}-new") as staging,
    ):
        made = write_augmented_images(
            staging,
            augment_many(tasks, workers=config.workers or None, progress=progress_logger(context, "augment")),
            {image.relative_path: image for image in originals},
            files,
            recipe_dict,
        )

    with database.session() as session:
        repository.add_augmentation(
            session, version, recipe_dict, storage.relative(folder), made.rows, run_id
        )
        repository.set_status(session, session.get(Dataset, dataset.id), "augmented")

    samples = {"samples": sample_grid_png(made.samples, list(verdict.class_names))} if made.samples else {}
    # The sample grid first: the UI lists metadata in this order, and the recipe JSON is long
    metadata: dict[str, Any] = {
        **picture_metadata(
            storage,
            storage.version_dir(user, project, dataset.name, version.number),
            "augmented_dataset",
            run_id,
            samples,
        ),
        **version_metadata(dataset, version),
        "source_images": len({task.source_key for task in tasks}),
        "images_made": len(made.rows),
        "boxes_kept": made.boxes_kept,
        "boxes_dropped": made.boxes_dropped,
        "recipe": dg.MetadataValue.json(recipe_dict),
        "stored_at": dg.MetadataValue.path(str(folder)),
    }
    return dg.MaterializeResult(metadata=metadata)


@dataclass
class AugmentedImages:
    rows: list[repository.ImageRow] = field(default_factory=list)
    boxes_kept: int = 0
    boxes_dropped: int = 0
    samples: list[tuple[Any, list[Box], Any, list[Box]]] = field(default_factory=list)


def write_augmented_images(
    staging: Path,
    results: Iterable[AugmentResult],
    by_key: dict[str, repository.StoredImage],
    files: Path,
    recipe_dict: dict[str, Any],
) -> AugmentedImages:
    """Write each augmented JPEG into `staging` and collect its database row and the first few samples."""
    made = AugmentedImages()
    for result in results:
        source = by_key[result.source_key]
        name = augmented_name(result.source_key, result.copy_index)
        (staging / name).write_bytes(result.jpeg)
        made.rows.append(
            repository.ImageRow(
                relative_path=name,
                sha256=hashlib.sha256(result.jpeg).hexdigest(),
                size_bytes=len(result.jpeg),
                format="JPEG",
                mode="RGB",
                width=result.width,
                height=result.height,
                exif_orientation=1,
                dhash=None,
                label_state=(LabelState.LABELLED if result.boxes else LabelState.BACKGROUND).value,
                source_split=source.source_split,
                quarantined=False,
                boxes=list(result.boxes),
                is_augmented=True,
                source_image_id=source.id,
                recipe={**recipe_dict, "copy_index": result.copy_index, "seed": result.seed},
            )
        )
        made.boxes_kept += len(result.boxes)
        made.boxes_dropped += result.boxes_dropped
        if len(made.samples) < 4:
            augmented = cv2.cvtColor(
                cv2.imdecode(np.frombuffer(result.jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
            )
            made.samples.append(
                (load_upright_rgb(files / source.relative_path), source.boxes, augmented, list(result.boxes))
            )
    return made
