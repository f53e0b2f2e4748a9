"""Only transient errors are retried: a lost database connection is tried again, bad data or a bug fails once."""

import dagster as dg
import pytest

from dataset_pipeline.assets.common import retry_transient_errors_only
from dataset_pipeline.db.database import DatabaseConnectionLost


def _attempts_until_done(error: Exception, *, fail_times: int, generator: bool) -> tuple[bool, int, str]:
    attempts = []

    def body():
        attempts.append(1)
        if len(attempts) <= fail_times:
            raise error
        return dg.MaterializeResult(metadata={"attempt": len(attempts)})

    if generator:

        @dg.asset(retry_policy=dg.RetryPolicy(max_retries=2, delay=0))
        @retry_transient_errors_only
        def stage(context: dg.AssetExecutionContext):
            yield body()

    else:

        @dg.asset(retry_policy=dg.RetryPolicy(max_retries=2, delay=0))
        @retry_transient_errors_only
        def stage(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
            return body()

    result = dg.materialize([stage], raise_on_error=False)
    failures = result.get_step_failure_events()
    message = failures[0].event_specific_data.error.message if failures else ""
    return result.success, len(attempts), message


@pytest.mark.parametrize("generator", [False, True])
def test_a_lost_connection_is_retried_until_it_works(generator):
    lost = DatabaseConnectionLost("lost the connection to PostgreSQL (…) during a transaction")
    assert _attempts_until_done(lost, fail_times=2, generator=generator)[:2] == (True, 3)


@pytest.mark.parametrize("generator", [False, True])
def test_bad_data_or_a_bug_fails_once_with_its_message(generator):
    success, attempts, message = _attempts_until_done(
        KeyError("images/train/a.jpg"), fail_times=5, generator=generator
    )
    assert (success, attempts) == (False, 1)
    assert "KeyError" in message and "images/train/a.jpg" in message


def test_a_failure_that_allows_retries_is_left_as_it_is():
    failure = dg.Failure("the upload is still being written", allow_retries=True)
    assert _attempts_until_done(failure, fail_times=1, generator=False)[:2] == (True, 2)
