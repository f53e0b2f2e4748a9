"""Assembles the code location; no logic lives here."""

import dagster as dg

from dataset_pipeline.assets import ALL_ASSETS
from dataset_pipeline.jobs import edit_labels_job, process_dataset_job, revalidate_dataset_job
from dataset_pipeline.resources.database import DatabaseResource
from dataset_pipeline.resources.storage import LocalDatasetStorage
from dataset_pipeline.schedules import nightly_revalidation
from dataset_pipeline.sensors import automation_sensor, inbox_sensor

defs = dg.Definitions(
    assets=ALL_ASSETS,
    # The graph is a chain, so a process per step buys no parallelism and costs seconds of start-up per
    # step; the heavy stages use their own process pools. A crashed run worker fails (and retries) the run.
    executor=dg.in_process_executor,
    jobs=[process_dataset_job, revalidate_dataset_job, edit_labels_job],
    sensors=[inbox_sensor, automation_sensor],
    schedules=[nightly_revalidation],
    resources={
        "database": DatabaseResource(),
        "storage": LocalDatasetStorage(),
    },
)
