"""Jobs: selections of the asset graph."""

import dagster as dg

from dataset_pipeline.assets.ingest import raw_upload
from dataset_pipeline.assets.labels import labels
from dataset_pipeline.assets.validation import validated_dataset

#: Everything from the upload to the export zips: what the inbox sensor runs for each new dataset.
process_dataset_job = dg.define_asset_job(
    "process_dataset",
    selection=dg.AssetSelection.assets(raw_upload).downstream(),
    description="Ingest, validate, analyse, augment, split and export one dataset.",
)

#: Validation alone, for the nightly schedule: an unchanged dataset writes nothing, a changed one becomes a new
#: version, and what depends on it re-runs by automation.
revalidate_dataset_job = dg.define_asset_job(
    "revalidate_dataset",
    selection=dg.AssetSelection.assets(validated_dataset),
    description="Check each image of a dataset's newest version against what was recorded; a change "
    "becomes a new version, an unchanged dataset writes nothing.",
)


#: The old POST /label: `labels` materialised with edits in its config makes a new version of the dataset;
#: automation then re-runs the stages after it for that dataset.
edit_labels_job = dg.define_asset_job(
    "edit_labels",
    selection=dg.AssetSelection.assets(labels),
    description="Edit one dataset's labels (rename, merge, delete a class, replace an image's boxes, remap "
    "class ids) as a new version with an audit trail; the stages after it then re-run by themselves.",
)
