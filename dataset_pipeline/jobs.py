"""Jobs: selections of the asset graph where possible, the label-edit op where not."""

import dagster as dg

from dataset_pipeline.assets.ingest import raw_upload
from dataset_pipeline.assets.validation import validated_dataset
from dataset_pipeline.ops.label_edits import apply_label_edits
from dataset_pipeline.partitions import dataset_partitions

#: Everything from the upload to the export zips: what the inbox sensor runs for each new dataset.
process_dataset_job = dg.define_asset_job(
    "process_dataset",
    selection=dg.AssetSelection.assets(raw_upload).downstream(),
    description="Ingest, validate, analyse, augment, split and export one dataset.",
)

#: Validation alone, for the nightly schedule; what depends on a changed validation re-runs by automation.
revalidate_dataset_job = dg.define_asset_job(
    "revalidate_dataset",
    selection=dg.AssetSelection.assets(validated_dataset),
    description="Check a dataset's files against the database again and re-run its validation rules.",
)


@dg.job(
    name="edit_labels",
    partitions_def=dataset_partitions,
    description="Edit one dataset's labels (rename, merge, delete a class, replace an image's boxes, remap "
    "class ids) with an audit trail; the stages after validation then re-run by themselves.",
)
def edit_labels_job():
    apply_label_edits()
