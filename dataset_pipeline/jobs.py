"""Jobs are selections of the asset graph, never hand-written lists."""

import dagster as dg

from dataset_pipeline.assets.ingest import raw_upload

#: Everything from the upload to the export zips: what the inbox sensor runs for each new dataset.
process_dataset_job = dg.define_asset_job(
    "process_dataset",
    selection=dg.AssetSelection.assets(raw_upload).downstream(),
    description="Ingest, validate, analyse, augment, split and export one dataset.",
)
