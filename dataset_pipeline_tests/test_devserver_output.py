"""What `dataset-pipeline dev` shows on the console: the server's output without the per-tick chatter."""

import io

from dataset_pipeline.devserver import TICK_CHATTER, pass_output_through

DAEMON_OUTPUT = b"""\
2026-12-01 10:00:00 +0000 - dagster.daemon.SensorDaemon - INFO - Checking for new runs for sensor: inbox_sensor
2026-12-01 10:00:00 +0000 - dagster.daemon.SensorDaemon - INFO - No run requests returned for inbox_sensor, skipping
2026-12-01 10:00:02 +0000 - dagster.daemon.SensorDaemon - INFO - Sensor inbox_sensor skipped: Sensor function returned an empty result
2026-12-01 10:00:03 +0000 - dagster.daemon.SensorDaemon - INFO - Sensor inbox_sensor skipped: rejected inbox/a b.zip: bad name
2026-12-01 10:00:05 +0000 - dagster.daemon.SensorDaemon - INFO - Checking for new runs for sensor: inbox_sensor
2026-12-01 10:00:05 +0000 - dagster.daemon.SensorDaemon - INFO - Completed a reaction request for inbox_sensor: 1 run
2026-12-01 10:00:06 +0000 - dagster.daemon.QueuedRunCoordinatorDaemon - INFO - Launching run 1a2b for process_dataset
2026-12-01 10:00:09 +0000 - dagster - ERROR - something went wrong
"""


def test_tick_chatter_is_left_out_and_everything_else_kept_in_order():
    shown = io.BytesIO()
    pass_output_through(io.BytesIO(DAEMON_OUTPUT), shown, TICK_CHATTER)
    lines = shown.getvalue().decode().splitlines()
    assert [line.rsplit(" - ", 1)[1] for line in lines] == [
        "Sensor inbox_sensor skipped: rejected inbox/a b.zip: bad name",
        "Completed a reaction request for inbox_sensor: 1 run",
        "Launching run 1a2b for process_dataset",
        "something went wrong",
    ]


def test_verbose_keeps_every_line():
    shown = io.BytesIO()
    pass_output_through(io.BytesIO(DAEMON_OUTPUT), shown, ())
    assert shown.getvalue() == DAEMON_OUTPUT
