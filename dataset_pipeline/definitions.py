"""Assembles the code location; no logic lives here."""

import dagster as dg

from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import LocalDatasetStorage

defs = dg.Definitions(
    resources={
        "database": DatabaseResource(),
        "storage": LocalDatasetStorage(),
    },
)
