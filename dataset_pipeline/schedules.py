"""The nightly re-validation: every dataset's files checked against the database, rules applied again."""

import os

import dagster as dg

from dataset_pipeline.jobs import revalidate_dataset_job

#: Only datasets that were validated once have a version to check again (a rejected duplicate drop or a
#: failed ingest leaves a partition without one).
VALIDATED_DATASET = dg.AssetKey("validated_dataset")

#: When the re-validation runs; REVALIDATION_CRON overrides it (read when the code loads), e.g. "0 */6 * * *".
REVALIDATION_CRON = os.environ.get("REVALIDATION_CRON", "0 2 * * *")


@dg.schedule(
    job=revalidate_dataset_job,
    cron_schedule=REVALIDATION_CRON,
    execution_timezone=os.environ.get("REVALIDATION_TIMEZONE", "UTC"),
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Re-validates every dataset's newest version; files missing or changed since it was "
    "validated make a new version, and only those datasets re-run their downstream stages.",
)
def nightly_revalidation(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    tick = context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%M")
    return [
        dg.RunRequest(
            run_key=f"revalidate:{key}:{tick}",
            partition_key=key,
            tags={"dataset_pipeline/trigger": "nightly-revalidation"},
        )
        for key in sorted(context.instance.get_materialized_partitions(VALIDATED_DATASET))
    ]
