"""The inbox sensor (the old POST /upload-dataset) and the sensor that runs declarative automation."""

import os
from pathlib import Path

import dagster as dg

from dataset_pipeline.assets.common import DROP_TAG
from dataset_pipeline.domain.inbox import InboxCursor, plan_tick, scan_inbox
from dataset_pipeline.domain.naming import partition_key_for
from dataset_pipeline.jobs import process_dataset_job
from dataset_pipeline.partitions import dataset_partitions
from dataset_pipeline.resources.storage import LocalDatasetStorage

#: Seconds between inbox ticks; INBOX_SENSOR_INTERVAL_SECONDS overrides it (read when the code loads).
INBOX_INTERVAL_SECONDS = int(os.environ.get("INBOX_SENSOR_INTERVAL_SECONDS", "5"))
#: Seconds between evaluations of the automation conditions; AUTOMATION_SENSOR_INTERVAL_SECONDS overrides it.
AUTOMATION_INTERVAL_SECONDS = int(os.environ.get("AUTOMATION_SENSOR_INTERVAL_SECONDS", "30"))
MAX_REQUESTS_PER_TICK = 20
MAX_ENTRIES_PER_TICK = 1000


def _already_requested(instance: dg.DagsterInstance, drop_id: str) -> bool:
    """A run for this exact drop exists: the tick is being evaluated a second time with an old cursor."""
    return bool(instance.get_run_records(dg.RunsFilter(tags={DROP_TAG: drop_id}), limit=1))


def _raw_upload_config(path: Path, user: str, project: str, name: str) -> dict:
    config = {"source_path": str(path), "user": user, "project": project, "name": name}
    return {"ops": {"raw_upload": {"config": config}}}


@dg.sensor(
    job=process_dataset_job,
    minimum_interval_seconds=INBOX_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Picks up complete drops in storage/inbox/{user}/{project}/ (<name>.zip or <name>/) and runs "
    "the whole graph for each: a new name is a new dataset partition, a known name a new version of it.",
)
def inbox_sensor(context: dg.SensorEvaluationContext, storage: LocalDatasetStorage) -> dg.SensorResult:
    inbox = storage.inbox_dir()
    cursor = InboxCursor.from_json(context.cursor)
    scan = scan_inbox(inbox, page_after=cursor.page_after, max_entries=MAX_ENTRIES_PER_TICK)
    for problem in scan.problems:
        context.log.warning(problem)
    rejected: list[str] = []
    for rejection in scan.rejections:
        try:
            moved = storage.reject_drop(inbox / rejection.relative_path, rejection.reason)
        except OSError as error:  # the sensor never raises: report it and try again next tick
            context.log.warning(f"could not move {rejection.relative_path} to _rejected/: {error}")
            continue
        if moved is not None:
            context.log.warning(f"rejected inbox/{rejection.relative_path}: {rejection.reason} (now {moved})")
            rejected.append(f"inbox/{rejection.relative_path}: {rejection.reason}")

    plan = plan_tick(scan, cursor, max_requests=MAX_REQUESTS_PER_TICK)
    taken = set(context.instance.get_dynamic_partitions(dataset_partitions.name))
    new_keys: list[str] = []
    run_requests: list[dg.RunRequest] = []
    for drop in plan.ready:
        if _already_requested(context.instance, drop.drop_id):
            continue
        key = partition_key_for(drop.user, drop.project, drop.name)
        if key not in taken:
            taken.add(key)
            new_keys.append(key)
        context.log.info(f"inbox/{drop.relative_path} is complete: dataset {key}")
        run_requests.append(
            dg.RunRequest(
                run_key=drop.drop_id,
                partition_key=key,
                run_config=_raw_upload_config(inbox / drop.relative_path, drop.user, drop.project, drop.name),
                tags={DROP_TAG: drop.drop_id},
            )
        )
    if plan.waiting:
        context.log.debug(f"{len(plan.waiting)} drop(s) still being written or waiting for the next tick")
    # A tick that only rejected something shows why in the sensor's tick list, instead of a bare "skipped".
    skip_reason = None if run_requests or not rejected else "rejected " + "; ".join(rejected)
    return dg.SensorResult(
        run_requests=run_requests,
        skip_reason=skip_reason,
        dynamic_partitions_requests=[dataset_partitions.build_add_request(new_keys)] if new_keys else [],
        cursor=plan.cursor.to_json(),
    )


#: Evaluates the assets' AutomationConditions, so label edits and changed validations re-run what is
#: downstream. Defined here, running by default, instead of relying on the toggle in the UI.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "dataset_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=AUTOMATION_INTERVAL_SECONDS,
    description="Re-materialises downstream assets of a dataset when its validation or labels changed.",
)
