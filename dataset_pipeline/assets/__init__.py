"""One module per stage; each asset is partitioned by dataset."""

from dataset_pipeline.assets.augmentation import augmented_dataset
from dataset_pipeline.assets.distribution import class_distribution
from dataset_pipeline.assets.export import dataset_export
from dataset_pipeline.assets.ingest import raw_upload
from dataset_pipeline.assets.labels import labels
from dataset_pipeline.assets.splits import dataset_splits
from dataset_pipeline.assets.validation import validated_dataset

ALL_ASSETS = [
    raw_upload,
    validated_dataset,
    labels,
    class_distribution,
    augmented_dataset,
    dataset_splits,
    dataset_export,
]
