"""The `cpu_heavy` pool: two runs at once share the cores, one heavy stage at a time, on the real instance
config (dagster.yaml's `concurrency: pools: default_limit`)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from dataset_pipeline.assets.common import CPU_POOL
from dataset_pipeline.definitions import defs
from dataset_pipeline_tests.databases import fresh_database

HEAVY = {"validated_dataset", "augmented_dataset", "dataset_export"}


def test_the_cpu_heavy_stages_are_in_one_pool():
    job = defs.resolve_job_def("process_dataset")
    assert {node.name for node in job.nodes if node.definition.pool == CPU_POOL} == HEAVY


@pytest.mark.slow
def test_two_runs_at_once_never_run_two_heavy_stages_at_the_same_time(tmp_path, pg_server_url):
    """Two `demo` processes (each a run of the whole graph) started together on one instance."""
    with fresh_database(pg_server_url, prefix="dp_pool") as database_url:
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "DAGSTER_HOME": str(tmp_path / "home"),
            "DATASET_STORAGE_ROOT": str(tmp_path / "storage"),
        }

        def demo(seed: int, images: int) -> subprocess.Popen[str]:
            command = [sys.executable, "-m", "dataset_pipeline.cli", "demo", "--images", str(images)]
            return subprocess.Popen(
                [*command, "--seed", str(seed)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )

        # A first, small run creates Dagster's tables: two processes creating them at once collide in
        # PostgreSQL (`type "run_tags" already exists`), which is Dagster's start-up, not what is tested here.
        warm_up = demo(0, 4)
        assert warm_up.wait(timeout=600) == 0, warm_up.communicate()[0][-3000:]
        demos = [demo(seed, 40) for seed in (1, 2)]
        outputs = [demo.communicate(timeout=600)[0] for demo in demos]
        assert [demo.returncode for demo in demos] == [0, 0], "\n".join(o[-3000:] for o in outputs)
        engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
        with engine.connect() as connection:  # Dagster's event log, in the same database
            events = connection.execute(
                sa.text(
                    "SELECT run_id, step_key, dagster_event_type, timestamp FROM dagster.event_logs "
                    "WHERE dagster_event_type IN ('STEP_START', 'STEP_SUCCESS') AND step_key = ANY(:steps) "
                    "AND run_id <> (SELECT run_id FROM dagster.runs ORDER BY create_timestamp LIMIT 1)"
                ),
                {"steps": sorted(HEAVY)},
            ).all()
            slots = connection.execute(
                sa.text("SELECT count(*) FROM dagster.concurrency_slots WHERE concurrency_key = :pool"),
                {"pool": CPU_POOL},
            ).scalar_one()
        engine.dispose()

    spans: dict[tuple[str, str], list] = {}
    for run_id, step, kind, at in events:
        spans.setdefault((run_id, step), [None, None])[kind == "STEP_SUCCESS"] = at
    assert len({run for run, _ in spans}) == 2 and len(spans) == 2 * len(HEAVY)
    ordered = sorted((start, end, key) for key, (start, end) in spans.items())
    overlapping = [(a, b) for a, b in itertools.pairwise(ordered) if b[0] < a[1]]
    assert overlapping == [], f"two heavy stages ran at once: {overlapping}"
    assert slots == 1  # the pool's size, from dagster.yaml's default_limit
