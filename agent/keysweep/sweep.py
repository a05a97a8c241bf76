"""One sweep: every configured source → verify → host context + report, with the file state making it incremental.

A :class:`Pipeline` is built once per configuration (rules, detector, verifier, state) and runs periodic sweeps
and the small scans of files the watcher saw change. Verification and reporting are serialised between the two.
An interrupted sweep resumes: every file read is already in the state, so the next sweep only re-stats it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keysweep import __version__, statedir, timeutil
from keysweep.allowlist import Allowlist
from keysweep.config import AgentConfig, ScanConfig
from keysweep.detect import Detector
from keysweep.errors import KeysweepError
from keysweep.fingerprint import Fingerprinter, default_state_dir
from keysweep.models import Finding, HostContext, Verification
from keysweep.ruleset import load_ruleset
from keysweep.scan_types import ScanOptions, ScanResult, ScanStats
from keysweep.sources.archives import inflate_engine

if TYPE_CHECKING:
    # each stage is imported where it is first used: a local scan that verifies nothing, keeps no state and sends
    # nothing does not pay for botocore, SQLite, urllib's HTTP stack or the spool at start-up
    from keysweep.report.sqs import DeliveryResult
    from keysweep.state import StateStore
    from keysweep.verify import Verifier

log = logging.getLogger(__name__)

StopCheck = Callable[[], bool]


@dataclass
class SweepResult:
    number: int | None
    started: float
    finished: float
    interrupted: bool
    full_reread: bool
    resumed: bool
    stats: dict[str, Any]
    cache: dict[str, int]
    findings: list[Finding]  # verified, without secrets
    findings_by_status: Counter[str]
    delivery: dict[str, Any] | None
    errors: dict[str, int]
    pruned: int = 0
    peak_rss: int = 0
    kind: str = "sweep"  # or "watch"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.finished - self.started

    def summary(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "kind": self.kind,
            "started_at": timeutil.iso(self.started),
            "finished_at": timeutil.iso(self.finished),
            "finished_ts": round(self.finished, 3),
            "duration_s": round(self.duration, 3),
            "files_scanned": self.stats.get("files_scanned", 0),
            "bytes_scanned": self.stats.get("bytes_scanned", 0),
            "files_cached": self.cache.get("hits", 0),
            "files_reverified": self.cache.get("reverify", 0),
            "skipped": self.stats.get("skipped", {}),
            "interrupted": self.interrupted,
            "full_reread": self.full_reread,
            "resumed": self.resumed,
            "pruned": self.pruned,
            "peak_rss_mb": round(self.peak_rss / 1048576, 1),
            "findings": len(self.findings),
            "findings_by_status": dict(self.findings_by_status),
            "delivery": self.delivery,
        }


def state_excludes(state_dir: str, starts: Sequence[str], host_prefix: str | None) -> tuple[str, ...]:
    """Exclude the state directory when a walk could reach it (an exclude costs a match per directory entry)."""
    state_dir = os.path.abspath(state_dir).rstrip("/")
    for start in starts:
        start = os.path.join(host_prefix, start.lstrip("/")) if host_prefix and start.startswith("/") else start
        start = os.path.abspath(start).rstrip("/") + "/"
        if (state_dir + "/").startswith(start):
            return (state_dir, state_dir + "/**")
    return ()


def scan_options(
    scan: ScanConfig,
    paths: Sequence[str] = (),
    *,
    state_dirs: Sequence[str] = (),
    sources: Sequence[str] | None = None,
    follow_symlinks: bool = False,
) -> ScanOptions:
    """The one mapping of a ``scan`` section to the scan's options. With ``paths``, only they are scanned (source
    ``files`` unless ``sources`` says otherwise); each state directory a walk could reach is excluded."""
    starts = paths or scan.roots
    own = tuple(e for d in state_dirs for e in state_excludes(d, starts, scan.host_prefix))
    return ScanOptions(
        paths=tuple(paths),
        roots=scan.roots,
        sources=tuple(sources) if sources else (("files",) if paths else scan.sources),
        excludes=(*scan.excludes, *own),
        allowlist=Allowlist.load(scan.allowlist) if scan.allowlist else None,
        max_file_size=scan.max_file_size,
        workers=scan.workers,
        same_filesystem=scan.same_filesystem,
        skip_network_fs=scan.skip_network_fs,
        follow_symlinks=follow_symlinks,
        path_prefix=scan.host_prefix,
        archive_max_depth=scan.archive_max_depth,
        archive_max_bytes=scan.archive_max_bytes,
        archive_max_ratio=scan.archive_max_ratio,
    )


def build_scan_options(config: AgentConfig, paths: Sequence[str] = ()) -> ScanOptions:
    """The agent's scan options: its ``scan`` section; its state directory is always excluded."""
    return scan_options(config.scan, paths, state_dirs=(config.state_dir,))


def state_digest(detector: Detector, options: ScanOptions) -> str:
    """What changes the findings of reading one file: version, rules, fingerprint key, detector and read limits."""
    from keysweep.state import cache_digest

    return cache_digest(
        __version__,
        detector.ruleset.digest,
        detector.fingerprinter.secret_fingerprint("keysweep state digest"),  # changes with the fingerprint key
        detector.include_examples,
        options.max_file_size,
        options.archive_max_depth,
        options.archive_max_bytes,
        options.archive_max_ratio,
        options.path_prefix,
    )


class Pipeline:
    """The one composition root: rules, detector, verifier (when first needed), file state and reporter built from one
    configuration.

    The agent builds one per configuration (a reload builds a new one) and runs :meth:`sweep` and
    :meth:`scan_paths`; ``keysweep scan`` and ``keysweep cloud`` build one for a run and call :meth:`scan`,
    :meth:`verify` and :meth:`deliver` themselves. Keyword arguments say how a manual run differs from the agent:

    - ``use_state_dir=False``: no state directory (no verification cache; the fingerprint key is made for this run
      with ``per_run_key``, else it is the user's installation key);
    - ``incremental=False``: no file state (every file is read); ``reread_secrets``: with a file state, whether a
      file whose findings had a secret is read again — None (the agent): when the verifier cannot tell without
      the secret; True: always (a manual ``--verify``); False: never (a manual scan without verification);
    - ``options``: the scan's options (default: from the configuration); ``include_examples``: report example
      keys; ``mode``: the reporter's mode (``agent`` or ``scan``).
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        options: ScanOptions | None = None,
        use_state_dir: bool = True,
        incremental: bool = True,
        reread_secrets: bool | None = None,
        per_run_key: bool = False,
        include_examples: bool = False,
        mode: str = "agent",
    ) -> None:
        self.config = config
        self.state_dir = statedir.prepare(config.state_path) if use_state_dir else None
        self.ruleset = load_ruleset([Path(d) for d in config.scan.rules_dirs])
        self.fingerprinter = Fingerprinter.from_config(config.fingerprint_key(), self.state_dir, per_run=per_run_key)
        self.detector = Detector(self.ruleset, self.fingerprinter, include_examples=include_examples)
        self._verifier: Verifier | None = None  # built on first use (:attr:`verifier`)
        self._verifier_lock = threading.Lock()
        self.options = options if options is not None else build_scan_options(config)
        self._reread_secrets = reread_secrets
        self.mode = mode
        self.state: StateStore | None = self._open_state() if incremental and self.state_dir is not None else None
        self.context: HostContext | None = None
        self._reporter: Any = None
        self._lock = threading.Lock()  # verification + reporting, shared by sweeps and watch scans
        self._logged: dict[tuple[str, str], str] = {}
        self.watch_scans = 0

    def _open_state(self) -> StateStore:
        from keysweep.state import StateStore

        needs_reverify: Callable[[Finding], bool] | None = {
            None: self._needs_reverify,
            True: lambda f: True,
            False: None,
        }[self._reread_secrets]
        return StateStore(
            self.config.state_path, digest=state_digest(self.detector, self.options), needs_reverify=needs_reverify
        )

    @property
    def verifier(self) -> Verifier:
        """The verifier, built when first asked for: a scan that verifies nothing never builds one (its botocore
        client configuration costs ~0.1 CPU-s of start-up). Built once, whichever thread asks first (the agent's
        sweeps and watch scans run in threads; ``functools.cached_property`` takes no lock on 3.12 and later)."""
        verifier = self._verifier
        if verifier is None:
            with self._verifier_lock:  # not self._lock: verification runs under it and asks for the verifier
                verifier = self._verifier
                if verifier is None:
                    from keysweep.verify import Verifier

                    verifier = Verifier(self.config.verify, state_dir=self.state_dir, fingerprinter=self.fingerprinter)
                    self._verifier = verifier
        return verifier

    @property
    def spool_home(self) -> Path:
        """Where the report spool lives: the state directory, else the user's default one."""
        return self.state_dir if self.state_dir is not None else default_state_dir()

    @property
    def file_state(self) -> StateStore:
        """The file state (the agent's pipelines always have one)."""
        if self.state is None:
            raise KeysweepError("this pipeline has no file state")
        return self.state

    def reopen_state(self) -> None:
        """After a sweep failed in the state database: open it again (a damaged one is then moved aside and
        rebuilt), so one bad page does not fail every later sweep."""
        import sqlite3

        try:
            self.file_state.close()
        except sqlite3.Error:
            pass
        self.state = self._open_state()

    def _needs_reverify(self, f: Finding) -> bool:
        # a finding restored from state has no secret: verifiable only from the cache or offline gates
        return self.verifier.known(f) is None

    def _verified_without_secrets(self, findings: Sequence[Finding]) -> list[Finding]:
        fresh = [f for f in findings if not (f.has_secret and f.secret is None)]
        verified = iter(self.verifier.verify_all(fresh)) if fresh else iter(())
        out: list[Finding] = []
        for f in findings:
            if f.has_secret and f.secret is None:
                v = self.verifier.known(f) or Verification("unknown", reason="verification-expired")
                out.append(f.with_verification(v))
            else:
                out.append(next(verified))
        return [f.without_secret() for f in out]

    # --- reporting ----------------------------------------------------------------------------------------
    def _context(self, refresh: bool) -> HostContext:
        if self.context is None or refresh:
            from keysweep.context import detect_context

            self.context = detect_context(self.config.context)
        return self.context

    def deliver(
        self, findings: list[Finding], stats: ScanStats, *, heartbeat: bool = True, started: float | None = None
    ) -> DeliveryResult:
        """Send the findings (and a heartbeat) to the configured queue through the spool."""
        context = self._context(refresh=heartbeat)
        if self._reporter is None:
            from keysweep.report.sqs import Reporter

            self._reporter = Reporter(
                self.config.report, self.spool_home, context, fingerprinter=self.fingerprinter, mode=self.mode
            )
        self._reporter.context = context
        result: DeliveryResult = self._reporter.report(findings, stats, heartbeat=heartbeat, started_at=started)
        return result

    def _report(
        self, findings: list[Finding], stats: ScanStats, *, heartbeat: bool, started: float
    ) -> dict[str, Any] | None:
        if not self.config.report.queue_url:
            return None
        try:
            result = self.deliver(findings, stats, heartbeat=heartbeat, started=started)
        except (KeysweepError, OSError) as exc:  # what was not spooled is offered again at the next sweep
            log.error("report.failed", extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
            return {"errors": [type(exc).__name__]}
        return dict(result.to_dict())

    def spool_depth(self) -> int:
        return int(self._reporter.spool_depth()) if self._reporter is not None else 0

    def flush(self) -> dict[str, Any]:
        """Send what the spool holds (at SIGTERM): what SQS does not accept stays spooled for the next start."""
        if self._reporter is None:
            return {"spool_depth": 0}
        with self._lock:
            result = self._reporter.flush()
        return {"spool_depth": result.pending, "sent": result.sent, "queue_reachable": result.queue_reachable}

    # --- logging findings once (new place or changed verification) ------------------------------------------
    def _log_findings(self, findings: Sequence[Finding], source: str) -> None:
        for f in findings:
            status = f.verification.status if f.verification else "unverified"
            place = (f.fingerprint, f.location.identity())
            if self._logged.get(place) == status:
                continue
            self._logged[place] = status
            log.warning(
                "finding",
                extra={
                    "fields": {
                        "source": source,
                        "rule": f.rule,
                        "key_id": f.key_id,
                        "fingerprint": f.fingerprint,
                        "account_id": f.account_id,
                        "has_secret": f.has_secret,
                        "secret_redacted": f.secret_redacted,
                        "severity": f.severity,
                        "verification": status,
                        "location": f.location.to_dict(),
                    }
                },
            )

    # --- runs -----------------------------------------------------------------------------------------------
    def scan(
        self,
        options: ScanOptions | None = None,
        *,
        should_stop: StopCheck,
        progress: Callable[[ScanStats], None] | None = None,
    ) -> ScanResult:
        """One scan (default: of :attr:`options`); the file state, when open, keeps unchanged files from being read
        again and learns what was read."""
        # the engine and its sources are imported here, not at start-up: meanwhile the detector's native gate
        # compiles on the other core (keysweep.gate)
        from keysweep.scan import run_scan

        result = run_scan(
            options or self.options, self.detector, file_cache=self.state, should_stop=should_stop, progress=progress
        )
        if self.state is not None:
            self.state.flush()
        return result

    def verify(self, findings: Sequence[Finding], *, should_stop: StopCheck | None = None) -> list[Finding]:
        """Verify the findings as the configuration's ``verify`` section says (the same findings, in order)."""
        return self.verifier.verify_all(findings, should_stop=should_stop)

    def _run(
        self, options: ScanOptions, should_stop: StopCheck, pace: Callable[[], None] | None = None
    ) -> tuple[list[Finding], ScanStats, bool]:
        progress = (lambda _stats: pace()) if pace is not None else None  # the walk's stop check is per directory
        result = self.scan(options, should_stop=should_stop, progress=progress)
        return result.findings, result.stats, result.stats.interrupted

    def sweep(
        self, *, should_stop: StopCheck, full_reread_every: int, pace: Callable[[], None] | None = None
    ) -> SweepResult:
        state = self.file_state
        plan = state.begin_sweep(full_reread_every)
        before = dataclasses.replace(state.counters)
        started = time.time()
        log.info(
            "sweep.started",
            extra={"fields": {"number": plan.number, "full_reread": plan.full, "resumed": plan.resumed}},
        )
        findings, stats, interrupted = self._run(self.options, should_stop, pace)
        with self._lock:
            verified = self._verified_without_secrets(findings)
            delivery = self._report(verified, stats, heartbeat=True, started=started)
        pruned = state.finish_sweep(plan, completed=not interrupted)
        c = state.counters
        cache = {k: getattr(c, k) - getattr(before, k) for k in ("hits", "misses", "reverify", "stored")}
        result = SweepResult(
            number=plan.number,
            started=started,
            finished=time.time(),
            interrupted=interrupted,
            full_reread=plan.full,
            resumed=plan.resumed,
            stats=stats.to_dict(),
            cache=cache,
            findings=verified,
            findings_by_status=Counter(f.verification.status if f.verification else "unverified" for f in verified),
            delivery=delivery,
            errors=dict(stats.errors),
            pruned=pruned,
        )
        self._log_findings(verified, "sweep")
        log.info(
            "sweep.finished",
            extra={
                "fields": {
                    **{k: v for k, v in result.summary().items() if k not in ("started_at", "finished_ts")},
                    "errors": result.errors,
                    **self.native_passes(),
                }
            },
        )
        return result

    def scan_paths(self, paths: Sequence[str], *, should_stop: StopCheck) -> SweepResult:
        """Scan files the watcher saw change, then verify and report what they hold."""
        started = time.time()
        state = self.file_state
        before = dataclasses.replace(state.counters)
        # the paths come from events in directories users write: a symlink there is not followed
        options = dataclasses.replace(build_scan_options(self.config, paths), follow_named=False)
        findings, stats, interrupted = self._run(options, should_stop)
        with self._lock:
            verified = self._verified_without_secrets(findings)
            delivery = self._report(verified, stats, heartbeat=False, started=started)
        self.watch_scans += 1
        c = state.counters
        result = SweepResult(
            number=None,
            started=started,
            finished=time.time(),
            interrupted=interrupted,
            full_reread=False,
            resumed=False,
            stats=stats.to_dict(),
            cache={k: getattr(c, k) - getattr(before, k) for k in ("hits", "misses", "reverify", "stored")},
            findings=verified,
            findings_by_status=Counter(f.verification.status if f.verification else "unverified" for f in verified),
            delivery=delivery,
            errors=dict(stats.errors),
            kind="watch",
        )
        self._log_findings(verified, "watch")
        log.info(
            "watch.scanned",
            extra={
                "fields": {
                    "paths": len(paths),
                    "files_scanned": result.stats.get("files_scanned", 0),
                    "findings": len(verified),
                    "duration_s": round(result.duration, 3),
                    "skipped": result.stats.get("skipped", {}),
                    "errors": result.errors,
                }
            },
        )
        return result

    def native_passes(self) -> dict[str, str]:
        """What ran natively, as the scan's summary and the sweep's log name it: ``detection_gate`` (``hyperscan
        <version>`` or ``none``) and ``inflate`` (``isal <version>`` or ``zlib <version>``). A host without their
        wheels finds the same and spends more CPU."""
        return {"detection_gate": self.detector.gate_engine, "inflate": inflate_engine()}

    def last_sweep_finished(self) -> float | None:
        from keysweep.status import read_status

        status = read_status(self.config.state_dir, quarantine=True) or {}
        last = status.get("last_sweep") or {}
        ts = last.get("finished_ts")
        return float(ts) if isinstance(ts, (int, float)) else None

    def close(self) -> None:
        if self.state is not None:
            self.state.close()
