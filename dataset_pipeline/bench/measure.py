"""The one ruler for our stages and their baselines: wall time, work done, peak memory of the process tree.

Pure measurement, no pipeline code. Times are epoch seconds (`time.time`) because Dagster's event log uses that
clock, so a step's window from the event log and a sampled memory curve line up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import psutil  # a dependency of pgserver, so always installed with the project

MB = 1_000_000  # rates are decimal MB/s, as disks and networks are quoted
RATE_UNITS = ("images_per_s", "boxes_per_s", "mb_per_s")


@dataclass(frozen=True, slots=True)
class Work:
    """How much a piece of work moved; the caller fills in what only it knows (e.g. boxes of a zip)."""

    images: int
    boxes: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class Measurement:
    """One timed piece of work; rates are derived here so the table and the JSON can never disagree."""

    name: str
    wall_s: float
    work: Work
    peak_rss_bytes: int
    note: str = ""
    wall_s_runs: tuple[float, ...] = ()  # every repeat, when `wall_s` is their median

    def rate(self, unit: str) -> float:
        amount = {
            "images_per_s": self.work.images,
            "boxes_per_s": self.work.boxes,
            "mb_per_s": self.work.size_bytes / MB,
        }[unit]
        return amount / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "wall_s": round(self.wall_s, 4),
            "images": self.work.images,
            "boxes": self.work.boxes,
            "bytes": self.work.size_bytes,
            **{unit: round(self.rate(unit), 2) for unit in RATE_UNITS},
            "peak_rss_mb": round(self.peak_rss_bytes / MB, 1),
            "wall_s_runs": [round(seconds, 4) for seconds in self.wall_s_runs or (self.wall_s,)],
            "note": self.note,
        }


def median_of(repeats: Sequence[Measurement]) -> Measurement:
    """The median wall time of repeats of the same work (robust to a neighbour's CPU burst); the highest peak."""
    walls = tuple(measurement.wall_s for measurement in repeats)
    first = repeats[0]
    return dataclasses.replace(
        first,
        wall_s=statistics.median(walls),
        peak_rss_bytes=max(measurement.peak_rss_bytes for measurement in repeats),
        wall_s_runs=walls,
    )


@dataclass(slots=True)
class Span:
    """A wall-clock window: `start` in epoch seconds, `seconds` from a monotonic clock."""

    start: float
    seconds: float = 0.0

    @property
    def end(self) -> float:
        return self.start + self.seconds


@contextlib.contextmanager
def span() -> Iterator[Span]:
    window = Span(time.time())
    began = time.perf_counter()
    try:
        yield window
    finally:
        window.seconds = time.perf_counter() - began


class TreeRssSampler:
    """Samples the resident memory of this process plus all its descendants (pool workers) in a thread.

    `ru_maxrss` cannot be reset between stages and only counts children already waited for, so sampling is
    the way to a peak per stage. Pages shared by several processes count once per process, as in `ps`.
    """

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self._process = psutil.Process()
        self._samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> TreeRssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def current(self) -> int:
        total = self._process.memory_info().rss
        for child in self._process.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # a worker may exit between listing and reading
                total += child.memory_info().rss
        return total

    def peak(self, start: float, end: float) -> int:
        """Highest sample in [start, end], widened by one interval so a short window still has one."""
        low, high = start - self.interval_s, end + self.interval_s
        return max((rss for at, rss in list(self._samples) if low <= at <= high), default=0) or self.current()

    def _run(self) -> None:
        while True:
            self._samples.append((time.time(), self.current()))
            if self._stop.wait(self.interval_s):
                return


def timed(name: str, sampler: TreeRssSampler, job: Callable[[], Work], note: str = "") -> Measurement:
    """Run `job` once and measure it; inputs are prepared by the caller, outside the window."""
    with span() as window:
        work = job()
    return Measurement(name, window.seconds, work, sampler.peak(window.start, window.end), note)


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _versions(*distributions: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in distributions:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine_info() -> dict[str, Any]:
    """What a reader needs to compare two results: cores, memory, interpreter, libraries, current load."""
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "libraries": _versions(
            "dagster",
            "pillow",
            "albumentations",
            "opencv-python-headless",
            "numpy",
            "sqlalchemy",
            "psycopg2-binary",
        ),
    }
