"""Gates and automation under a real `dataset-pipeline dev` (webserver, daemon, queued run coordinator, the
inbox sensor and the `dataset_automation` sensor): a dataset whose every image is corrupt stops at its blocking
check and gets nothing after validation, a valid one is exported, the automation sensor re-runs neither of the
inbox runs' work, and a label edit launched over GraphQL is followed by exactly one automation run.

One server serves the module (starting one takes half a minute). Silence is proven by the automation sensor's
own ticks, read over GraphQL: a tick that started after the last update and finished without a run is the
sensor deciding there is nothing to do, so the test waits for ticks instead of sleeping.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dataset_pipeline.domain.inbox import place_in_inbox
from dataset_pipeline.domain.model import DatasetFormat
from dataset_pipeline.domain.synthetic import generate_dataset
from dataset_pipeline.sensors import DROP_TAG
from dataset_pipeline_tests.databases import fresh_database
from dataset_pipeline_tests.dev_server import AUTOMATION_TICK_SECONDS, DevServer, running_dev_server

pytestmark = [pytest.mark.slow, pytest.mark.db]

LOCATION = "dataset_pipeline"
REPOSITORY = "__repository__"
AUTOMATION_SENSOR = "dataset_automation"
SENSOR_NAME_TAG = "dagster/sensor_name"
PARTITION_TAG = "dagster/partition"
ASSETS = (
    "raw_upload",
    "validated_dataset",
    "labels",
    "class_distribution",
    "augmented_dataset",
    "dataset_splits",
    "dataset_export",
)
AFTER_VALIDATION = ASSETS[2:]
AFTER_LABELS = ASSETS[3:]  # what automation re-runs after a label edit
#: Finished ticks of the automation sensor, started after the last update, that must request nothing.
QUIET_TICKS = 2
TICK_INTERVAL_SECONDS = AUTOMATION_TICK_SECONDS  # what running_dev_server sets
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}

TICKS_QUERY = """
query Ticks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status ticks(limit: 100) {
        tickId status timestamp endTimestamp runIds error { message } } } }
    ... on SensorNotFoundError { message }
    ... on PythonError { message }
  }
}"""
MATERIALIZATIONS_QUERY = """
query Materializations($assetKey: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $assetKey) {
    __typename
    ... on Asset { assetMaterializations(partitions: $partitions) { runId partition } }
  }
}"""
RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status jobName assetMaterializations { assetKey { path } partition } }
  }
}"""
LOGS_QUERY = """
query Logs($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection { events {
      __typename
      ... on ExecutionStepStartEvent { stepKey }
      ... on ExecutionStepFailureEvent { stepKey error { message } }
      ... on AssetCheckEvaluationEvent { evaluation { checkName success partition assetKey { path } } }
    } }
  }
}"""
LAUNCH_MUTATION = """
mutation Launch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}"""


# --- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def database_url(pg_server_url: str) -> Iterator[str]:
    """A fresh database on the session's server (embedded, or DATABASE_URL's), shared with the dev server."""
    with fresh_database(pg_server_url, prefix="dp_gates") as url:
        assert url is not None
        yield url


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[DevServer]:
    folder = tmp_path_factory.mktemp("gates")
    with running_dev_server(folder, database_url, {"SAMPLE": "0"}) as server:  # stopped however this ends
        server.wait_until_loaded()
        yield server
    assert server.survivors == [], f"processes outlived `dataset-pipeline dev`: {server.survivors}"


@dataclass(frozen=True)
class Dropped:
    corrupt: str  # partition keys
    valid: str
    corrupt_run: dict[str, Any]
    valid_run: dict[str, Any]
    quiet_ticks: list[dict[str, Any]]  # the automation ticks after both runs that requested nothing


@pytest.fixture(scope="module")
def dropped(server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Dropped:
    """The corrupt dataset and then the valid one dropped, both inbox runs finished, and the automation sensor
    has ticked QUIET_TICKS times since."""
    tmp = tmp_path_factory.mktemp("uploads")
    corrupt = drop(server, corrupted(make_upload(tmp / "corrupt", 6, seed=41), tmp / "corrupt-broken.zip"))
    valid = drop(server, make_upload(tmp / "valid", 8, seed=42))
    corrupt_run = wait_until_finished(server, corrupt)
    valid_run = wait_until_finished(server, valid)
    ticks = wait_for_quiet_ticks(server, after=max(corrupt_run["endTime"], valid_run["endTime"]))
    return Dropped(corrupt, valid, corrupt_run, valid_run, ticks)


# --- helpers ------------------------------------------------------------------------------------------


def make_upload(out: Path, n_images: int, seed: int) -> Path:
    return generate_dataset(
        out, n_images=n_images, fmt=DatasetFormat.YOLO, seed=seed, image_size=(96, 72), zipped=True
    )


def corrupted(source: Path, target: Path) -> Path:
    """The upload with every image's bytes replaced by garbage (different per image): nothing decodes."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as broken:
        for name in original.namelist():
            data = f"not a jpeg: {name}\n".encode() * 8 if name.endswith(".jpg") else original.read(name)
            broken.writestr(name, data)
        assert any(name.endswith(".jpg") for name in original.namelist())
    return target


def drop(server: DevServer, upload: Path) -> str:
    """Drop an upload into the inbox the safe way (.part, then rename); returns its partition key."""
    name = upload.stem
    place_in_inbox(upload, server.storage / "inbox", "gates", "p", name)
    return f"gates-p-{name}"


def query(server: DevServer, text: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """GraphQL data; a response with errors fails the test with them (a wrong query is not a timeout)."""
    body = json.loads(server.graphql_text(text, variables))
    if body.get("errors"):
        pytest.fail(f"GraphQL errors: {json.dumps(body['errors'])[:2000]}")
    return body["data"]


def describe(runs: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"  {r['runId']} {r['jobName']} {r['status']} sensor={r['tags'].get(SENSOR_NAME_TAG)} "
        f"drop={r['tags'].get(DROP_TAG)} partition={r['tags'].get(PARTITION_TAG)}"
        for r in runs
    )


def wait_until_finished(server: DevServer, key: str, timeout: float = 300) -> dict[str, Any]:
    """The (first) run of `key` once every run of it has ended."""

    def finished() -> dict[str, Any] | None:
        runs = server.runs({PARTITION_TAG: key})
        return runs[-1] if runs and all(run["status"] in TERMINAL for run in runs) else None

    return server.wait_for(f"the inbox run of {key} to finish", finished, timeout, poll=1)


def wait_for_run(server: DevServer, run_id: str, key: str, timeout: float = 240) -> dict[str, Any]:
    """Run `run_id` of partition `key` once it has ended."""

    def ended() -> dict[str, Any] | None:
        run = next((r for r in server.runs({PARTITION_TAG: key}) if r["runId"] == run_id), None)
        return run if run is not None and run["status"] in TERMINAL else None

    return server.wait_for(f"run {run_id} of {key} to end", ended, timeout)


def automation_ticks(server: DevServer) -> list[dict[str, Any]]:
    """The automation sensor's ticks, oldest first."""
    selector = {
        "repositoryLocationName": LOCATION,
        "repositoryName": REPOSITORY,
        "sensorName": AUTOMATION_SENSOR,
    }
    sensor = query(server, TICKS_QUERY, {"selector": selector})["sensorOrError"]
    if sensor["__typename"] != "Sensor":
        pytest.fail(f"sensor {AUTOMATION_SENSOR}: {sensor}")
    assert sensor["sensorState"]["status"] == "RUNNING", sensor["sensorState"]["status"]
    return sorted(sensor["sensorState"]["ticks"], key=lambda tick: tick["timestamp"])


def ticks_after(server: DevServer, after: float) -> list[dict[str, Any]]:
    """Finished ticks that started after `after`; a failed one fails the test with its error."""
    ticks = [tick for tick in automation_ticks(server) if tick["timestamp"] > after]
    failed = [tick for tick in ticks if tick["status"] == "FAILURE"]
    if failed:
        pytest.fail(f"a tick of {AUTOMATION_SENSOR} failed: {failed[0]['error']}\n{server.log_tail()}")
    return [tick for tick in ticks if tick["status"] in ("SUCCESS", "SKIPPED")]


def wait_for_quiet_ticks(server: DevServer, after: float, count: int = QUIET_TICKS) -> list[dict[str, Any]]:
    """Wait for `count` finished automation ticks that started after `after`; each must have requested no run."""

    def enough() -> list[dict[str, Any]] | None:
        ticks = ticks_after(server, after)
        return ticks[:count] if len(ticks) >= count else None

    ticks = server.wait_for(
        f"{count} ticks of {AUTOMATION_SENSOR} after the last run",
        enough,
        count * TICK_INTERVAL_SECONDS + 120,
        2,
    )
    requested = [tick for tick in ticks if tick["runIds"]]
    assert requested == [], (
        f"{AUTOMATION_SENSOR} requested runs after the last update: {requested}\n{describe(server.runs())}"
    )
    return ticks


def materializations(server: DevServer, key: str) -> dict[str, list[str]]:
    """asset -> run ids of its materialisations of partition `key`, over GraphQL."""
    found = {}
    for asset in ASSETS:
        data = query(server, MATERIALIZATIONS_QUERY, {"assetKey": {"path": [asset]}, "partitions": [key]})
        answer = data["assetOrError"]
        if answer["__typename"] == "AssetNotFoundError":  # never materialised in any partition
            found[asset] = []
            continue
        assert answer["__typename"] == "Asset", answer
        assert {event["partition"] for event in answer["assetMaterializations"]} <= {key}
        found[asset] = sorted(event["runId"] for event in answer["assetMaterializations"])
    return found


def run_events(server: DevServer, run_id: str) -> list[dict[str, Any]]:
    answer = query(server, LOGS_QUERY, {"runId": run_id})["logsForRun"]
    assert answer["__typename"] == "EventConnection", answer
    return answer["events"]


def run_materializations(server: DevServer, run_id: str) -> set[tuple[str, str]]:
    run = query(server, RUN_QUERY, {"runId": run_id})["runOrError"]
    assert run["__typename"] == "Run", run
    return {("/".join(m["assetKey"]["path"]), m["partition"]) for m in run["assetMaterializations"]}


def launch_label_edit(server: DevServer, key: str, class_name: str) -> str:
    """Launch `edit_labels` for one dataset as the UI's Launchpad does: run config and the partition tag."""
    params = {
        "selector": {
            "repositoryLocationName": LOCATION,
            "repositoryName": REPOSITORY,
            "jobName": "edit_labels",
        },
        "runConfigData": {
            "ops": {
                "labels": {
                    "config": {
                        "edited_by": "ann",
                        "edits": [
                            {"operation": "rename_class", "class_name": class_name, "new_name": "renamed"}
                        ],
                    }
                }
            }
        },
        "executionMetadata": {"tags": [{"key": PARTITION_TAG, "value": key}]},
    }
    result = query(server, LAUNCH_MUTATION, {"executionParams": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", f"edit_labels was not launched: {result}"
    return result["run"]["runId"]


def dataset_state(engine: sa.Engine, key: str) -> dict[str, Any]:
    """What the database says about a dataset: status, versions with their verdicts, what was written after
    validation for each version, and its zips."""
    with engine.connect() as connection:
        dataset = connection.execute(
            sa.text("SELECT id, status, status_reason FROM datasets WHERE partition_key = :key"), {"key": key}
        ).one_or_none()
        assert dataset is not None, f"no datasets row for {key}"
        versions = connection.execute(
            sa.text(
                "SELECT v.number, v.cause, v.run_id, vv.passed, vv.class_names, "
                "(SELECT count(*) FROM class_distributions c WHERE c.version_id = v.id) AS distributions, "
                "(SELECT count(*) FROM augmentations a WHERE a.version_id = v.id) AS augmentations, "
                "(SELECT count(*) FROM split_reports s WHERE s.version_id = v.id) AS splits, "
                "(SELECT count(*) FROM label_edits e WHERE e.version_id = v.id) AS label_edits "
                "FROM dataset_versions v LEFT JOIN version_validations vv ON vv.version_id = v.id "
                "WHERE v.dataset_id = :id ORDER BY v.number"
            ),
            {"id": dataset.id},
        ).all()
        exports = connection.execute(
            sa.text(
                "SELECT v.number, e.format, e.run_id, e.path FROM exports e "
                "JOIN dataset_versions v ON v.id = e.version_id WHERE v.dataset_id = :id "
                "ORDER BY v.number, e.format"
            ),
            {"id": dataset.id},
        ).all()
    return {
        "status": dataset.status,
        "reason": dataset.status_reason,
        "versions": [row._asdict() for row in versions],
        "exports": [tuple(row) for row in exports],
    }


# --- tests --------------------------------------------------------------------------------------------


def test_a_corrupt_dataset_stops_at_its_gate_and_neither_inbox_run_is_repeated(
    server: DevServer, engine: sa.Engine, dropped: Dropped
) -> None:
    all_runs = server.runs()
    corrupt_runs = server.runs({PARTITION_TAG: dropped.corrupt})
    valid_runs = server.runs({PARTITION_TAG: dropped.valid})
    assert [r["runId"] for r in corrupt_runs] == [dropped.corrupt_run["runId"]], (
        f"exactly one run of {dropped.corrupt} (its inbox run):\n{describe(corrupt_runs)}"
    )
    assert [r["runId"] for r in valid_runs] == [dropped.valid_run["runId"]], (
        f"exactly one run of {dropped.valid} (its inbox run):\n{describe(valid_runs)}"
    )
    assert [r for r in all_runs if r["tags"].get(SENSOR_NAME_TAG) == AUTOMATION_SENSOR] == [], (
        f"{AUTOMATION_SENSOR} launched runs after the inbox runs:\n{describe(all_runs)}"
    )
    for run in (dropped.corrupt_run, dropped.valid_run):
        assert run["jobName"] == "process_dataset" and DROP_TAG in run["tags"], describe([run])
    assert len(dropped.quiet_ticks) == QUIET_TICKS and not any(t["runIds"] for t in dropped.quiet_ticks)

    # the corrupt dataset's run failed on the blocking check usable_images, at validated_dataset (its
    # non-blocking quarantine warning failed too, and stopped nothing by itself)
    assert dropped.corrupt_run["status"] == "FAILURE", describe([dropped.corrupt_run])
    events = run_events(server, dropped.corrupt_run["runId"])
    checks = [e["evaluation"] for e in events if e["__typename"] == "AssetCheckEvaluationEvent"]
    assert [(c["checkName"], c["success"], c["partition"], c["assetKey"]["path"]) for c in checks] == [
        ("usable_images", False, dropped.corrupt, ["validated_dataset"]),
        ("quarantine", False, dropped.corrupt, ["validated_dataset"]),  # the warning, beside the gate
    ]
    failures = [e for e in events if e["__typename"] == "ExecutionStepFailureEvent"]
    assert [e["stepKey"] for e in failures] == ["validated_dataset"], failures
    message = failures[0]["error"]["message"]
    # one paragraph for people: which dataset, why, the first problems by file, and what to do
    assert message.startswith(
        f"dagster._core.definitions.events.Failure: Dataset {dropped.corrupt} version 1 "
    )
    assert "did not pass validation: " in message and "First problems: " in message, message
    assert f"`dataset-pipeline report {dropped.corrupt} --version 1`" in message, message
    started = [e["stepKey"] for e in events if e["__typename"] == "ExecutionStepStartEvent"]
    assert started == ["raw_upload", "validated_dataset"], f"steps after the failed gate started: {started}"

    # ... and Dagster has nothing after validated_dataset for its partition
    corrupt_assets = materializations(server, dropped.corrupt)
    after_gate = {asset: runs for asset, runs in corrupt_assets.items() if asset in AFTER_VALIDATION and runs}
    assert after_gate == {}, f"materialisations of {dropped.corrupt} after its failed gate: {after_gate}"
    assert (
        corrupt_assets["raw_upload"] == corrupt_assets["validated_dataset"] == [dropped.corrupt_run["runId"]]
    )

    # the database agrees: invalid, one version whose verdict is false, nothing written after validation
    corrupt = dataset_state(engine, dropped.corrupt)
    assert corrupt["status"] == "invalid", corrupt
    [version] = corrupt["versions"]
    assert (version["number"], version["cause"], version["run_id"]) == (
        1,
        "upload",
        dropped.corrupt_run["runId"],
    )
    assert version["passed"] is False, version
    assert (version["distributions"], version["augmentations"], version["splits"]) == (0, 0, 0), version
    assert corrupt["exports"] == []

    # the valid dataset went through the whole graph in its one run and is exported
    assert dropped.valid_run["status"] == "SUCCESS", describe([dropped.valid_run])
    valid_assets = materializations(server, dropped.valid)
    assert valid_assets == {asset: [dropped.valid_run["runId"]] for asset in ASSETS}, valid_assets
    valid = dataset_state(engine, dropped.valid)
    assert valid["status"] == "exported", valid
    [version] = valid["versions"]
    assert (version["number"], version["cause"], version["run_id"], version["passed"]) == (
        1,
        "upload",
        dropped.valid_run["runId"],
        True,
    )
    assert [(n, fmt, run) for n, fmt, run, _ in valid["exports"]] == [
        (1, fmt, dropped.valid_run["runId"]) for fmt in ("coco", "voc", "yolo")
    ]
    assert all((server.storage / path).is_file() for *_, path in valid["exports"])


def test_a_label_edit_launched_over_graphql_is_followed_by_one_automation_run(
    server: DevServer, engine: sa.Engine, dropped: Dropped
) -> None:
    before = dataset_state(engine, dropped.valid)
    class_name = before["versions"][-1]["class_names"][0]
    edit_id = launch_label_edit(server, dropped.valid, class_name)
    edit = wait_for_run(server, edit_id, dropped.valid)
    assert edit["status"] == "SUCCESS", f"{describe([edit])}\n{server.log_tail()}"
    assert edit["jobName"] == "edit_labels" and DROP_TAG not in edit["tags"]

    def automation_run_finished() -> dict[str, Any] | None:
        runs = [
            r
            for r in server.runs({SENSOR_NAME_TAG: AUTOMATION_SENSOR})
            if r["tags"].get(PARTITION_TAG) == dropped.valid
        ]
        return runs[-1] if runs and all(r["status"] in TERMINAL for r in runs) else None

    automation = server.wait_for(
        f"{AUTOMATION_SENSOR}'s run for {dropped.valid} after the edit",
        automation_run_finished,
        TICK_INTERVAL_SECONDS + 300,
        poll=2,
    )
    assert automation["status"] == "SUCCESS", f"{describe([automation])}\n{server.log_tail()}"
    assert automation["startTime"] >= edit["endTime"]
    wait_for_quiet_ticks(server, after=automation["endTime"])

    # exactly one automation run, for the edited dataset, running the stages after labels
    automation_runs = server.runs({SENSOR_NAME_TAG: AUTOMATION_SENSOR})
    assert [r["runId"] for r in automation_runs] == [automation["runId"]], (
        f"one automation run in all, after the edit:\n{describe(automation_runs)}"
    )
    assert run_materializations(server, automation["runId"]) == {
        (asset, dropped.valid) for asset in AFTER_LABELS
    }
    requesting = [t for t in ticks_after(server, edit["endTime"]) if t["runIds"]]
    assert [t["runIds"] for t in requesting] == [[automation["runId"]]], requesting
    valid_runs = server.runs({PARTITION_TAG: dropped.valid})
    assert [r["runId"] for r in valid_runs] == [automation["runId"], edit_id, dropped.valid_run["runId"]], (
        describe(valid_runs)
    )
    valid_assets = materializations(server, dropped.valid)
    inbox_id = dropped.valid_run["runId"]
    assert valid_assets == {
        "raw_upload": [inbox_id],
        "validated_dataset": [inbox_id],
        "labels": sorted([inbox_id, edit_id]),
        **{asset: sorted([inbox_id, automation["runId"]]) for asset in AFTER_LABELS},
    }, valid_assets

    # the database: version 2 made by the edit, exported by the automation run; version 1 left as it was
    after = dataset_state(engine, dropped.valid)
    assert after["status"] == "exported", after
    assert [(v["number"], v["cause"], v["run_id"], v["passed"]) for v in after["versions"]] == [
        (1, "upload", inbox_id, True),
        (2, "label_edit", edit_id, True),
    ]
    v1, v2 = after["versions"]
    assert v1["class_names"] == before["versions"][0]["class_names"]
    assert "renamed" in v2["class_names"] and class_name not in v2["class_names"], v2["class_names"]
    assert (v2["label_edits"], v2["distributions"] > 0, v2["augmentations"], v2["splits"]) == (1, True, 1, 1)
    assert [(n, fmt, run) for n, fmt, run, _ in after["exports"]] == [
        *((1, fmt, inbox_id) for fmt in ("coco", "voc", "yolo")),
        *((2, fmt, automation["runId"]) for fmt in ("coco", "voc", "yolo")),
    ]

    # still nothing for the corrupt dataset
    corrupt_runs = server.runs({PARTITION_TAG: dropped.corrupt})
    assert [r["runId"] for r in corrupt_runs] == [dropped.corrupt_run["runId"]], describe(corrupt_runs)
    corrupt_assets = materializations(server, dropped.corrupt)
    assert all(corrupt_assets[asset] == [] for asset in AFTER_VALIDATION), corrupt_assets
    corrupt = dataset_state(engine, dropped.corrupt)
    assert corrupt["status"] == "invalid" and [v["passed"] for v in corrupt["versions"]] == [False], corrupt
