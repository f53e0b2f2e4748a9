"""A real `dataset-pipeline dev` for tests: started in its own process group on a free port, driven through
GraphQL and the inbox, and stopped with SIGINT (SIGKILL after a grace period) so nothing outlives the test."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

#: Every process the server starts inherits this variable; its value finds them in /proc afterwards.
MARKER = "DATASET_PIPELINE_E2E_MARKER"
CLI = [sys.executable, "-m", "dataset_pipeline.cli"]
#: The automation sensor's interval under test (its default): tests wait for its ticks. At 5 s a burst of ten
#: drops once got a second run for one dataset from the automation sensor (a race left open; see the notes).
AUTOMATION_TICK_SECONDS = 30

LOCATION_QUERY = """
{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError { __typename } } } } }
"""
RUNS_QUERY = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    ... on Runs { results { runId status jobName startTime endTime tags { key value } } }
  }
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def processes_with(marker: str) -> list[int]:
    """PIDs of live processes whose environment carries `marker`: everything the server started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker.encode() in (entry / "environ").read_bytes():
                status = (entry / "status").read_text()
                if "State:\tZ" not in status:
                    found.append(int(entry.name))
    return found


def process_tree(root: int) -> list[int]:
    """`root` and all its live descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, []))
    return tree


@dataclass
class DevServer:
    """A started `dataset-pipeline dev`; `folder` holds its DAGSTER_HOME, storage and log."""

    folder: Path
    port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    marker: str
    home: Path
    storage: Path
    survivors: list[int] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.folder / "dev.log"

    def log_tail(self, characters: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-characters:]

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        return json.loads(self.graphql_text(query, variables))["data"]

    def graphql_text(self, query: str, variables: dict[str, Any] | None = None) -> str:
        """The raw response body, for tests that search what the UI would be shown."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/graphql",
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.read().decode()

    def wait_for(self, what: str, condition: Callable[[], T | None], timeout: float, poll: float = 1.0) -> T:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"dataset-pipeline dev exited ({self.process.returncode}) while waiting for {what}:\n"
                    f"{self.log_tail()}"
                )
            with contextlib.suppress(OSError, KeyError, TypeError, ValueError):
                value = condition()
                if value:
                    return value
            time.sleep(poll)
        pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}:\n{self.log_tail()}")

    def wait_until_loaded(self, timeout: float = 180) -> None:
        locations = self.wait_for(
            "the code location",
            lambda: self.graphql(LOCATION_QUERY)["workspaceOrError"]["locationEntries"],
            timeout,
        )
        assert [(e["name"], e["locationOrLoadError"]["__typename"]) for e in locations] == [
            ("dataset_pipeline", "RepositoryLocation")
        ]

    def runs(self, tags: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Runs (newest first) with their status, start/end times and tags as a dict."""
        run_filter = {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
        results = self.graphql(RUNS_QUERY, {"filter": run_filter})["runsOrError"]["results"]
        for run in results:
            run["tags"] = {tag["key"]: tag["value"] for tag in run["tags"]}
        return results

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def stop(self) -> None:
        """Ctrl-C as `make dev` gets it; whatever is still alive after the grace period is killed and recorded."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        finally:
            self.survivors = processes_with(self.marker)
            for pid in self.survivors:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running_dev_server(
    folder: Path,
    database_url: str | None,
    extra_env: dict[str, str] | None = None,
    *,
    started_with_sigint_ignored: bool = False,
    as_project_home: bool = False,
) -> Iterator[DevServer]:
    """Start `dataset-pipeline dev` with its home and storage in `folder`; stop it (and check) on the way out.

    `started_with_sigint_ignored` starts it as nohup or a background shell would: Ctrl-C must still work.
    `as_project_home` sets only DATASET_PIPELINE_HOME=folder, so the defaults `storage/` and `.dagster_home/`
    under it are used, as in a checkout (else DAGSTER_HOME and DATASET_STORAGE_ROOT are set explicitly).
    """
    folder.mkdir(parents=True, exist_ok=True)
    marker = uuid.uuid4().hex
    if as_project_home:
        home, storage = folder / ".dagster_home", folder / "storage"
        locations = {"DATASET_PIPELINE_HOME": str(folder)}
    else:
        home, storage = folder / "home", folder / "storage"
        locations = {"DAGSTER_HOME": str(home), "DATASET_STORAGE_ROOT": str(storage)}
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "DATASET_STORAGE_ROOT")},
        **locations,
        "INBOX_SENSOR_INTERVAL_SECONDS": "2",
        "AUTOMATION_SENSOR_INTERVAL_SECONDS": str(AUTOMATION_TICK_SECONDS),
        "DATASET_PIPELINE_PREVIEW_PORT": str(free_port()),  # the UI's port + 1 may be taken here
        MARKER: marker,
        **(extra_env or {}),
    }
    env.pop("DATABASE_URL", None)
    if database_url:
        env["DATABASE_URL"] = database_url
    port = free_port()
    with (folder / "dev.log").open("wb") as output:
        process = subprocess.Popen(
            [*CLI, "dev", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
            if started_with_sigint_ignored
            else None,
        )
    server = DevServer(
        folder=folder, port=port, env=env, process=process, marker=marker, home=home, storage=storage
    )
    try:
        yield server
    finally:
        server.stop()
