"""`make dev`: PostgreSQL (embedded unless DATABASE_URL), then `dagster dev` in its own process group.

Ctrl-C stops the webserver, the daemon and their children (SIGINT, then SIGKILL after a grace period) and
then the embedded PostgreSQL, so nothing outlives the command.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO

from dataset_pipeline.embedded_postgres import redact
from dataset_pipeline.runtime import PROJECT_ROOT, Runtime, prepare_runtime

log = logging.getLogger(__name__)
GRACE_SECONDS = 20.0


def stop_process_group(process: subprocess.Popen[bytes], grace: float = GRACE_SECONDS) -> None:
    """SIGINT the whole group, wait, then SIGKILL whatever is left."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # also reaps grandchildren that ignored SIGINT
    process.wait()


#: The daemon says these on every sensor tick (every few seconds) whether or not anything happened; the
#: console shows what happened instead (runs requested, launched, failed). `dev --verbose` keeps them.
TICK_CHATTER = (
    b"Checking for new runs for sensor:",
    b"No run requests returned for ",
    b"skipped: Sensor function returned an empty result",
)


def pass_output_through(source: BinaryIO, sink: BinaryIO, dropped: Iterable[bytes]) -> None:
    """Copy the server's output line by line, leaving out lines that contain any of `dropped`."""
    dropped = tuple(dropped)
    for line in iter(source.readline, b""):
        if not any(chatter in line for chatter in dropped):
            sink.write(line)
            sink.flush()


SAMPLE_OWNER = ("demo", "samples")


def drop_sample_on_first_start(runtime: Runtime, n_images: int = 40) -> Path | None:
    """On an empty storage, put a generated YOLO dataset into the inbox so the first screen shows a run.

    Skipped when the storage already holds anything (datasets or drops) or SAMPLE=0.
    """
    if os.environ.get("SAMPLE", "1").strip().lower() in ("0", "no", "false", "off"):
        return None
    root = runtime.settings.storage_root
    if root.exists() and any(entry.name != "inbox" for entry in root.iterdir()):
        return None
    inbox = root / "inbox"
    if inbox.exists() and any(inbox.iterdir()):
        return None
    from dataset_pipeline.domain.inbox import place_in_inbox
    from dataset_pipeline.domain.model import DatasetFormat
    from dataset_pipeline.domain.synthetic import generate_dataset

    with tempfile.TemporaryDirectory(prefix="dataset-pipeline-sample-") as scratch:
        sample = generate_dataset(
            Path(scratch) / "sample", n_images=n_images, fmt=DatasetFormat.YOLO, seed=0, zipped=True
        )
        target = place_in_inbox(sample, inbox, *SAMPLE_OWNER, name="sample-yolo")
    print(
        f"dataset_pipeline: first start: dropped a sample dataset at {target} (SAMPLE=0 skips this)",
        flush=True,
    )
    return target


def run_dev(
    host: str = "127.0.0.1",
    port: int = 3000,
    before_start: Callable[[Runtime], None] | None = None,
    verbose: bool = False,
) -> int:
    runtime = prepare_runtime()
    print(f"dataset_pipeline: database {redact(runtime.database_url)}", flush=True)
    print(f"dataset_pipeline: storage  {runtime.settings.storage_root}", flush=True)
    print(f"dataset_pipeline: DAGSTER_HOME {runtime.settings.home}", flush=True)
    if before_start is not None:
        before_start(runtime)
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-h",
        host,
        "-p",
        str(port),
        "-w",
        str(PROJECT_ROOT / "workspace.yaml"),
    ]
    env = {**os.environ, **runtime.environment()}
    previews = _start_preview_server(runtime.settings.storage_root, host, port, env)
    stop_requested_at: list[float] = []
    started: list[subprocess.Popen[bytes]] = []
    relay: threading.Thread | None = None

    def forward(signum: int, _frame: object) -> None:
        """Ctrl-C or SIGTERM: ask the server group to stop; a second one kills it. Only signals here: waiting
        inside a handler would deadlock on Popen's wait lock."""
        if not started:
            raise KeyboardInterrupt
        first = not stop_requested_at
        stop_requested_at.append(time.monotonic())
        with contextlib.suppress(ProcessLookupError):
            os.killpg(started[0].pid, signal.SIGINT if first else signal.SIGKILL)

    # Installed before the server starts: a caught signal is reset to the default in the child, whereas an
    # ignored one (nohup, a background shell) would be inherited and the server could never be interrupted.
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        # Started in DAGSTER_HOME: `dagster dev` warns about any dagster.yaml in its working folder that is not
        # DAGSTER_HOME's, which the repository's copy would be (prepare_runtime put that copy here).
        started.append(
            subprocess.Popen(
                command,
                env=env,
                cwd=runtime.settings.home,
                start_new_session=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
        relay = threading.Thread(
            target=pass_output_through,
            args=(started[0].stdout, sys.stdout.buffer, () if verbose else TICK_CHATTER),
            name="dagster-dev-output",
            daemon=True,
        )
        relay.start()
        threading.Thread(
            target=show_automation_on, args=(host, port, started[0]), name="automation-badge", daemon=True
        ).start()
        print(f"dataset_pipeline: Dagster UI on http://{host}:{port} (Ctrl-C stops everything)", flush=True)
        while started[0].poll() is None:
            if stop_requested_at and time.monotonic() - stop_requested_at[0] > GRACE_SECONDS:
                break  # the server did not stop by itself: the finally block kills what is left
            time.sleep(0.5)
        return started[0].returncode if started[0].returncode is not None else 130
    finally:
        if started:
            waited = time.monotonic() - stop_requested_at[0] if stop_requested_at else 0.0
            stop_process_group(started[0], grace=max(0.0, GRACE_SECONDS - waited))
            if relay is not None:
                relay.join(timeout=5)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if previews is not None:
            previews.shutdown()
            previews.server_close()
        runtime.stop()


AUTOMATION_ON = "mutation { setAutoMaterializePaused(paused: false) }"


def show_automation_on(host: str, port: int, server: subprocess.Popen[bytes], timeout: float = 300) -> bool:
    """Once the UI answers, tell it automation is on. The automation sensor runs by default and does the
    work, but the job pages' badge reads an instance-wide switch of the pre-sensor daemon that starts "off";
    flipping it changes nothing else (with sensors it gates no evaluation). Returns whether it was set."""
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    request = urllib.request.Request(
        f"http://{shown_host}:{port}/graphql",
        data=json.dumps({"query": AUTOMATION_ON}).encode(),
        headers={"Content-Type": "application/json"},
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = json.loads(response.read())
            if answer.get("data", {}).get("setAutoMaterializePaused") is False:
                return True
        time.sleep(1)
    return False


def _start_preview_server(
    storage_root: Path, host: str, ui_port: int, env: dict[str, str]
) -> ThreadingHTTPServer | None:
    """Serve the charts on the UI's port + 1 (DATASET_PIPELINE_PREVIEW_PORT) and tell the runs where, via
    DATASET_PIPELINE_PREVIEW_URL in `env`; without it the metadata shows the pictures' paths only."""
    from dataset_pipeline.assets.pictures import PREVIEW_URL_VARIABLE
    from dataset_pipeline.preview_server import serve_previews

    port = int(env.get("DATASET_PIPELINE_PREVIEW_PORT") or ui_port + 1)
    try:
        server = serve_previews(storage_root, host, port)
    except OSError as error:
        print(f"dataset_pipeline: no chart previews in the UI: port {port} is taken ({error})", flush=True)
        env.pop(PREVIEW_URL_VARIABLE, None)
        return None
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    env.setdefault(PREVIEW_URL_VARIABLE, f"http://{shown_host}:{server.server_address[1]}")
    print(f"dataset_pipeline: chart previews on {env[PREVIEW_URL_VARIABLE]}", flush=True)
    return server
