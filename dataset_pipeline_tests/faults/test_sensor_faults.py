"""Sensor robustness with real faults, no mocks: an unreadable entry, a permission error or a vanished file in
the inbox is reported (or, vanished, silently dropped) and skipped, the rest of the inbox is still picked up,
and the sensor never raises.

Permission errors: tests run as root, and root ignores file permissions, so the scan runs in a forked child
that has dropped to `nobody` (uid/gid 65534, no supplementary groups) over an inbox of chmod 000 entries. The
real sensor (which needs Dagster's PostgreSQL storage, out of nobody's reach) meets an error root cannot
override: a project folder bind-mounted read-only, so moving a rejected drop out of it fails. A
zip that cannot be opened is a problem too, although `stat` works on it: a run for it would fail and, with its
signature unchanged once the permission is fixed, never be requested again.
Vanished files: a thread creates and deletes zips, folder drops and whole user folders as fast as it can while
the scan, `plan_tick` and the real `inbox_sensor` are evaluated over and over.

That a tick evaluated twice with the same old cursor requests nothing twice is
`test_sensors.py::test_a_tick_evaluated_twice_requests_nothing_twice`; here the same holds while the inbox churns.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
import traceback
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from dataset_pipeline.definitions import defs
from dataset_pipeline.domain.inbox import InboxCursor, InboxScan, TickPlan, plan_tick, scan_inbox
from dataset_pipeline.partitions import dataset_partitions
from dataset_pipeline.resources.storage import LocalDatasetStorage
from dataset_pipeline.sensors import DROP_TAG, inbox_sensor

pytestmark = [pytest.mark.slow]  # the races run for hundreds of ticks: about ten seconds in all

NOBODY = 65534
CHILD_TIMEOUT_SECONDS = 120
MIN_TICKS, MIN_CHURN_ROUNDS = 300, 200  # the scan-only race runs until both are reached
ZIP_BYTES = b"PK\x05\x06" + b"\x00" * 18  # an empty zip archive; the scan never reads it anyway


# --- helpers ---------------------------------------------------------------------------------------------


def write_zip(path: Path) -> Path:
    """A real (small) zip archive."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("images/a.jpg", b"\xff\xd8\xff\xd9")
        archive.writestr("labels/a.txt", "0 0.5 0.5 0.2 0.2\n")
    return path


def make_folder_drop(path: Path, files: int = 3) -> Path:
    for index in range(files):
        target = path / "images" / f"{index}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"\xff\xd8" + bytes([index]) * 10)
    (path / "labels").mkdir(exist_ok=True)
    (path / "labels" / "0.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    return path


def tick(inbox: Path, cursor: InboxCursor) -> tuple[InboxScan, TickPlan]:
    """One tick of the sensor's logic; the cursor goes through JSON as it does between real ticks."""
    cursor = InboxCursor.from_json(cursor.to_json())
    scan = scan_inbox(inbox, page_after=cursor.page_after)
    return scan, plan_tick(scan, cursor)


def describe(scan: InboxScan, plan: TickPlan) -> dict[str, Any]:
    return {
        "drops": [drop.relative_path for drop in scan.drops],
        "problems": scan.problems,
        "rejections": [rejection.relative_path for rejection in scan.rejections],
        "ready": [drop.relative_path for drop in plan.ready],
        "waiting": [drop.relative_path for drop in plan.waiting],
    }


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelname, record.getMessage()))


def evaluate_sensor(
    instance: dg.DagsterInstance, storage: LocalDatasetStorage, cursor: str | None
) -> tuple[dg.SensorResult, list[tuple[str, str]]]:
    """Evaluate the real inbox sensor once; returns its result and what it logged."""
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"storage": storage}) as context:
        collect = _Collect()
        context.log.addHandler(collect)
        try:
            result = inbox_sensor(context)
        finally:
            context.log.removeHandler(collect)
    assert isinstance(result, dg.SensorResult)
    return result, collect.records


def run_as_nobody(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run `work` in a forked child that has dropped root for `nobody`; returns its JSON-able result.

    The child always leaves through `os._exit`, never returning into pytest, whatever happens in it."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 70
        try:
            os.close(read_end)
            try:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                outcome = {"uid": os.getuid(), "gid": os.getgid(), "result": work()}
            except BaseException as error:  # everything goes back to the parent
                outcome = {"error": "".join(traceback.format_exception(error))}
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(json.dumps(outcome).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    chunks: list[bytes] = []
    deadline = time.monotonic() + CHILD_TIMEOUT_SECONDS
    try:
        while True:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([read_end], [], [], max(remaining, 0))
            if not readable:
                os.kill(pid, signal.SIGKILL)
                pytest.fail(f"the unprivileged child did not finish within {CHILD_TIMEOUT_SECONDS}s")
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"the child failed (status {status}): {b''.join(chunks)!r}"
    outcome = json.loads(b"".join(chunks))
    assert "error" not in outcome, f"raised in the unprivileged child:\n{outcome['error']}"
    assert (outcome["uid"], outcome["gid"]) == (NOBODY, NOBODY)
    return outcome["result"]


@pytest.fixture
def shared_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder `nobody` can enter (pytest's tmp_path is under a 0700 folder), removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("not root: domain/test_inbox.py's chmod tests already cover permission errors")
    # Import, as root, whatever the scan imports lazily: the child may not read the standard library
    # (here it lives under /root/.pyenv).
    tick(tmp_path / "warm", InboxCursor())
    folder = Path(tempfile.mkdtemp(prefix="dp-sensor-faults-"))
    try:
        folder.chmod(0o755)
        for ancestor in folder.parents:
            if not ancestor.stat().st_mode & stat.S_IXOTH:
                pytest.skip(f"{ancestor} cannot be entered by other users")
        yield folder
    finally:
        for path in (folder, *folder.rglob("*")):  # root could remove it anyway; be tidy
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(folder)


def locked(path: Path) -> Path:
    path.chmod(0)
    return path


# --- permission errors, for real --------------------------------------------------------------------------


def test_unreadable_entries_are_reported_and_skipped_by_an_unprivileged_sensor(shared_folder: Path) -> None:
    """chmod 000 user, project, folder-drop and nested folders and a chmod 000 zip, scanned as `nobody`."""
    storage_root = shared_folder / "storage"
    inbox = storage_root / "inbox"
    good = write_zip(inbox / "alice" / "cars" / "good.zip")
    make_folder_drop(inbox / "bob" / "vans" / "fine")
    locked(make_folder_drop(inbox / "alice" / "cars" / "photos"))  # a folder drop nobody can list
    locked(make_folder_drop(inbox / "bob" / "vans" / "partly") / "labels")  # ... or a folder inside one
    secret = locked(write_zip(inbox / "alice" / "cars" / "secret.zip"))  # stat works, opening does not
    write_zip(inbox / "alice" / "cars" / "bad name.zip")  # rejected; nobody cannot move it to _rejected/
    write_zip(inbox / "alice" / "locked" / "hidden.zip")
    locked(inbox / "alice" / "locked")  # a project folder
    write_zip(inbox / "mallory" / "cars" / "hidden.zip")
    locked(inbox / "mallory")  # a user folder
    for folder in (storage_root, inbox):
        folder.chmod(0o755)
    expected_problems = {
        f"{inbox / 'alice' / 'locked'}: cannot list",
        f"{inbox / 'mallory'}: cannot list",
        "alice/cars/photos: cannot read",
        "alice/cars/secret.zip: cannot read",
        "bob/vans/partly: cannot read",
    }
    found = ["alice/cars/good.zip", "bob/vans/fine"]

    def work() -> dict[str, Any]:
        try:
            secret.read_bytes()
            secret_readable = True
        except PermissionError:
            secret_readable = False
        ticks = []
        cursor = InboxCursor()
        for _ in range(3):  # first seen, then ready, then nothing again
            scan, plan = tick(inbox, cursor)
            ticks.append(describe(scan, plan))
            cursor = plan.cursor
        return {"secret_readable": secret_readable, "ticks": ticks, "cursor": cursor.to_json()}

    result = run_as_nobody(work)
    assert result["secret_readable"] is False  # the fault is real: nobody cannot read it

    first, second, third = result["ticks"]
    for scanned in (first, second, third):
        problems = scanned["problems"]
        assert {problem.split(" (")[0] for problem in problems} == expected_problems, problems
        assert all("(Permission denied); skipped this tick" in problem for problem in problems), problems
        assert scanned["rejections"] == ["alice/cars/bad name.zip"]
        assert scanned["drops"] == found  # the rest of the inbox is still picked up
    assert first["ready"] == [] and first["waiting"] == found
    assert second["ready"] == found and second["waiting"] == []
    assert third["ready"] == [] and third["waiting"] == []

    assert good.exists() and secret.exists() and (inbox / "alice" / "cars" / "bad name.zip").exists()

    # A problem is transient: once the zip can be read it is an ordinary new drop (waits a tick, then ready).
    secret.chmod(0o644)

    def after_the_fix() -> list[dict[str, Any]]:
        cursor = InboxCursor.from_json(result["cursor"])
        plans = []
        for _ in range(2):
            scan, plan = tick(inbox, cursor)
            plans.append(describe(scan, plan))
            cursor = plan.cursor
        return plans

    fixed, ready = run_as_nobody(after_the_fix)
    assert "alice/cars/secret.zip" in fixed["drops"] and fixed["waiting"] == ["alice/cars/secret.zip"]
    assert fixed["ready"] == [] and ready["ready"] == ["alice/cars/secret.zip"]
    assert not any(problem.startswith("alice/cars/secret.zip") for problem in fixed["problems"])


def test_an_inbox_that_cannot_be_listed_is_reported_not_raised(shared_folder: Path) -> None:
    storage_root = shared_folder / "storage"
    inbox = storage_root / "inbox"
    write_zip(inbox / "alice" / "cars" / "good.zip")
    storage_root.chmod(0o755)
    locked(inbox)

    def work() -> dict[str, Any]:
        scan, plan = tick(inbox, InboxCursor())
        return {"scan": describe(scan, plan)}

    result = run_as_nobody(work)
    assert result["scan"]["drops"] == []
    [problem] = result["scan"]["problems"]
    assert problem.startswith(f"{inbox}: cannot list (Permission denied)")


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """Bind-mount folders read-only onto themselves (root cannot write there either); unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("bind mounts need root")
    mounted: list[Path] = []

    def make_read_only(folder: Path) -> None:
        for command in (
            ["mount", "--bind", str(folder), str(folder)],
            ["mount", "-o", "remount,bind,ro", str(folder)],
        ):
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                pytest.skip(f"cannot bind-mount here: {done.stderr.strip()}")
            if command[1] == "--bind":
                mounted.append(folder)

    yield make_read_only
    for folder in reversed(mounted):
        if subprocess.run(["umount", str(folder)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def test_the_real_sensor_reports_a_drop_it_cannot_move_and_still_requests_the_others(
    dagster_instance, tmp_path: Path, read_only_folder
) -> None:
    user = f"u{uuid.uuid4().hex[:8]}"  # the Dagster instance is shared by the session
    storage = LocalDatasetStorage(root=str(tmp_path / "storage"))
    inbox = storage.inbox_dir()
    project = inbox / user / "cars"
    write_zip(project / "bad name.zip")  # must go to _rejected/: a rename out of a read-only mount fails
    write_zip(inbox / user / "vans" / "good.zip")
    read_only_folder(project)
    with pytest.raises(OSError, match="Read-only file system"):
        (project / "probe").write_bytes(b"")  # the fault is real, for root too

    cursor = None
    requested: list[str] = []
    for _ in range(3):
        result, logged = evaluate_sensor(dagster_instance, storage, cursor)
        cursor = result.cursor
        requested += [request.tags[DROP_TAG] for request in result.run_requests or []]
        warnings = [message for level, message in logged if level == "WARNING"]
        assert any(
            w.startswith(f"could not move {user}/cars/bad name.zip to _rejected/: [Errno") for w in warnings
        ), warnings
    assert [drop_id.split("@")[0] for drop_id in requested] == [f"{user}/vans/good.zip"]
    assert (project / "bad name.zip").exists()  # left where it was, to be moved once the folder is writable


# --- vanished files, for real -----------------------------------------------------------------------------


class Churn:
    """A thread that creates and deletes drops in the inbox as fast as it can, until stopped."""

    def __init__(self, inbox: Path, project: Path) -> None:
        self.inbox, self.project = inbox, project
        self.stop = threading.Event()
        self.rounds = 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, name="inbox-churn", daemon=True)

    def _run(self) -> None:
        backlog: collections.deque[list[Path]] = collections.deque()
        try:
            while not self.stop.is_set():
                self.rounds += 1
                n = self.rounds
                created = [
                    self.project / f"churn{n}.zip",
                    self.project / f"churnfolder{n}",
                    self.project / f"churnpart{n}.zip",
                    self.inbox / f"churnuser{n}",
                    self.project.parent / f"churnproject{n}",
                ]
                created[0].write_bytes(ZIP_BYTES * (1 + n % 7))
                make_folder_drop(created[1], files=2 + n % 4)
                (created[1] / "images" / "deep").mkdir()
                (created[1] / "images" / "deep" / "x.jpg").write_bytes(b"x" * n)
                part = created[2].with_name(created[2].name + ".part")
                part.write_bytes(ZIP_BYTES)
                os.replace(part, created[2])
                (created[3] / "cars").mkdir(parents=True)
                (created[3] / "cars" / "x.zip").write_bytes(ZIP_BYTES)
                make_folder_drop(created[4] / "drop", files=2)
                backlog.append(created)
                while len(backlog) > 2:  # a few always exist, so scans list what then vanishes
                    for path in backlog.popleft():
                        if path.is_dir():
                            shutil.rmtree(path)
                        else:
                            path.unlink()
        except BaseException:  # reported by the test
            self.errors.append(traceback.format_exc())

    def __enter__(self) -> Churn:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


def test_drops_vanishing_during_the_scan_are_skipped_and_stable_drops_always_seen(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    project = inbox / "alice" / "cars"
    good = write_zip(project / "good.zip")
    folder = make_folder_drop(project / "stable")
    expected = {drop.relative_path: drop.signature for drop in scan_inbox(inbox).drops}
    assert set(expected) == {"alice/cars/good.zip", "alice/cars/stable"}

    ready_counts: collections.Counter[str] = collections.Counter()
    scans_with_churn = 0
    cursor = InboxCursor()
    ticks = 0
    deadline = time.monotonic() + 60
    with Churn(inbox, project) as churn:
        while ticks < MIN_TICKS or churn.rounds < MIN_CHURN_ROUNDS:
            assert time.monotonic() < deadline, f"{ticks} ticks and {churn.rounds} churn rounds in 60s"
            ticks += 1
            scan, plan = tick(inbox, cursor)
            cursor = plan.cursor
            # Vanished entries are not problems: a run moved them, or the user took them back.
            assert scan.problems == [] and scan.rejections == [], (scan.problems, scan.rejections)
            seen = {drop.relative_path: drop.signature for drop in scan.drops}
            assert {path: seen.get(path) for path in expected} == expected
            scans_with_churn += len(seen) > len(expected)
            ready_counts.update(drop.relative_path for drop in plan.ready)
            time.sleep(0)  # let the churn thread in: the scan would hold the GIL most of the time
        assert churn.errors == []
    assert scans_with_churn > 0  # the scans really met entries that were being created and deleted
    assert {path: ready_counts[path] for path in expected} == dict.fromkeys(expected, 1)
    assert good.exists() and folder.exists()


def launch(instance: dg.DagsterInstance, result: dg.SensorResult, drop_ids: set[str]) -> None:
    """What the daemon does with a tick's result (runs created, not executed), for the given drops only."""
    job = defs.resolve_job_def("process_dataset")
    for request in result.run_requests or []:
        if request.tags[DROP_TAG] in drop_ids:
            instance.add_dynamic_partitions(dataset_partitions.name, [request.partition_key])
            instance.create_run_for_job(
                job_def=job,
                run_config=request.run_config,
                tags={**request.tags, "dagster/partition": request.partition_key},
            )


def test_the_real_sensor_never_raises_while_the_inbox_churns(dagster_instance, tmp_path: Path) -> None:
    user = f"u{uuid.uuid4().hex[:8]}"  # the Dagster instance is shared by the session
    storage_root = tmp_path / "storage"
    storage = LocalDatasetStorage(root=str(storage_root))
    project = storage_root / "inbox" / user / "cars"
    write_zip(project / "good.zip")
    make_folder_drop(project / "stable")
    stable = {f"{user}/cars/good.zip", f"{user}/cars/stable"}

    requested: collections.Counter[str] = collections.Counter()
    cursors: list[str | None] = [None]
    with Churn(storage_root / "inbox", project) as churn:
        index = -1
        while index < 40 or churn.rounds < 40:
            index += 1
            assert index < 1000, f"the churn thread only managed {churn.rounds} rounds"
            result, logged = evaluate_sensor(dagster_instance, storage, cursors[-1])
            assert [message for level, message in logged if level == "WARNING"] == []
            drop_ids = {request.tags[DROP_TAG] for request in result.run_requests or []}
            ours = {drop_id for drop_id in drop_ids if drop_id.split("@")[0] in stable}
            requested.update(drop_id.split("@")[0] for drop_id in ours)
            if ours:
                assert index == 1  # seen on the first tick, unchanged on the second
                launch(dagster_instance, result, ours)
                # The same tick evaluated again (a daemon restart): the runs exist, nothing is requested.
                again, _ = evaluate_sensor(dagster_instance, storage, cursors[-1])
                assert not {r.tags[DROP_TAG] for r in again.run_requests or []} & ours
            cursors.append(result.cursor)
            time.sleep(0)
        assert churn.errors == []
    assert requested == dict.fromkeys(stable, 1)
    assert (project / "good.zip").is_file() and (project / "stable").is_dir()
