"""The store retry decision, alone: what is transient, how long between attempts, and what a store that stays
down raises."""

from __future__ import annotations

import errno

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ResponseStreamingError

from airflow_sora.exceptions import LandingError
from airflow_sora.storeretry import StoreRetryPolicy, StoreUnavailableError, describe, is_transient, retrying


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "PutObject")


@pytest.mark.parametrize("error", [
    client_error("SlowDown", 503), client_error("InternalError", 500), client_error("ServiceUnavailable", 503),
    client_error("Whatever", 502), client_error("RequestTimeout", 400),
    EndpointConnectionError(endpoint_url="http://s3"), ConnectionClosedError(endpoint_url="http://s3"),
    ResponseStreamingError(error="cut short"), ConnectionResetError(), TimeoutError(),
    OSError(errno.ETIMEDOUT, "timed out"),
])
def test_throttling_server_errors_and_dropped_connections_are_transient(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize("error", [
    client_error("NoSuchKey", 404), client_error("AccessDenied", 403), client_error("PreconditionFailed", 412),
    FileNotFoundError(), PermissionError(), OSError(errno.ENOSPC, "No space left on device"), ValueError("x"),
    StoreUnavailableError("spent already"),
])
def test_absence_refusals_and_a_full_disk_are_not(error: BaseException) -> None:
    assert not is_transient(error)


def test_backoff_is_full_jitter_doubling_up_to_the_cap() -> None:
    policy = StoreRetryPolicy(attempts=8, base=1.0, cap=20.0)
    assert [policy.delay(n, rand=lambda: 1.0) for n in range(1, 8)] == [1, 2, 4, 8, 16, 20, 20]
    assert policy.delay(3, rand=lambda: 0.0) == 0.0
    assert policy.botocore_retries() == {"mode": "standard", "total_max_attempts": 8}


def test_a_transient_error_is_retried_until_it_passes() -> None:
    answers: list[BaseException | str] = [client_error("SlowDown", 503), ConnectionResetError(), "ok"]
    slept: list[float] = []

    def call() -> str:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    assert retrying(call, store="S3 bucket 'b'", operation="reading k", sleep=slept.append,
                    policy=StoreRetryPolicy(attempts=3)) == "ok"
    assert len(slept) == 2 and not answers


def test_a_store_that_stays_down_raises_a_retryable_error_naming_store_and_operation() -> None:
    calls = []

    def call() -> None:
        calls.append(1)
        raise client_error("SlowDown", 503)

    with pytest.raises(StoreUnavailableError) as caught:
        retrying(call, store="S3 bucket 'b'", operation="writing x.json", sleep=lambda s: None,
                 policy=StoreRetryPolicy(attempts=4))
    assert len(calls) == 4
    message = str(caught.value)
    assert "S3 bucket 'b'" in message and "writing x.json" in message and "SlowDown (HTTP 503)" in message
    assert isinstance(caught.value, LandingError) and caught.value.retryable


def test_a_permanent_error_is_raised_at_once() -> None:
    calls = []

    def call() -> None:
        calls.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        retrying(call, store="local folder", operation="writing", sleep=lambda s: None)
    assert len(calls) == 1


def test_outlast_retries_what_the_client_gave_up_on_and_only_then() -> None:
    answers: list[BaseException | None] = [StoreUnavailableError("botocore gave up"), None]

    def call() -> None:
        if (answer := answers.pop(0)) is not None:
            raise answer

    retrying(call, store="s", operation="o", outlast=True, sleep=lambda s: None)
    with pytest.raises(StoreUnavailableError, match="gave up"):
        retrying(lambda: (_ for _ in ()).throw(StoreUnavailableError("gave up")), store="s", operation="o",
                 sleep=lambda s: None)


def test_describe_is_short_and_names_the_code() -> None:
    assert describe(client_error("InternalError", 500)) == "InternalError (HTTP 500)"
    assert describe(OSError(errno.ENOSPC, "No space left on device")).startswith("OSError: [Errno 28]")
