"""One backoff schedule and one classification of retryable AWS errors (keysweep.retry)."""

from __future__ import annotations

import random

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from keysweep.retry import THROTTLING_CODES, Backoff, BoundedWait, error_code, is_retryable


def _client_error(code: str | None, status: int = 400) -> ClientError:
    error = {"Code": code, "Message": "quoted parameters AKIAEXAMPLE"} if code is not None else {}
    return ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}, "SendMessageBatch")


@pytest.mark.parametrize(
    ("code", "status", "retry"),
    [
        ("ThrottlingException", 400, True),
        ("RequestLimitExceeded", 400, True),
        ("KmsThrottled", 400, True),
        ("ServiceUnavailable", 503, True),
        ("SomethingNew", 502, True),  # any 5xx
        ("SomethingNew", 429, True),
        ("AccessDenied", 403, False),
        ("AWS.SimpleQueueService.NonExistentQueue", 400, False),
        (None, 400, False),
    ],
)
def test_which_answers_are_worth_another_try(code, status, retry):
    assert is_retryable(_client_error(code, status)) is retry


def test_no_answer_is_retried_and_no_credentials_is_not():
    assert is_retryable(EndpointConnectionError(endpoint_url="http://127.0.0.1:9"))
    assert not is_retryable(NoCredentialsError())
    assert not is_retryable(ValueError("not an AWS error"))


def test_error_code_never_carries_the_message():
    assert error_code(_client_error("AccessDenied")) == "AccessDenied"
    assert error_code(_client_error(None)) == "error"
    assert "Throttling" in THROTTLING_CODES


def test_delays_double_up_to_the_cap():
    exact = Backoff(0.5, 4.0, "none")
    assert [exact.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert exact.delay(10_000) == 4.0  # no overflow for a long outage
    rng = random.Random(7)
    full = [Backoff(1.0, 8.0, "full").delay(4, rng) for _ in range(200)]
    assert 0 <= min(full) < 1.0 and 7.0 < max(full) <= 8.0
    equal = [Backoff(1.0, 8.0, "equal").delay(4, rng) for _ in range(200)]
    assert 4.0 <= min(equal) < 4.5 and 7.5 < max(equal) <= 8.0
    with pytest.raises(ValueError):
        Backoff(-1.0, 1.0)


def test_a_bounded_wait_never_sleeps_past_its_budget():
    slept: list[float] = []
    wait = BoundedWait(Backoff(1.0, 8.0, "none"), 20.0, sleep=slept.append)
    while wait.pause():
        pass
    assert slept == [1.0, 2.0, 4.0, 8.0] and wait.waited == 15.0  # the next 8 s would make 23 > 20
    assert not wait.pause() and len(slept) == 4
