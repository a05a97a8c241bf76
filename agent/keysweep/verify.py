"""Verification: what sts:GetCallerIdentity proves about each found key — done safely.

Order of decisions for each finding (nothing is sent before the last step):
1. offline gate: canary (key id / profile / decoded account), no secret, key type, example key, missing token;
2. the account of an old ``AKIAI…``/``AKIAJ…`` key, from sts:GetAccessKeyInfo signed with keysweep's own identity
   (when configured and available), then canary / deny / allow decisions on that account;
3. the verification cache (keyed by the keyed fingerprint, never the secret);
4. a GetCallerIdentity call signed with the found credentials only, at keysweep's own STS endpoint, paced by a
   global token bucket and per-key-id spacing, with botocore's retries off and our own bounded retries.

The STS answer is mapped explicitly; anything that is not one of the documented STS answers is ``unknown`` with
a reason and is retried on a later sweep, never ``live`` or ``invalid``. Every answer's time and RequestId travel
with the finding (a signed call is the key's IAM last use: the central audit discounts these).

``mode: identify`` never signs with the found key: steps 1 and 2 only, and the finding's verification is
``skipped`` (``identify-only``) with the account; liveness then comes from IAM on the central side.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from keysweep import aws, keyid, timeutil
from keysweep.canary import CanaryGate, is_account_id
from keysweep.fingerprint import Fingerprinter
from keysweep.models import Finding, Verification
from keysweep.ratelimit import KeySpacing, TokenBucket
from keysweep.retry import THROTTLING_CODES, TRANSIENT_CODES, Backoff, error_code, http_status
from keysweep.stage_config import VerifyConfig
from keysweep.verify_cache import CACHE_FILE, VerifyCache

log = logging.getLogger(__name__)


# the documented STS answers about a credential, and the status each proves
_STS_ANSWERS = {
    "InvalidClientTokenId": "invalid",
    "SignatureDoesNotMatch": "wrong_secret",
    "ExpiredToken": "expired",
}
# AWS request ids: a UUID (STS, IAM) or an opaque token (moto, S3's x-amz-request-id); anything else is dropped
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def principal_type(arn: str) -> str | None:
    """iam-user, root, assumed-role or federated-user from a caller ARN (None for anything else)."""
    parts = arn.split(":", 5)
    if len(parts) != 6:
        return None
    service, resource = parts[2], parts[5]
    if service == "iam" and resource == "root":
        return "root"
    if service == "iam" and resource.startswith("user/"):
        return "iam-user"
    if service == "sts" and resource.startswith("assumed-role/"):
        return "assumed-role"
    if service == "sts" and resource.startswith("federated-user/"):
        return "federated-user"
    return None


@dataclass(frozen=True)
class Outcome:
    verification: Verification
    retryable: bool = False
    connection_failed: bool = False


def _now() -> str:
    return timeutil.now_iso()


def _unknown(
    reason: str, *, retryable: bool = False, connection_failed: bool = False, request_id: str | None = None
) -> Outcome:
    return Outcome(
        Verification("unknown", reason=reason, checked_at=_now(), request_id=request_id), retryable, connection_failed
    )


def request_id(response: Mapping[str, Any] | None) -> str | None:
    """The RequestId of an AWS answer (a parsed result or a ClientError's response), when it is well formed."""
    meta = (response or {}).get("ResponseMetadata")
    if not isinstance(meta, Mapping):
        return None
    headers = meta.get("HTTPHeaders")
    headers = headers if isinstance(headers, Mapping) else {}
    for value in (meta.get("RequestId"), headers.get("x-amzn-requestid"), headers.get("x-amz-request-id")):
        if isinstance(value, str) and _REQUEST_ID_RE.fullmatch(value):
            return value
    return None


def identified(account: str | None) -> Verification:
    """identify mode's word on a key: its account, learned without signing anything with the key."""
    return Verification("skipped", account=account, reason="identify-only")


def classify_identity(answer: Mapping[str, Any]) -> Outcome:
    """A 200 answer is ``live`` only when it carries a well-formed account and ARN."""
    account, arn, user_id = answer.get("Account"), answer.get("Arn"), answer.get("UserId")
    rid = request_id(answer)
    if not (isinstance(account, str) and is_account_id(account) and isinstance(arn, str) and arn.startswith("arn:")):
        return _unknown("malformed-response", request_id=rid)
    return Outcome(
        Verification(
            "live",
            account=account,
            arn=arn,
            user_id=user_id if isinstance(user_id, str) else None,
            principal_type=principal_type(arn),
            checked_at=_now(),
            request_id=rid,
        )
    )


def classify_error(exc: Exception, status: int | None = None) -> Outcome:
    """Map a failed call to an outcome. Only a documented STS error document proves invalid/wrong/expired.

    ``status``: the HTTP status of the response, when one arrived (:class:`keysweep.aws.ResponseStatus`); it
    classifies answers whose body botocore could not parse (a proxy's plain-text 429 is throttling)."""
    if isinstance(exc, ClientError):
        outcome = _classify_client_error(exc, status)
        rid = request_id(exc.response)
        if rid is None:
            return outcome
        return dataclasses.replace(outcome, verification=dataclasses.replace(outcome.verification, request_id=rid))
    if isinstance(exc, (ConnectTimeoutError, ReadTimeoutError)):
        return _unknown("timeout", retryable=True, connection_failed=True)
    if isinstance(exc, BotoConnectionError):
        return _unknown("connection-failed", retryable=True, connection_failed=True)
    if isinstance(exc, BotoCoreError):
        return _unknown(f"client-error:{exc.__class__.__name__}")
    if status is not None:
        # the body was not an STS document (botocore raises ResponseParserError, KeyError, ValueError, …)
        return _by_status(status) or _unknown(f"not-sts-response-{status}")
    return _unknown(f"unexpected-error:{exc.__class__.__name__}")


def _classify_client_error(exc: ClientError, status: int | None) -> Outcome:
    status = http_status(exc) or status or 0
    code = error_code(exc, default="")
    error = (exc.response or {}).get("Error")
    message = error.get("Message") if isinstance(error, dict) else None
    if code == "SignatureDoesNotMatch" and isinstance(message, str) and "Signature expired" in message:
        # the host clock is off by more than 5 minutes: says nothing about the secret
        return _unknown("clock-skew")
    if code in _STS_ANSWERS and status in (400, 403):
        return Outcome(Verification(_STS_ANSWERS[code], reason=code, checked_at=_now()))
    if code in THROTTLING_CODES:
        return _unknown("throttled", retryable=True)
    by_status = _by_status(status)
    if by_status is not None:
        return by_status
    if code in TRANSIENT_CODES:
        return _unknown(f"sts-error:{code}", retryable=True)
    if code and not code.isdigit() and status in (400, 403):
        return _unknown(f"sts-error:{code}")
    return _unknown(f"not-sts-response-{status}" if status else "not-sts-response")


def _by_status(status: int) -> Outcome | None:
    """Throttling and server errors are known by their HTTP status alone, whatever the body says."""
    if status == 429:
        return _unknown("throttled", retryable=True)
    if status >= 500:
        return _unknown(f"server-error-{status}", retryable=True)
    return None


class Verifier:
    """Verifies findings as configured. May live as long as the agent (the cache stays in memory between runs);
    ``verify_all`` runs its own worker threads, and two ``verify_all`` calls must not overlap."""

    def __init__(self, config: VerifyConfig, *, state_dir: Path | None, fingerprinter: Fingerprinter | None) -> None:
        self.config = config
        self.endpoint = config.endpoint_url()
        self._fingerprinter = fingerprinter
        self._gate = CanaryGate.build(
            extra_accounts=config.canary_accounts, profiles=config.canary_profiles, key_ids=config.canary_key_ids
        )
        self._allow = frozenset(config.allow_accounts)
        self._deny = frozenset(config.deny_accounts)
        cache_path = state_dir / CACHE_FILE if (state_dir is not None and config.cache_enabled) else None
        self._cache = VerifyCache(cache_path, config.cache_ttls() if config.cache_enabled else {})
        self._bucket = TokenBucket(config.rate_limit_per_s)
        self._spacing = KeySpacing(config.same_key_spacing)
        self._client_config = aws.client_config(
            connect_timeout=config.connect_timeout, read_timeout=config.read_timeout, max_attempts=0
        )
        self._endpoint_down = threading.Event()
        self._should_stop: Callable[[], bool] = lambda: False
        self._agent_sts: Any = None
        self._agent_status: aws.ResponseStatus | None = None
        self._agent_problem: str | None = None
        self._account_lookups: dict[str, tuple[str | None, str | None]] = {}
        self._canary_ids: dict[str, str] = {}  # key id -> why it is a honey token
        self.calls = 0  # STS requests made (GetCallerIdentity and GetAccessKeyInfo)
        self._calls_lock = threading.Lock()

    # -- the pipeline -------------------------------------------------------------------------------------------
    def verify_all(
        self, findings: Iterable[Finding], *, should_stop: Callable[[], bool] | None = None
    ) -> list[Finding]:
        """The same findings, in order, each with ``verification`` set (and ``account_id`` when learned).

        ``should_stop`` (e.g. set by SIGTERM) ends the run early: keys not yet checked are ``unknown``
        (``interrupted``) and are checked on the next run.
        """
        items = list(findings)
        self._should_stop = should_stop or (lambda: False)
        # a long-lived verifier (the agent) tries the endpoint and failed account look-ups again on every run
        self._endpoint_down.clear()
        self._agent_sts = None
        self._agent_problem = None
        self._account_lookups = {k: v for k, v in self._account_lookups.items() if v[0] is not None}
        decided: dict[int, Verification] = {}
        accounts: dict[int, str | None] = {}
        groups: dict[str, list[int]] = {}
        self._remember_canaries(items)
        for i, f in enumerate(items):
            accounts[i] = f.account_id or keyid.decode_account(f.key_id)
            v = self._offline_gate(f, accounts[i])
            if v is not None:
                decided[i] = v
                continue
            if self.config.mode == "identify":
                if accounts[i] is None and self.config.use_get_access_key_info and not self._should_stop():
                    accounts[i] = self._lookup_account(f.key_id)
                decided[i] = self._account_gate(f, accounts[i]) or identified(accounts[i])
                continue
            key = self._cache_key(f)
            cached = self._cache.get(key)
            if cached is not None:
                accounts[i] = accounts[i] or cached.account
            elif accounts[i] is None and self.config.use_get_access_key_info and not self._should_stop():
                accounts[i] = self._lookup_account(f.key_id)
            # the account decisions run on cached answers too: the configuration may have changed since
            v = self._account_gate(f, accounts[i]) or cached
            if v is not None:
                decided[i] = v
            else:
                groups.setdefault(key, []).append(i)

        if groups:
            workers = max(1, min(self.config.max_concurrency, len(groups)))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="keysweep-verify") as pool:
                futures = {key: pool.submit(self._check, items[idx[0]]) for key, idx in groups.items()}
                for key, future in futures.items():
                    v = future.result()
                    account = accounts[groups[key][0]]
                    if v.account is None and account is not None:
                        v = dataclasses.replace(v, account=account)  # so a cached answer keeps a looked-up account
                    self._cache.put(key, v)
                    for i in groups[key]:
                        decided[i] = v
        try:
            self._cache.save()
        except OSError as exc:
            log.warning("could not save the verification cache: %s", exc.__class__.__name__)

        return [self._apply(f, decided[i], accounts[i]) for i, f in enumerate(items)]

    def known(self, f: Finding) -> Verification | None:
        """What can be said with no network call and without the secret (a finding restored from state keeps
        ``has_secret`` and its fingerprint, not the secret): an offline decision — canary, verification off, a
        key type or account that is never verified — or a cached answer; None when only a fresh check can tell."""
        account = f.account_id or keyid.decode_account(f.key_id)
        v = self._offline_gate(f, account)
        if v is not None and not (v.reason == "no-secret" and f.has_secret):
            return v
        if self.config.mode == "identify":  # the secret is not needed: only an old id's account may be missing
            account = account or self._account_lookups.get(f.key_id, (None, None))[0]
            if account is None:
                return None
            return self._account_gate(f, account) or identified(account)
        if f.has_session_token and f.session_token is None:
            return None  # the cache key of temporary credentials includes the token
        cached = self._cache.get(self._cache_key(f))
        account = account or (cached.account if cached is not None else None)
        if account is None and cached is None:
            return None  # an old key id: its account is looked up only when it is verified
        return self._account_gate(f, account) or cached

    def _remember_canaries(self, items: Iterable[Finding]) -> None:
        """A honey token recognised by its place (a canary profile) is a canary in every other place too: a copy in
        a backup file must not be verified, in this run or a later one (a watch scan sees only the copy)."""
        for f in items:
            reason = self._gate.reason(f, None)
            if reason is None or f.key_id in self._canary_ids:
                continue
            self._canary_ids[f.key_id] = reason
            if self._fingerprinter is not None:
                self._cache.put(self._canary_cache_key(f.key_id), Verification("canary", reason=reason))

    def _canary_cache_key(self, key_id: str) -> str:
        assert self._fingerprinter is not None
        return "canary|" + self._fingerprinter.key_fingerprint(key_id, None)

    def _remembered_canary(self, key_id: str) -> str | None:
        reason = self._canary_ids.get(key_id)
        if reason is None and self._fingerprinter is not None:
            cached = self._cache.get(self._canary_cache_key(key_id))
            reason = cached.reason if cached is not None else None
        return reason

    def _offline_gate(self, f: Finding, account: str | None) -> Verification | None:
        reason = self._gate.reason(f, account) or self._remembered_canary(f.key_id)
        if reason is not None:
            return Verification("canary", account=account, reason=reason)
        if not self.config.enabled:
            return Verification("skipped", account=account, reason="verification-disabled")
        if keyid.key_type(f.key_id) not in ("long-term", "temporary"):
            return Verification("skipped", account=account, reason="key-type-not-verifiable")
        if keyid.is_example_key(f.key_id):
            return Verification("skipped", account=account, reason="example-key")
        if f.secret is None:
            return Verification("skipped", account=account, reason="no-secret")
        if keyid.key_type(f.key_id) == "temporary" and f.session_token is None:
            return Verification("skipped", account=account, reason="no-session-token")
        return None

    def _account_gate(self, f: Finding, account: str | None) -> Verification | None:
        reason = self._gate.reason(f, account)
        if reason is not None:
            return Verification("canary", account=account, reason=reason)
        if account is not None and account in self._deny:
            return Verification("skipped", account=account, reason="account-denied")
        if self._allow and account is None:
            return Verification("skipped", reason="account-unknown")
        if self._allow and account not in self._allow:
            return Verification("skipped", account=account, reason="account-not-allowed")
        if account is None and self.config.unknown_account == "skip":
            return Verification("skipped", reason="account-unknown")
        return None

    def _apply(self, f: Finding, v: Verification, account: str | None) -> Finding:
        if v.account is None and account is not None:
            v = dataclasses.replace(v, account=account)
        changes: dict[str, Any] = {"verification": v}
        if f.account_id is None and v.account is not None:
            changes["account_id"] = v.account
        if v.status == "live" and v.principal_type == "root":
            changes["severity"] = "critical"
        return dataclasses.replace(f, **changes)

    def _cache_key(self, f: Finding) -> str:
        # endpoint-scoped: an answer from one STS endpoint (an emulator, a VPC endpoint) says nothing about another
        scope = f"{self.endpoint}|"
        if self._fingerprinter is None or f.secret is None:
            return scope + f.fingerprint
        key = self._fingerprinter.key_fingerprint(f.key_id, f.secret.reveal())
        if f.session_token is not None:
            key += ":" + self._fingerprinter.secret_fingerprint(f.session_token.reveal())
        return scope + key

    # -- network ------------------------------------------------------------------------------------------------
    def _count_call(self) -> None:
        with self._calls_lock:
            self.calls += 1

    def _backoff(self, attempt: int) -> float:
        return Backoff(self.config.backoff_base, self.config.backoff_max, "equal").delay(attempt)

    def _check(self, f: Finding) -> Verification:
        """GetCallerIdentity with the finding's credentials, with bounded retries; never raises."""
        try:
            client = self._identity_client(f)
            status = aws.ResponseStatus(client)
        except Exception as exc:
            return classify_error(exc).verification
        transient_retries = 0
        signature_retried = False
        while True:
            if self._endpoint_down.is_set():
                return _unknown("endpoint-unreachable").verification
            if self._should_stop():
                return _unknown("interrupted").verification
            attempt = self._call_identity(client, status, f.key_id)
            v = attempt.verification
            if v.status == "wrong_secret" and not signature_retried:
                # a second call with the same key id and another secret within ~5 s can be rejected spuriously
                signature_retried = True
                continue
            if attempt.retryable and transient_retries < self.config.max_retries:
                transient_retries += 1
                time.sleep(self._backoff(transient_retries))
                continue
            if attempt.connection_failed:
                self._endpoint_down.set()
            log.info("verified %s: %s%s", f.key_id, v.status, f" ({v.reason})" if v.reason else "")
            return v

    def _identity_client(self, f: Finding) -> Any:
        assert f.secret is not None
        return aws.isolated_client(
            "sts",
            access_key_id=f.key_id,
            secret_access_key=f.secret.reveal(),
            session_token=f.session_token.reveal() if f.session_token else None,
            region=self.config.region,
            endpoint_url=self.endpoint,
            config=self._client_config,
        )

    def _call_identity(self, client: Any, status: aws.ResponseStatus, key_id: str) -> Outcome:
        # pace right before sending, so the gaps hold between requests, not between preparations
        self._bucket.acquire()
        self._spacing.acquire(key_id)
        self._count_call()
        status.reset()
        try:
            answer = client.get_caller_identity()
        except Exception as exc:  # every failure becomes an outcome; none may stop the sweep
            return classify_error(exc, status.value)
        finally:
            self._spacing.done(key_id)
        return classify_identity(answer)

    def _agent_client(self) -> Any:
        """keysweep's own STS client, built once per run (credential resolution may probe instance metadata)."""
        if self._agent_sts is None and self._agent_problem is None:
            try:
                self._agent_sts = aws.make_client(
                    "sts", region=self.config.region, config=self._client_config, endpoint_url=self.endpoint
                )
                self._agent_status = aws.ResponseStatus(self._agent_sts)
            except Exception as exc:  # e.g. ProfileNotFound from keysweep's own AWS_PROFILE
                self._agent_problem = f"agent-client-error:{exc.__class__.__name__}"
        return self._agent_sts

    def _lookup_account(self, key_id: str) -> str | None:
        """The owning account of a key id, from sts:GetAccessKeyInfo signed with keysweep's own identity."""
        if key_id in self._account_lookups:
            return self._account_lookups[key_id][0]
        account: str | None = None
        reason: str | None = None
        for attempt in range(self.config.max_retries + 1):
            client = self._agent_client()
            if client is None or self._endpoint_down.is_set():
                reason = self._agent_problem or "endpoint-unreachable"
                break
            self._bucket.acquire()
            assert self._agent_status is not None
            self._agent_status.reset()
            try:
                self._count_call()
                answer = client.get_access_key_info(AccessKeyId=key_id)
            except NoCredentialsError:
                self._agent_problem = reason = "no-agent-credentials"
                break
            except Exception as exc:
                outcome = classify_error(exc, self._agent_status.value)
                reason = outcome.verification.reason
                if outcome.retryable and attempt < self.config.max_retries:
                    time.sleep(self._backoff(attempt + 1))
                    continue
                break
            value = answer.get("Account")
            if isinstance(value, str) and is_account_id(value):
                account = value
            else:
                reason = "malformed-response"
            break
        if account is None:
            log.info("account of %s not learned (%s)", key_id, reason)
        self._account_lookups[key_id] = (account, reason)
        return account
