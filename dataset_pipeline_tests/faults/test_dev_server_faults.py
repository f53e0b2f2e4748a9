"""Faults under a real `dataset-pipeline dev` (webserver, daemon, run coordinator, run retries, sensor):
run workers killed with SIGKILL mid-step, ten drops at once, a new version dropped while its dataset runs, and a
search of everything the deployment shows or writes for the password in DATABASE_URL.

One server serves the whole module (starting one takes half a minute); the tests use separate datasets.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from dataset_pipeline.domain.inbox import place_in_inbox
from dataset_pipeline.domain.model import DatasetFormat
from dataset_pipeline.domain.synthetic import generate_dataset
from dataset_pipeline.embedded_postgres import ensure_database, start_embedded
from dataset_pipeline.sensors import DROP_TAG
from dataset_pipeline_tests.databases import fresh_database
from dataset_pipeline_tests.dev_server import DevServer, process_tree, running_dev_server
from dataset_pipeline_tests.faults.database_locks import table_locked, writers_waiting_on_a_lock

pytestmark = [pytest.mark.slow, pytest.mark.db]

#: The password in DATABASE_URL; PostgreSQL here trusts local connections, so any password connects.
CANARY = f"canary-{uuid.uuid4().hex}"
MAX_CONCURRENT_RUNS = 4  # dagster.yaml


@pytest.fixture(scope="module")
def canary_database() -> Iterator[str]:
    """A fresh database whose URL carries CANARY as its password: CI's server, or a pgserver of our own."""
    external = os.environ.get("DATABASE_URL")
    if external:
        with fresh_database(external) as url:
            assert url is not None
            yield make_url(url).set(password=CANARY).render_as_string(hide_password=False)
        return
    folder = Path(tempfile.mkdtemp(prefix="dp-faults-pg-"))
    embedded = start_embedded(folder / "pgdata")
    try:
        url = ensure_database(embedded.server_url, "dataset_pipeline")
        yield make_url(url).set(password=CANARY).render_as_string(hide_password=False)
    finally:
        embedded.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def engine(canary_database: str) -> Iterator[sa.Engine]:
    """The test's own view of the database: app tables, and Dagster's in schema `dagster`."""
    engine = sa.create_engine(canary_database, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, canary_database: str) -> Iterator[DevServer]:
    folder = tmp_path_factory.mktemp("faults")
    # Started as nohup would (SIGINT ignored); the teardown's Ctrl-C must stop everything all the same.
    with running_dev_server(
        folder, canary_database, {"SAMPLE": "0"}, started_with_sigint_ignored=True
    ) as server:
        server.wait_until_loaded()
        yield server
    assert server.survivors == [], f"processes outlived `dataset-pipeline dev`: {server.survivors}"


# --- helpers ------------------------------------------------------------------------------------------


def drop(server: DevServer, tmp: Path, name: str, *, n_images: int, seed: int, user: str = "faults") -> str:
    """Generate a dataset and drop it into the inbox the safe way (.part, then rename); returns its key."""
    upload = generate_dataset(
        tmp / f"{name}-{seed}",
        n_images=n_images,
        fmt=DatasetFormat.YOLO,
        seed=seed,
        image_size=(96, 72),
        zipped=True,
    )
    place_in_inbox(upload, server.storage / "inbox", user, "chaos", name)
    return f"{user}-chaos-{name}"


def wait_for_run(server: DevServer, key: str, status: str, timeout: float = 240) -> dict:
    def found():
        runs = [run for run in server.runs({"dagster/partition": key}) if run["status"] == status]
        return runs[-1] if runs else None  # newest first: the last one is the sensor's first run

    return server.wait_for(f"a {status} run of {key}", found, timeout, poll=0.2)


def wait_for_retry_of(server: DevServer, run_id: str, timeout: float = 300) -> dict:
    def finished():
        retries = server.runs({"dagster/parent_run_id": run_id})
        if any(run["status"] in ("FAILURE", "CANCELED") for run in retries):
            pytest.fail(f"the retry of {run_id} failed:\n{server.log_tail()}")
        return next((run for run in retries if run["status"] == "SUCCESS"), None)

    return server.wait_for(f"the retry of run {run_id}", finished, timeout)


def step_start_pid(engine: sa.Engine, run_id: str, step: str) -> int | None:
    """PID of the process executing `step` of `run_id`, from Dagster's event log in PostgreSQL."""
    with engine.connect() as connection:
        event = connection.execute(
            sa.text(
                "SELECT event FROM dagster.event_logs WHERE run_id = :run AND step_key = :step "
                "AND dagster_event_type = 'STEP_START' ORDER BY id LIMIT 1"
            ),
            {"run": run_id, "step": step},
        ).scalar()
    return json.loads(event)["dagster_event"]["pid"] if event else None


def kill_tree(pid: int) -> list[int]:
    """SIGKILL a run worker and everything under it at once, as the OOM killer or a lost node would."""
    tree = process_tree(pid)
    for member in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)
    return tree


def dataset_state(engine: sa.Engine, key: str) -> dict:
    """The dataset's status and versions, and what its newest version has: original images, labels, findings
    (and the runs that wrote them), the run of its verdict, and its newest zip per format."""
    with engine.connect() as connection:
        row = connection.execute(
            sa.text(
                "SELECT d.id, d.status, "
                "(SELECT max(v.id) FROM dataset_versions v WHERE v.dataset_id = d.id) AS version_id "
                "FROM datasets d WHERE d.partition_key = :key"
            ),
            {"key": key},
        ).one()
        versions = connection.execute(
            sa.text(
                "SELECT number, cause, run_id FROM dataset_versions WHERE dataset_id = :id ORDER BY number"
            ),
            {"id": row.id},
        ).all()
        newest = connection.execute(
            sa.text(
                "SELECT "
                "(SELECT count(*) FROM images i WHERE i.version_id = :v AND NOT i.is_augmented) AS images, "
                "(SELECT count(*) FROM labels l WHERE l.version_id = :v) AS labels, "
                "(SELECT count(*) FROM dataset_validations f WHERE f.version_id = :v) AS validations, "
                "(SELECT coalesce(array_agg(DISTINCT f.run_id), '{}') FROM dataset_validations f "
                "WHERE f.version_id = :v) AS finding_runs, "
                "(SELECT run_id FROM version_validations vv WHERE vv.version_id = :v) AS verdict_run"
            ),
            {"v": row.version_id},
        ).one()
        exports = connection.execute(
            sa.text(
                "SELECT DISTINCT ON (format) format, path, sha256, run_id FROM exports "
                "WHERE version_id = :v ORDER BY format, id DESC"
            ),
            {"v": row.version_id},
        ).all()
    return {
        "status": row.status,
        "versions": [tuple(v) for v in versions],
        **newest._asdict(),
        "exports": [tuple(e) for e in exports],
    }


def dataset_folder(server: DevServer, name: str) -> Path:
    """Every version of a dataset of the `faults` user: `v1/`, `v2/`, ..."""
    return server.storage / "faults" / "chaos" / name


def hidden_entries(folder: Path) -> list[str]:
    """Temporary names (leading '.') anywhere in a dataset folder except inside a version's own `files/`."""
    found = []
    for path in folder.rglob(".*"):
        relative = path.relative_to(folder)
        if relative.parts[1:2] != ("files",):
            found.append(relative.as_posix())
    return sorted(found)


def assert_exports_complete(server: DevServer, state: dict, run_id: str) -> None:
    """Three zips in the newest version's export folder of `run_id`, complete and matching their rows."""
    assert [e[0] for e in state["exports"]] == ["coco", "voc", "yolo"]
    for _, path, sha256, written_by in state["exports"]:
        assert written_by == run_id
        assert Path(path).parent.name == run_id and not Path(path).is_absolute()
        with zipfile.ZipFile(server.storage / path) as archive:
            assert archive.testzip() is None
            assert "manifest.json" in archive.namelist()
        assert hashlib.sha256((server.storage / path).read_bytes()).hexdigest() == sha256


# --- tests --------------------------------------------------------------------------------------------


def test_the_webserver_listens_on_loopback_only(server: DevServer) -> None:
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, port = local.rsplit(":", 1)
                if state == "0A" and int(port, 16) == server.port:  # 0A = LISTEN
                    listening.add(address)
    assert listening == {"0100007F"}, f"port {server.port} listens on {listening} (hex), not only 127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent; this picks the address of the outward interface
        outward = probe.getsockname()[0]
    if outward != "127.0.0.1":
        with pytest.raises(OSError), socket.create_connection((outward, server.port), timeout=3):
            pass


def test_a_run_killed_during_its_validation_write_leaves_the_old_state_and_its_retry_finishes(
    server: DevServer, engine: sa.Engine, tmp_path: Path
) -> None:
    with table_locked(engine, "dataset_validations"):
        key = drop(server, tmp_path, "killed-validating", n_images=40, seed=1)
        run = wait_for_run(server, key, "STARTED")
        # validated_dataset has deleted the old rows and waits to write its report: the write is in flight
        server.wait_for(
            "validation's write to wait on the lock", lambda: writers_waiting_on_a_lock(engine) > 0, 120, 0.1
        )
        worker = step_start_pid(engine, run["runId"], "validated_dataset")
        assert worker is not None
        killed = kill_tree(worker)
    assert len(killed) >= 1
    after_kill = dataset_state(engine, key)
    assert after_kill["versions"] == [(1, "upload", run["runId"])]
    assert (after_kill["status"], after_kill["images"], after_kill["labels"], after_kill["validations"]) == (
        "ingested",
        0,
        0,
        0,
    ), "the killed transaction must leave the version as it was before validation"
    assert after_kill["verdict_run"] is None

    failed = wait_for_run(server, key, "FAILURE", timeout=120)
    assert failed["runId"] == run["runId"]
    retry = wait_for_retry_of(server, run["runId"])
    assert retry["tags"].get("dagster/retry_number") == "1"
    final = dataset_state(engine, key)
    assert final["versions"] == [(1, "upload", run["runId"])], "the retry validates version 1, makes no other"
    assert (final["status"], final["images"]) == ("exported", 40)
    assert final["verdict_run"] == retry["runId"]
    assert final["finding_runs"] == [retry["runId"]], "every finding of the version is the retry's"
    assert final["labels"] > 0
    assert_exports_complete(server, final, retry["runId"])
    assert hidden_entries(dataset_folder(server, "killed-validating")) == []


def test_a_run_killed_while_writing_its_export_shows_no_partial_zip_and_its_retry_cleans_up(
    server: DevServer, engine: sa.Engine, tmp_path: Path
) -> None:
    key = drop(server, tmp_path, "killed-exporting", n_images=1200, seed=2)
    folder = dataset_folder(server, "killed-exporting")
    exports = folder / "v1" / "exports"
    run = wait_for_run(server, key, "STARTED")

    def zip_being_written() -> bool:
        return any(exports.glob(".staging-*/*.zip.*.part"))

    server.wait_for("the export to start writing a zip", zip_being_written, 240, poll=0.02)
    worker = step_start_pid(engine, run["runId"], "dataset_export")
    assert worker is not None
    kill_tree(worker)

    visible = sorted(p for p in exports.iterdir() if not p.name.startswith("."))
    for run_folder in visible:  # whatever is visible is a complete export folder
        names = sorted(p.name for p in run_folder.iterdir())
        assert names == [f"{key}-v1-{fmt}.zip" for fmt in ("coco", "voc", "yolo")], names
        for name in names:
            with zipfile.ZipFile(run_folder / name) as archive:
                assert archive.testzip() is None
    after_kill = dataset_state(engine, key)
    assert after_kill["status"] == "split" and after_kill["exports"] == []
    left_behind = hidden_entries(folder)
    assert any(entry.startswith("v1/exports/.staging-") for entry in left_behind), left_behind

    wait_for_run(server, key, "FAILURE", timeout=120)
    retry = wait_for_retry_of(server, run["runId"])
    final = dataset_state(engine, key)
    assert final["versions"] == [(1, "upload", run["runId"])]
    assert final["status"] == "exported" and final["images"] == 1200
    assert_exports_complete(server, final, retry["runId"])
    assert hidden_entries(folder) == [], "the retry sweeps what the killed run left"


def _overlaps(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at one moment."""
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    best = current = 0
    for _, step in points:
        current += step
        best = max(best, current)
    return best


def test_ten_drops_at_once_all_finish_one_run_per_dataset_and_parallel_up_to_the_limit(
    server: DevServer, tmp_path: Path
) -> None:
    keys = [drop(server, tmp_path, f"burst-{i}", n_images=8, seed=100 + i, user="burst") for i in range(10)]

    def all_finished():
        runs = [run for key in keys for run in server.runs({"dagster/partition": key})]
        if any(run["status"] in ("FAILURE", "CANCELED") for run in runs):
            pytest.fail(f"a run failed: {runs}\n{server.log_tail()}")
        done = {run["tags"]["dagster/partition"] for run in runs if run["status"] == "SUCCESS"}
        return runs if done == set(keys) and all(run["status"] == "SUCCESS" for run in runs) else None

    runs = server.wait_for("all ten datasets", all_finished, 600, poll=2)
    intervals = {key: [] for key in keys}
    for run in runs:
        intervals[run["tags"]["dagster/partition"]].append((run["startTime"], run["endTime"]))
    assert all(_overlaps(spans) == 1 for spans in intervals.values()), intervals
    parallel = _overlaps([span for spans in intervals.values() for span in spans])
    assert 2 <= parallel <= MAX_CONCURRENT_RUNS, f"{parallel} runs at once"
    for key in keys:
        [run] = [run for run in runs if run["tags"]["dagster/partition"] == key]
        exported = server.storage / "burst" / "chaos" / key.removeprefix("burst-chaos-") / "v1" / "exports"
        assert sorted(p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file()) == [
            f"{run['runId']}/{key}-v1-{fmt}.zip" for fmt in ("coco", "voc", "yolo")
        ]


def test_a_new_version_dropped_while_its_dataset_runs_queues_behind_it(
    server: DevServer, engine: sa.Engine, tmp_path: Path
) -> None:
    """A changed `queued.zip` dropped again is the same dataset partition: its run waits for the running one
    (one run per partition), then adds version 2 beside version 1, which keeps its files and zips."""
    inbox_file = server.storage / "inbox" / "faults" / "chaos" / "queued.zip"
    with table_locked(engine, "class_distributions"):  # holds the first run inside class_distribution
        key = drop(server, tmp_path, "queued", n_images=12, seed=3)
        first = wait_for_run(server, key, "STARTED")
        server.wait_for("the first drop to leave the inbox", lambda: not inbox_file.exists(), 120, 0.2)
        assert drop(server, tmp_path, "queued", n_images=12, seed=4) == key  # same name, other bytes
        second = server.wait_for(
            "the new version's run",
            lambda: next(
                (r for r in server.runs({"dagster/partition": key}) if r["runId"] != first["runId"]), None
            ),
            120,
        )
        assert second["tags"]["dagster/partition"] == key
        assert second["tags"][DROP_TAG] != first["tags"][DROP_TAG]
        time.sleep(6)  # several coordinator ticks: it stays queued while the first run is in progress
        statuses = {run["runId"]: run["status"] for run in server.runs({"dagster/partition": key})}
        assert statuses == {first["runId"]: "STARTED", second["runId"]: "QUEUED"}
        during = dataset_state(engine, key)
        assert during["versions"] == [(1, "upload", first["runId"])], "the queued drop has not started"

    def both_succeeded():
        runs = {run["runId"]: run for run in server.runs({"dagster/partition": key})}
        if any(run["status"] in ("FAILURE", "CANCELED") for run in runs.values()):
            pytest.fail(f"a run of {key} failed: {runs}\n{server.log_tail()}")
        return runs if all(run["status"] == "SUCCESS" for run in runs.values()) else None

    runs = server.wait_for(f"both runs of {key}", both_succeeded, 300)
    assert set(runs) == {first["runId"], second["runId"]}, "one run per drop, nothing else"
    done_first, done_second = runs[first["runId"]], runs[second["runId"]]
    assert done_second["startTime"] >= done_first["endTime"]

    final = dataset_state(engine, key)
    assert final["status"] == "exported"
    assert final["versions"] == [(1, "upload", first["runId"]), (2, "upload", second["runId"])]
    assert final["images"] == 12
    assert_exports_complete(server, final, second["runId"])
    assert {Path(path).name for _, path, _, _ in final["exports"]} == {
        f"{key}-v2-{fmt}.zip" for fmt in ("coco", "voc", "yolo")
    }
    folder = dataset_folder(server, "queued")
    with engine.connect() as connection:
        old_exports = connection.execute(
            sa.text(
                "SELECT e.path, e.sha256, e.run_id FROM exports e JOIN dataset_versions v ON v.id = e.version_id "
                "JOIN datasets d ON d.id = v.dataset_id WHERE d.partition_key = :key AND v.number = 1 "
                "ORDER BY e.format"
            ),
            {"key": key},
        ).all()
        sources = connection.execute(
            sa.text(
                "SELECT v.source_path, v.upload_sha256 FROM dataset_versions v JOIN datasets d "
                "ON d.id = v.dataset_id WHERE d.partition_key = :key ORDER BY v.number"
            ),
            {"key": key},
        ).all()
    assert [Path(path).name for path, _, _ in old_exports] == [
        f"{key}-v1-{fmt}.zip" for fmt in ("coco", "voc", "yolo")
    ]
    for path, sha256, run_id in old_exports:  # version 1's zips are still there, byte for byte
        assert run_id == first["runId"]
        assert hashlib.sha256((server.storage / path).read_bytes()).hexdigest() == sha256
    assert [path for path, _ in sources] == [
        "faults/chaos/queued/v1/source/queued.zip",
        "faults/chaos/queued/v2/source/queued.zip",
    ]
    assert sources[0].upload_sha256 != sources[1].upload_sha256
    for number, (path, sha256) in enumerate(sources, start=1):
        assert hashlib.sha256((server.storage / path).read_bytes()).hexdigest() == sha256, number
    assert hidden_entries(folder) == []


QUERIES = {
    "runs": """{ runsOrError { ... on Runs { results { runId status runConfigYaml tags { key value } } } } }""",
    "instance": """{ instance { info runLauncher { name } runQueuingSupported
        daemonHealth { allDaemonStatuses { daemonType healthy lastHeartbeatErrors { message } } } } }""",
    "resources": """{ allTopLevelResourceDetailsOrError(repositorySelector: {repositoryLocationName:
        "dataset_pipeline", repositoryName: "__repository__"}) { ... on ResourceDetailsList { results {
        name configuredValues { key value type } } } } }""",
    "assets": """{ assetNodes { assetKey { path } description
        assetMaterializations(limit: 5) { runId metadataEntries { label description
            ... on TextMetadataEntry { text } ... on PathMetadataEntry { path }
            ... on MarkdownMetadataEntry { mdStr } ... on JsonMetadataEntry { jsonString } } } } }""",
    "workspace": """{ workspaceOrError { ... on Workspace { locationEntries { name displayMetadata { key value }
        locationOrLoadError { ... on PythonError { message stack } } } } } }""",
}
LOGS_QUERY = """query Logs($runId: ID!) { logsForRun(runId: $runId) { ... on EventConnection { events {
    __typename ... on MessageEvent { message } ... on ExecutionStepFailureEvent { error { message stack } }
    ... on RunFailureEvent { pipelineRunFailureError: error { message stack } } } } } }"""


def test_the_database_password_appears_in_no_log_ui_answer_or_file(
    server: DevServer, engine: sa.Engine, tmp_path: Path
) -> None:
    assert CANARY in server.env["DATABASE_URL"]  # the password is really there to leak
    if not server.runs():
        drop(server, tmp_path, "secret-check", n_images=8, seed=5)
    server.wait_for("a finished run", lambda: any(r["status"] == "SUCCESS" for r in server.runs()), 300)

    answers = {name: server.graphql_text(query) for name, query in QUERIES.items()}
    for run in server.runs():
        answers[f"logs of {run['runId']}"] = server.graphql_text(LOGS_QUERY, {"runId": run["runId"]})
    assert [name for name, text in answers.items() if "errors" in json.loads(text)] == []
    assert any("Started execution" in text for text in answers.values())
    leaks = [name for name, text in answers.items() if CANARY in text]
    assert leaks == [], f"GraphQL answers show the password: {leaks}"

    files = [p for root in (server.home, server.storage) for p in root.rglob("*") if p.is_file()]
    compute_logs = [p for p in files if "compute_logs" in p.parts]
    assert compute_logs, "the runs' compute logs should be searched too"
    leaked_files = [str(p) for p in [*files, server.log] if CANARY.encode() in p.read_bytes()]
    assert leaked_files == []

    with engine.connect() as connection:
        stored = connection.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM dagster.event_logs WHERE event LIKE :p) "
                "+ (SELECT count(*) FROM dagster.runs WHERE run_body LIKE :p)"
            ),
            {"p": f"%{CANARY}%"},
        ).scalar_one()
    assert stored == 0
