"""Delivery to the central SQS queue: spool first, then SendMessageBatch with bounded retries.

``Reporter.report`` turns a sweep's findings into schema-v1 messages (only new, changed or due for re-report),
writes them and a heartbeat to the durable spool, then flushes. ``Reporter.flush`` sends what is spooled —
including what earlier runs could not deliver — in batches of at most 10 entries and ``max_batch_size`` bytes,
removes exactly what SQS accepted (``Successful[]``; ``Failed[]`` entries stay and are retried even when the HTTP
status was 200) and gives up after ``flush_timeout`` seconds of exponential backoff with full jitter, so a sweep
never hangs on a dead queue. FIFO queues get ``MessageDeduplicationId`` = a hash of what the finding message
reports (finding fingerprint, status, verification time; heartbeats: their message id), so a re-send is dropped but
a change of status within SQS's 5-minute window is not, and ``MessageGroupId`` = host id. SSE-SQS / SSE-KMS queues
need nothing here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keysweep import timeutil
from keysweep.errors import ConfigError
from keysweep.iam_policies import UserPolicies, read_user_policies_if_allowed
from keysweep.models import Finding, HostContext
from keysweep.report.message import (
    MessageTooLarge,
    SecretInMessage,
    assert_no_secret,
    encode_message,
    finding_message,
    heartbeat_message,
)
from keysweep.report.sent_state import SentState
from keysweep.report.spool import Spool, SpoolEntry, SpoolError, SpoolFull
from keysweep.retry import Backoff, is_retryable
from keysweep.stage_config import ReportConfig
from keysweep.suggest import suggest

log = logging.getLogger(__name__)

SQS_MAX_ENTRIES = 10
_GROUP_ID_OK = re.compile(r"^[!-~]{1,128}$")


@dataclass(frozen=True)
class DeliveryResult:
    spooled: int = 0  # messages written to the spool by this call
    sent: int = 0  # messages SQS accepted during this call (this run's and earlier runs')
    unchanged: int = 0  # findings not re-sent: already reported with the same status
    refused: int = 0  # messages the full spool could not take (findings are offered again next sweep)
    failed: int = 0  # entries SQS answered in Failed[] during this call (they stay spooled)
    pending: int = 0  # messages still in the spool afterwards
    pending_bytes: int = 0
    spool_filling: bool = False
    queue_reachable: bool | None = None  # None: nothing was sent
    errors: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["errors"] = list(self.errors)
        d["spool_depth"] = self.pending
        return d

    def merged(self, other: DeliveryResult) -> DeliveryResult:
        return DeliveryResult(
            spooled=self.spooled + other.spooled,
            sent=self.sent + other.sent,
            unchanged=self.unchanged + other.unchanged,
            refused=self.refused + other.refused,
            failed=self.failed + other.failed,
            pending=other.pending,
            pending_bytes=other.pending_bytes,
            spool_filling=other.spool_filling,
            queue_reachable=other.queue_reachable if other.queue_reachable is not None else self.queue_reachable,
            errors=self.errors + other.errors,
        )


def _attributes(msg: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    attrs = {
        "schema_version": {"DataType": "Number", "StringValue": str(msg.get("schema_version", 1))},
        "type": {"DataType": "String", "StringValue": str(msg.get("type", "unknown"))},
    }
    finding = msg.get("finding") or {}
    attrs["severity"] = {"DataType": "String", "StringValue": str(finding.get("severity") or "info")}
    account = (finding.get("verification") or {}).get("account") or finding.get("account_id")
    account = account or (msg.get("host") or {}).get("account_id")
    if account:
        attrs["account"] = {"DataType": "String", "StringValue": str(account)}
    return attrs


def entry_size(body: str, attributes: Mapping[str, Mapping[str, str]]) -> int:
    """What SQS counts against its size limits: the body plus every attribute's name, type and value."""
    size = len(body.encode("utf-8"))
    for name, attr in attributes.items():
        size += len(name.encode()) + len(attr["DataType"].encode()) + len(attr["StringValue"].encode())
    return size


@dataclass
class _Tally:
    spooled: int = 0
    unchanged: int = 0
    refused: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Pending:
    finding_fp: str
    status: str
    message_id: str
    body: str


def _group_id(host_id: str) -> str:
    return host_id if _GROUP_ID_OK.match(host_id) else "host-" + hashlib.sha256(host_id.encode()).hexdigest()[:40]


def dedup_id(msg: Mapping[str, Any]) -> str:
    """A FIFO deduplication id that changes whenever what the message reports changes (status, verification time),
    so only true re-sends are dropped within SQS's 5-minute window."""
    finding = msg.get("finding")
    if not isinstance(finding, Mapping) or not finding.get("finding_fingerprint"):
        return str(msg["message_id"])[:128]
    verification = finding.get("verification") or {}
    reported = "\x1f".join(
        str(v) for v in (finding["finding_fingerprint"], verification.get("status"), verification.get("checked_at"))
    )
    return hashlib.sha256(reported.encode()).hexdigest()


class Reporter:
    """Spools and sends one host's messages. One per process and state directory is enough."""

    def __init__(
        self,
        config: ReportConfig,
        state_dir: Path,
        context: HostContext,
        *,
        fingerprinter: Any = None,
        mode: str = "agent",
        client: Any = None,
    ) -> None:
        if not config.queue_url:
            raise ConfigError("report.queue_url: a queue URL is needed to report")
        self.config = config
        self.context = context
        self.mode = mode
        state_dir = Path(state_dir)
        if fingerprinter is None:
            from keysweep.fingerprint import Fingerprinter

            fingerprinter = Fingerprinter.from_config(None, state_dir)
        self.fingerprinter = fingerprinter
        self.spool = Spool(
            state_dir / "spool",
            max_bytes=config.spool_max_size,
            max_messages=config.spool_max_messages,
            warn_ratio=config.spool_warn_ratio,
            max_heartbeats=config.spool_max_heartbeats,
        )
        self.sent_state = SentState(
            state_dir / "sent-state.json",
            rereport_after=config.rereport_interval,
            retention=config.sent_state_retention,
        )
        self._client = client
        self._policies: dict[str, UserPolicies | None] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            from keysweep.aws import client_config, make_client

            # our own backoff retries within flush_timeout; the SDK tries each call once, briefly
            cfg = client_config(connect_timeout=2.0, read_timeout=5.0, max_attempts=1)
            self._client = make_client("sqs", region=self.config.queue_region(), config=cfg)
        return self._client

    def spool_depth(self) -> int:
        return len(self.spool.entries())

    # --- building -------------------------------------------------------------------------------------------
    def _iam_policies(self, finding: Finding) -> UserPolicies | None:
        v = finding.verification
        if not (self.config.read_iam_policies and v and v.status == "live" and v.arn and ":user/" in v.arn):
            return None
        user = v.arn.rsplit("/", 1)[-1]
        if user not in self._policies:
            self._policies[user] = read_user_policies_if_allowed(user)
        return self._policies[user]

    def finding_fingerprint(self, finding: Finding) -> str:
        return str(self.fingerprinter.finding_fingerprint(self.context.host_id, finding.location, finding.fingerprint))

    def _encode(self, msg: dict[str, Any], findings: Sequence[Finding]) -> str:
        body = encode_message(msg, self.config.max_message_size - entry_size("", _attributes(msg)))
        assert_no_secret(body, findings)
        return body

    def _refuse(self, why: str, tally: _Tally) -> None:
        self.spool.count("refused")
        tally.refused += 1
        tally.problems.append(why)
        log.error("report: %s", why)

    def report(
        self,
        findings: Iterable[Finding],
        stats: Any = None,
        *,
        heartbeat: bool = True,
        started_at: float | None = None,
        errors: Sequence[str] = (),
    ) -> DeliveryResult:
        """Spool what the central store does not know yet (and a heartbeat), then send the spool."""
        findings = list(findings)
        now = time.time()
        tally = _Tally()
        self.spool.refresh()
        flushed = self._spool_findings(self._messages(findings, now, tally), now, tally)
        try:
            self.sent_state.save(now)
        except OSError as exc:  # the findings are spooled; at worst they are sent again next sweep
            tally.problems.append(f"sent state {self.sent_state.path}: cannot write ({exc.strerror})")
            log.error("report: %s", tally.problems[-1])
        status = self.spool.status()
        if status.filling:
            log.warning(
                "report: spool %s is filling: %d of %d messages, %d of %d bytes (queue unreachable?)",
                self.spool.directory,
                status.depth,
                status.capacity_messages,
                status.bytes,
                status.capacity_bytes,
            )
        if heartbeat and self.config.heartbeats:
            hb = heartbeat_message(
                self.context,
                stats=stats,
                findings=findings,
                started_at=started_at if started_at is not None else now,
                finished_at=time.time(),
                spool=status.to_dict(),
                errors=[*errors, *tally.problems],  # the context's own errors are in host.errors
                mode=self.mode,
            )
            try:
                self.spool.put(self._encode(hb, findings), kind="heartbeat", message_id=hb["message_id"])
                tally.spooled += 1
            except (SpoolError, MessageTooLarge, SecretInMessage) as exc:
                self._refuse(f"heartbeat not spooled: {exc}", tally)
        mine = DeliveryResult(
            spooled=tally.spooled, unchanged=tally.unchanged, refused=tally.refused, errors=tuple(tally.problems)
        )
        if flushed.queue_reachable is False:  # the make-room flush already waited out flush_timeout
            st = self.spool.status()
            last = DeliveryResult(
                pending=st.depth, pending_bytes=st.bytes, spool_filling=st.filling, queue_reachable=False
            )
            return flushed.merged(mine).merged(last)
        return flushed.merged(mine).merged(self.flush())

    def _messages(self, findings: list[Finding], now: float, tally: _Tally) -> list[_Pending]:
        """Encoded messages for the findings that are new, changed or due for re-report (each place once)."""
        out: list[_Pending] = []
        done: set[str] = set()
        for f in findings:
            ffp = self.finding_fingerprint(f)
            if ffp in done:
                continue
            done.add(ffp)
            status = f.verification.status if f.verification else "unverified"
            reason = self.sent_state.reason(ffp, status, now)
            if reason is None:
                self.sent_state.seen(ffp, now)
                tally.unchanged += 1
                continue
            first = self.sent_state.first_seen(ffp)
            suggestion = suggest(
                f,
                self.context,
                iam_policies=self._iam_policies(f),
                scp_exempt_principal_arns=self.config.scp_exempt_principal_arns,
            )
            msg = finding_message(
                f,
                self.context,
                finding_fingerprint=ffp,
                suggestion=suggestion,
                report_reason=reason,
                first_seen=timeutil.iso(first) if first is not None else None,
                mode=self.mode,
            )
            try:
                out.append(_Pending(ffp, status, msg["message_id"], self._encode(msg, [f])))
            except (MessageTooLarge, SecretInMessage) as exc:
                self._refuse(f"finding {ffp}: {exc}", tally)
        return out

    def _spool_findings(self, pending: list[_Pending], now: float, tally: _Tally) -> DeliveryResult:
        """Spool the messages and mark them reported; when the spool is full, flush once to make room.

        What still does not fit is refused and *not* marked, so the next sweep offers it again.
        Returns what the make-room flush delivered (an empty result when none was needed).
        """
        flushed = DeliveryResult()
        for attempt in (1, 2):
            results = self.spool.put_many([(p.body, "finding", p.message_id) for p in pending])
            retry = [(p, r) for p, r in zip(pending, results) if isinstance(r, SpoolError)]
            for p, r in zip(pending, results):
                if not isinstance(r, SpoolError):
                    self.sent_state.record_sent(p.finding_fp, p.status, now)
                    tally.spooled += 1
            if not retry:
                break
            if attempt == 1 and any(isinstance(r, SpoolFull) for _, r in retry):
                flushed = self.flush()
                pending = [p for p, _ in retry]
                continue
            for p, r in retry:
                self._refuse(f"{r}; finding {p.finding_fp} will be offered again next sweep", tally)
            break
        return flushed

    # --- sending --------------------------------------------------------------------------------------------
    def flush(self) -> DeliveryResult:
        """Send everything spooled (oldest first) within ``flush_timeout``; what is not accepted stays spooled."""
        sent = failed = 0
        errors: list[str] = []
        reachable: bool | None = None
        with self.spool.locked() as mine:
            if mine:
                self.spool.refresh()
                sent, failed, reachable, errors = self._flush_locked()
            else:
                errors.append("another keysweep process is sending this spool")
        st = self.spool.status()
        return DeliveryResult(
            sent=sent,
            failed=failed,
            pending=st.depth,
            pending_bytes=st.bytes,
            spool_filling=st.filling,
            queue_reachable=reachable,
            errors=tuple(errors),
        )

    def _batches(self, entries: list[SpoolEntry], skip: set[str]) -> Iterable[list[tuple[SpoolEntry, dict[str, Any]]]]:
        batch: list[tuple[SpoolEntry, dict[str, Any]]] = []
        size = 0
        for e in entries:
            if e.name in skip:
                continue
            body = self.spool.read(e)
            if body is None:
                continue
            try:
                msg = json.loads(body)
            except ValueError:
                msg = None
            if not isinstance(msg, dict) or not isinstance(msg.get("message_id"), str):
                self.spool.quarantine(e, "not a keysweep message")
                continue
            entry = self._entry(len(batch), body, msg)
            n = entry_size(body, entry["MessageAttributes"])
            if batch and (len(batch) >= SQS_MAX_ENTRIES or size + n > self.config.max_batch_size):
                yield batch
                batch, size = [], 0
                entry = self._entry(0, body, msg)
            batch.append((e, entry))
            size += n
        if batch:
            yield batch

    def _entry(self, index: int, body: str, msg: Mapping[str, Any]) -> dict[str, Any]:
        entry: dict[str, Any] = {"Id": f"m{index}", "MessageBody": body, "MessageAttributes": _attributes(msg)}
        if self.config.is_fifo:
            entry["MessageDeduplicationId"] = dedup_id(msg)
            entry["MessageGroupId"] = _group_id(str((msg.get("host") or {}).get("host_id") or self.context.host_id))
        return entry

    def _flush_locked(self) -> tuple[int, int, bool | None, list[str]]:
        deadline = time.monotonic() + self.config.flush_timeout
        sent = failed = attempt = 0
        reachable: bool | None = None
        errors: list[str] = []
        skip: set[str] = set()  # entries SQS rejected as the sender's fault: retried next flush, not now
        while True:
            retry_later = False
            for batch in self._batches(self.spool.entries(), skip):
                while True:
                    try:
                        resp = self.client.send_message_batch(
                            QueueUrl=self.config.queue_url, Entries=[entry for _, entry in batch]
                        )
                        break
                    except Exception as exc:  # noqa: BLE001 - classified here; nothing escapes a flush
                        if not is_retryable(exc):
                            errors.append(f"sqs: {type(exc).__name__}: {exc}"[:300])
                            log.error("report: SQS refused the batch (%s); messages stay spooled", exc)
                            answered = hasattr(exc, "response")  # SQS answered (vs. no credentials, region…)
                            return sent, failed, True if answered else reachable, errors
                        reachable = False
                        attempt += 1
                        if not self._backoff(attempt, deadline):
                            errors.append(f"sqs: unreachable for {self.config.flush_timeout:g}s ({type(exc).__name__})")
                            log.warning(
                                "report: SQS unreachable (%s); %d messages stay spooled", exc, self.spool_depth()
                            )
                            return sent, failed, reachable, errors
                reachable = True
                by_id = {entry["Id"]: e for e, entry in batch}
                ok = [by_id[s["Id"]] for s in resp.get("Successful", []) if s.get("Id") in by_id]
                self.spool.remove(ok)
                sent += len(ok)
                for fail in resp.get("Failed", []):
                    e = by_id.get(fail.get("Id"))
                    if e is None:
                        continue
                    failed += 1
                    log.warning("report: SQS did not accept %s: %s %s", e.name, fail.get("Code"), fail.get("Message"))
                    if fail.get("SenderFault"):
                        skip.add(e.name)
                        errors.append(f"sqs: message {e.name} rejected: {fail.get('Code')}")
                    else:
                        retry_later = True
                if time.monotonic() >= deadline:
                    return sent, failed, reachable, errors
            if not retry_later:
                return sent, failed, reachable, errors
            attempt += 1
            if not self._backoff(attempt, deadline):
                errors.append("sqs: some messages were not accepted before flush_timeout; they stay spooled")
                return sent, failed, reachable, errors

    def _backoff(self, attempt: int, deadline: float) -> bool:
        """Sleep with exponential backoff and full jitter; False when that would pass the deadline."""
        delay = Backoff(self.config.backoff_base, self.config.backoff_max, "full").delay(attempt)
        if time.monotonic() + delay >= deadline:
            return False
        time.sleep(delay)
        return True
