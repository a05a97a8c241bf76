"""Retrying AWS calls: which errors are worth another try, and how long to wait before it.

One classification of AWS error codes (throttling and transient server errors, whatever the service) and one
exponential backoff schedule, used by verification, the SQS report, the collector, the credential report and the
cloud sweep's Athena queries.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # botocore is imported when a call fails, not by every command that imports this module
    from botocore.exceptions import ClientError

# the codes AWS services answer when the caller goes too fast (botocore's standard retry mode knows the same)
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "SlowDown",
        "PriorRequestNotComplete",
        "KmsThrottled",
    }
)
# the codes of a server-side failure that a later try may not meet
TRANSIENT_CODES = frozenset({"InternalFailure", "InternalError", "ServiceUnavailable", "RequestTimeout"})
RETRYABLE_CODES = THROTTLING_CODES | TRANSIENT_CODES


def error_code(exc: ClientError, default: str = "error") -> str:
    """The AWS error code of ``exc`` (``default`` when it has none); never its message, which may quote
    parameters."""
    error = (exc.response or {}).get("Error")
    code = error.get("Code") if isinstance(error, dict) else None
    return str(code or default)


def failure_name(exc: BaseException) -> str:
    """What failed, fit for a log line: the AWS error code of a ``ClientError``, else the exception's class name
    (``EndpointConnectionError``, ``ReadTimeoutError``, …)."""
    from botocore.exceptions import ClientError

    return error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__


def http_status(exc: ClientError) -> int:
    """The HTTP status of the answer ``exc`` came from; 0 when unknown."""
    return int(((exc.response or {}).get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)


def is_retryable(exc: BaseException) -> bool:
    """Worth another try: throttling, a transient or 5xx server error, or no answer at all (refused, reset, timed
    out, DNS). Not: no credentials or region, access denied, a missing resource, a bad request."""
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, ClientError):
        status = http_status(exc)
        return error_code(exc) in RETRYABLE_CODES or status == 429 or status >= 500
    return isinstance(exc, (BotoConnectionError, HTTPClientError))


Jitter = Literal["full", "equal", "none"]


@dataclass(frozen=True)
class Backoff:
    """Exponential delays: ``base`` doubled each attempt, at most ``cap`` seconds, with jitter.

    ``full`` jitter waits uniformly between 0 and the delay (AWS's recommendation when many clients retry at
    once); ``equal`` between half the delay and the delay (never too short); ``none`` exactly the delay (polling).
    """

    base: float
    cap: float
    jitter: Jitter = "full"

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0:
            raise ValueError(f"backoff: base and cap must not be negative, got {self.base}, {self.cap}")

    def ceiling(self, attempt: int) -> float:
        """The delay before try ``attempt + 1`` (``attempt`` counts from 1), before jitter."""
        return min(self.cap, self.base * 2.0 ** min(max(attempt, 1) - 1, 64))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        top = self.ceiling(attempt)
        uniform = (rng or random).uniform
        if self.jitter == "full":
            return uniform(0, top)
        if self.jitter == "equal":
            return top / 2 + uniform(0, top / 2)
        return top


class BoundedWait:
    """Sleeps along a :class:`Backoff` within a budget: :meth:`pause` refuses a sleep that would pass it."""

    def __init__(self, backoff: Backoff, budget: float, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.backoff = backoff
        self.budget = budget
        self.waited = 0.0
        self.attempts = 0
        self._sleep = sleep

    def pause(self) -> bool:
        """Sleep the next delay and return True; False (without sleeping) when it would pass the budget."""
        delay = self.backoff.delay(self.attempts + 1)
        if self.waited + delay > self.budget:
            return False
        self._sleep(delay)
        self.waited += delay
        self.attempts += 1
        return True
