"""The IAM credential report: generate it, fetch it, parse every column.

The report is a CSV with one row per IAM user plus a ``<root_account>`` row. Cells hold ISO-8601 times, booleans
(documented upper case, lower case in practice) or one of three markers: ``N/A`` (no key, never used, or before
tracking began on 2015-04-22), ``no_information`` (password never used) and ``not_supported`` (the field does not
apply, e.g. the root user's password rotation). The markers are kept as :class:`Marker` values so nothing a caller
might need is lost in parsing.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Union

from botocore.exceptions import ClientError

from keysweep import timeutil
from keysweep.errors import KeysweepError
from keysweep.retry import THROTTLING_CODES, Backoff, BoundedWait, error_code
from keysweep.strenum import StrEnum

ROOT_USER = "<root_account>"
# the day AWS started tracking access key last use; N/A for a key older than this may hide use before it
KEY_USE_TRACKING_START = datetime(2015, 4, 22, tzinfo=timeutil.UTC)

COLUMNS = (
    "user",
    "arn",
    "user_creation_time",
    "password_enabled",
    "password_last_used",
    "password_last_changed",
    "password_next_rotation",
    "mfa_active",
    "access_key_1_active",
    "access_key_1_last_rotated",
    "access_key_1_last_used_date",
    "access_key_1_last_used_region",
    "access_key_1_last_used_service",
    "access_key_2_active",
    "access_key_2_last_rotated",
    "access_key_2_last_used_date",
    "access_key_2_last_used_region",
    "access_key_2_last_used_service",
    "cert_1_active",
    "cert_1_last_rotated",
    "cert_2_active",
    "cert_2_last_rotated",
)
REQUIRED_COLUMNS = ("user", "arn")


class CredentialReportError(KeysweepError):
    """The credential report could not be generated, fetched or parsed."""


class Marker(StrEnum):
    """A cell that holds no value but says why."""

    NOT_APPLICABLE = "N/A"
    NO_INFORMATION = "no_information"
    NOT_SUPPORTED = "not_supported"


Time = Union[datetime, Marker]
Flag = Union[bool, Marker]
Text = Union[str, Marker]

_MARKERS = {m.value.lower(): m for m in Marker}


def _marker(cell: str) -> Marker | None:
    return _MARKERS.get(cell.strip().lower())


def parse_time(cell: str, column: str = "") -> Time:
    marker = _marker(cell)
    if marker is not None:
        return marker
    text = cell.strip()
    if not text:
        return Marker.NOT_APPLICABLE
    try:
        return timeutil.parse(text)
    except ValueError:
        raise CredentialReportError(f"credential report column {column!r}: not a time: {cell[:40]!r}") from None


def parse_flag(cell: str, column: str = "") -> Flag:
    marker = _marker(cell)
    if marker is not None:
        return marker
    text = cell.strip().lower()
    if text == "true":
        return True
    if text == "false":
        return False
    if not text:
        return Marker.NOT_APPLICABLE
    raise CredentialReportError(f"credential report column {column!r}: not a boolean: {cell[:40]!r}")


def parse_text(cell: str) -> Text:
    marker = _marker(cell)
    if marker is not None:
        return marker
    return cell.strip() or Marker.NOT_APPLICABLE


def is_time(value: object) -> bool:
    return isinstance(value, datetime)


@dataclass(frozen=True)
class KeyColumns:
    """``access_key_N_*`` for one of the (at most two) keys of a user."""

    slot: int
    active: Flag
    last_rotated: Time
    last_used_date: Time
    last_used_region: Text
    last_used_service: Text

    @property
    def exists(self) -> bool:
        """A key is in this slot (active or inactive): it has a creation (rotation) time."""
        return is_time(self.last_rotated)

    @property
    def is_active(self) -> bool:
        return self.active is True

    @property
    def never_used(self) -> bool:
        return not is_time(self.last_used_date)

    @property
    def use_may_predate_tracking(self) -> bool:
        """N/A last use on a key created before AWS tracked use: it may have been used before 2015-04-22."""
        return (
            self.never_used and isinstance(self.last_rotated, datetime) and self.last_rotated < KEY_USE_TRACKING_START
        )


@dataclass(frozen=True)
class CertColumns:
    slot: int
    active: Flag
    last_rotated: Time


@dataclass(frozen=True)
class CredentialReportRow:
    user: str
    arn: str
    user_creation_time: Time
    password_enabled: Flag
    password_last_used: Time
    password_last_changed: Time
    password_next_rotation: Time
    mfa_active: Flag
    keys: tuple[KeyColumns, KeyColumns]
    certs: tuple[CertColumns, CertColumns]
    extra: Mapping[str, str] = field(default_factory=dict)  # columns AWS may add later, kept verbatim

    @property
    def is_root(self) -> bool:
        return self.user == ROOT_USER

    @property
    def account_id(self) -> str | None:
        parts = self.arn.split(":")
        return parts[4] if len(parts) > 5 and parts[4].isdigit() else None

    @property
    def has_password(self) -> bool:
        return self.password_enabled is True

    def active_keys(self) -> list[KeyColumns]:
        return [k for k in self.keys if k.is_active]

    def existing_keys(self) -> list[KeyColumns]:
        return [k for k in self.keys if k.exists or k.is_active]


@dataclass(frozen=True)
class CredentialReport:
    rows: tuple[CredentialReportRow, ...]
    generated_at: datetime | None = None
    missing_columns: tuple[str, ...] = ()

    @property
    def root(self) -> CredentialReportRow | None:
        return next((r for r in self.rows if r.is_root), None)

    @property
    def users(self) -> list[CredentialReportRow]:
        return [r for r in self.rows if not r.is_root]

    def __iter__(self) -> Iterator[CredentialReportRow]:
        return iter(self.rows)


def parse_credential_report(content: bytes | str, *, generated_at: datetime | None = None) -> CredentialReport:
    """Parse the CSV; header names are matched case-insensitively (moto writes ``User``)."""
    text = content.decode("utf-8-sig", errors="replace") if isinstance(content, bytes) else content
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise CredentialReportError("credential report is empty") from None
    names = [h.strip().lower() for h in header]
    for required in REQUIRED_COLUMNS:
        if required not in names:
            raise CredentialReportError(f"credential report has no {required!r} column (header: {header[:4]!r}…)")
    missing = tuple(c for c in COLUMNS if c not in names)
    rows = []
    for lineno, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(names):
            raise CredentialReportError(f"credential report line {lineno}: {len(cells)} cells, header has {len(names)}")
        rows.append(_row(dict(zip(names, cells))))
    return CredentialReport(rows=tuple(rows), generated_at=generated_at, missing_columns=missing)


def _row(cells: dict[str, str]) -> CredentialReportRow:
    def t(name: str) -> Time:
        return parse_time(cells.get(name, "N/A"), name)

    def f(name: str) -> Flag:
        return parse_flag(cells.get(name, "N/A"), name)

    def s(name: str) -> Text:
        return parse_text(cells.get(name, "N/A"))

    def key(n: int) -> KeyColumns:
        p = f"access_key_{n}_"
        return KeyColumns(
            slot=n,
            active=f(p + "active"),
            last_rotated=t(p + "last_rotated"),
            last_used_date=t(p + "last_used_date"),
            last_used_region=s(p + "last_used_region"),
            last_used_service=s(p + "last_used_service"),
        )

    def cert(n: int) -> CertColumns:
        return CertColumns(slot=n, active=f(f"cert_{n}_active"), last_rotated=t(f"cert_{n}_last_rotated"))

    return CredentialReportRow(
        user=cells["user"].strip(),
        arn=cells["arn"].strip(),
        user_creation_time=t("user_creation_time"),
        password_enabled=f("password_enabled"),
        password_last_used=t("password_last_used"),
        password_last_changed=t("password_last_changed"),
        password_next_rotation=t("password_next_rotation"),
        mfa_active=f("mfa_active"),
        keys=(key(1), key(2)),
        certs=(cert(1), cert(2)),
        extra={k: v for k, v in cells.items() if k not in COLUMNS},
    )


def fetch_credential_report(
    iam: Any,
    *,
    max_wait: float = 120.0,
    first_delay: float = 1.0,
    max_delay: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> CredentialReport:
    """Generate (when needed) and fetch the report, waiting with bounded exponential backoff.

    ``GenerateCredentialReport`` answers STARTED / INPROGRESS until the report is COMPLETE; fetching then may
    still say ``ReportInProgress`` (wait), ``ReportNotPresent`` or ``ReportExpired`` (generate again). The total
    time spent sleeping never exceeds ``max_wait`` seconds.
    """
    wait = BoundedWait(Backoff(first_delay, max_delay, "none"), max_wait, sleep=sleep)

    def pause(why: str) -> None:
        if not wait.pause():
            raise CredentialReportError(f"credential report not ready after {wait.waited:.0f} s ({why})")

    def generate() -> None:
        while True:
            try:
                state = iam.generate_credential_report().get("State")
            except ClientError as exc:
                if error_code(exc) == "LimitExceeded" or error_code(exc) in THROTTLING_CODES:
                    pause(error_code(exc))
                    continue
                raise CredentialReportError(f"GenerateCredentialReport failed: {error_code(exc)}") from None
            if state == "COMPLETE":
                return
            if state not in ("STARTED", "INPROGRESS"):
                raise CredentialReportError(f"GenerateCredentialReport answered an unknown state {state!r}")
            pause(f"state {state}")

    generate()
    regenerated = 0
    while True:
        try:
            resp = iam.get_credential_report()
        except ClientError as exc:
            code = error_code(exc)
            if code == "ReportInProgress":
                pause(code)
                continue
            if code in ("ReportNotPresent", "ReportExpired"):
                regenerated += 1
                if regenerated > 3:
                    raise CredentialReportError(
                        f"GetCredentialReport kept answering {code} after regenerating"
                    ) from None
                if regenerated > 1:
                    pause(code)
                generate()
                continue
            raise CredentialReportError(f"GetCredentialReport failed: {code or exc}") from None
        generated = resp.get("GeneratedTime")
        if isinstance(generated, datetime) and generated.tzinfo is None:
            generated = generated.replace(tzinfo=timeutil.UTC)
        return parse_credential_report(
            resp.get("Content", b""), generated_at=generated if isinstance(generated, datetime) else None
        )
