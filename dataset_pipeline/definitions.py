"""Assembles the code location; no logic lives here."""

import dagster as dg

from dataset_pipeline.assets import ALL_ASSETS
from dataset_pipeline.jobs import process_dataset_job
from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import LocalDatasetStorage

defs = dg.Definitions(
    assets=ALL_ASSETS,
    jobs=[process_dataset_job],
    resources={
        "database": DatabaseResource(),
        "storage": LocalDatasetStorage(),
    },
)
