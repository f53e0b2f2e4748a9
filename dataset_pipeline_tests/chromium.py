"""Headless Chromium (Debian's `chromium`) looking at the Dagster UI as a user would, without a click.

Used by the test that checks the charts render inline, and to take the README's screenshots of a running
`make dev`: `make screenshots` (or `python -m dataset_pipeline_tests.chromium URL FOLDER`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

#: The pages whose pictures must show without a click.
PICTURE_PAGES = {
    "class_distribution": "/assets/class_distribution",
    "augmented_dataset": "/assets/augmented_dataset",
}
#: Without the networking flags Chromium keeps trying Google's hosts, which a closed network refuses.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,1000",
    # the UI is a single-page app: give its GraphQL queries and the images time to arrive
    "--virtual-time-budget=15000",
]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(url: str, *action: str) -> subprocess.CompletedProcess[str]:
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [binary, *FLAGS, f"--user-data-dir={profile}", *action, url],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )


def rendered_dom(url: str) -> str:
    """The page's DOM once the app has loaded its data."""
    return _run(url, "--dump-dom").stdout


def screenshot(url: str, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    _run(url, f"--screenshot={target}")
    return target


def main(argv: list[str]) -> int:
    base, folder = argv[0].rstrip("/"), Path(argv[1])
    # A fresh instance greets its first visitor with a newsletter dialog; mark it seen so it is not in the
    # pictures (the UI's own "Skip" button does the same).
    request = urllib.request.Request(
        f"{base}/graphql",
        data=json.dumps({"query": "mutation { setNuxSeen }"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=20).close()
    for name, page in PICTURE_PAGES.items():
        print(screenshot(base + page, folder / f"{name}.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
