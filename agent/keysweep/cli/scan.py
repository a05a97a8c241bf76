"""``keysweep scan [PATH ...]``: find AWS keys in files, archives, process environments and AWS files.

With paths, only those files and directories are scanned (source ``files``); with none, the whole host (the
configured roots, default ``/``, every process environment, every user's AWS files). Exit 0: nothing found,
1: findings, 2: usage or configuration error, 3: runtime error (with --strict: an incomplete scan), 130:
interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from keysweep.errors import ConfigError, ExitCode
from keysweep.models import Finding
from keysweep.scan import SOURCES, ScanOptions, ScanStats

FORMATS = ("table", "json", "jsonl", "sarif")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "scan",
        help="scan this host (or the given paths) for AWS access keys",
        description="Scan files, archives, process environments and every user's AWS files for AWS access keys.\n"
        "With PATHs only those are scanned (source 'files' unless --source says otherwise); without, the whole\n"
        "host.",
        epilog="exit status:\n"
        "  0    nothing found\n"
        "  1    findings (after the allowlist)\n"
        "  2    usage or configuration error (bad option, missing path, invalid allowlist, rules or region)\n"
        "  3    runtime error; with --strict, also: nothing found, but a file could not be read or was read\n"
        "       only in part (the summary names them)\n"
        "  130  interrupted (Ctrl-C, SIGTERM): what was found so far is still reported",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or directories to scan (default: the whole host)")
    p.add_argument(
        "--source",
        action="append",
        choices=SOURCES,
        dest="sources",
        help="what to scan (repeatable; default: all three without PATHs, 'files' with PATHs; with PATHs, "
        "'aws-files' reads only the AWS files under them)",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="skip paths matching GLOB (repeatable; '*.log' matches names, '/var/cache/**' paths)",
    )
    p.add_argument("--max-file-size", metavar="SIZE", help="skip larger files (e.g. 256MiB; default 256MiB)")
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes for the files walk (0: one per CPU, the default; 1: none)",
    )
    p.add_argument("--allowlist", metavar="FILE", help="YAML allowlist of accepted paths, key ids, fingerprints")
    p.add_argument("--format", choices=FORMATS, help="output format (default: table on a terminal, json otherwise)")
    p.add_argument("--output", metavar="FILE", help="write the report to FILE (mode 0600) instead of stdout")
    p.add_argument(
        "--include-examples",
        action="store_true",
        help="also report documentation example keys and vendored SDK example data",
    )
    p.add_argument("--same-filesystem", action="store_true", help="do not cross into other mounted filesystems")
    p.add_argument("--skip-network-fs", action="store_true", help="do not enter NFS, CIFS, sshfs, 9p, … mounts")
    p.add_argument(
        "--follow-symlinks",
        action="store_true",
        help="follow symlinks (loops are detected); by default they are never followed",
    )
    p.add_argument(
        "--archive-depth",
        type=int,
        metavar="N",
        help="open archives nested up to N levels (default 3; 0 scans archives as raw bytes)",
    )
    p.add_argument(
        "--host-prefix",
        metavar="DIR",
        help="the host's filesystem is mounted at DIR (e.g. /host in a container); paths are reported without it",
    )
    p.add_argument(
        "--state-dir", metavar="DIR", help="state directory (fingerprint key, verification cache, report spool)"
    )
    p.add_argument("--verify", action="store_true", help="prove which keys are live with sts:GetCallerIdentity")
    p.add_argument(
        "--verify-mode",
        choices=("identify", "sign"),
        help="with --verify (implied): sign = GetCallerIdentity with each found key (the config's verify.mode, "
        "default sign); identify = never sign with a found key, only learn its account (docs/verification.md)",
    )
    p.add_argument("--queue-url", metavar="URL", help="also send the findings to this SQS queue")
    p.add_argument("--config", metavar="FILE", help="agent configuration file to take scan settings from")
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 3 instead of 0 when nothing was found but a file could not be read or was read only in part",
    )
    p.set_defaults(func=_scan)


def _scan(args: argparse.Namespace) -> int:
    from keysweep.detect import Detector
    from keysweep.fingerprint import Fingerprinter
    from keysweep.ruleset import load_ruleset
    from keysweep.scan import run_scan

    cfg = _load_config(args.config)
    args.verify = args.verify or args.verify_mode is not None
    options = build_options(args, cfg)
    report_cfg = _report_config(args.queue_url, cfg) if args.queue_url else None  # before anything is created
    state_dir = Path(args.state_dir) if args.state_dir else (Path(cfg.state_dir) if cfg is not None else None)
    if state_dir is not None:  # checked before anything is written there (refused: exit 2)
        from keysweep import statedir

        statedir.prepare(state_dir)
    ruleset = load_ruleset([Path(d) for d in cfg.scan.rules_dirs] if cfg is not None else ())
    # a plain scan needs no state directory: without one (and without a spool to feed) fingerprints use a key
    # made for this run, and the output says so
    fingerprinter = Fingerprinter.from_config(
        cfg.fingerprint_key() if cfg is not None else None, state_dir, per_run=state_dir is None and not args.queue_url
    )
    detector = Detector(ruleset, fingerprinter, include_examples=args.include_examples)
    fmt = args.format or ("table" if args.output is None and sys.stdout.isatty() else "json")

    stopping = _StopFlag()
    progress = _Progress(sys.stderr) if sys.stderr.isatty() else None
    state = None
    if args.state_dir:  # the agent's incremental state: unchanged files are not read again
        from keysweep.sweep import open_state

        state = open_state(Path(args.state_dir), detector, options, reread_secrets=args.verify)
    with stopping.installed():
        result = run_scan(options, detector, should_stop=stopping, progress=progress, file_cache=state)
    if state is not None:
        state.close()
    if progress is not None:
        progress.clear()
    findings = result.findings

    if args.verify:
        findings = _verify(findings, cfg, state_dir, fingerprinter, args.verify_mode)

    _write_report(findings, fmt, args.output, {**result.stats.to_dict(), "fingerprint_key": fingerprinter.source})

    if report_cfg is not None:
        _send_to_queue(report_cfg, findings, result.stats, cfg, state_dir, fingerprinter)

    _print_summary(sys.stderr, findings, result.stats)
    if fingerprinter.source == "per-run":
        print("keysweep: fingerprint_key: per-run (no state directory; fingerprints match only within this report)",
              file=sys.stderr)
    if result.stats.interrupted:
        return int(ExitCode.INTERRUPTED)
    if findings:
        return int(ExitCode.FINDINGS)
    if args.strict and scan_is_incomplete(result.stats):
        print("keysweep: --strict: the scan is incomplete (above): exit 3", file=sys.stderr)
        return int(ExitCode.RUNTIME)
    return int(ExitCode.CLEAN)


def _load_config(path: str | None) -> Any:
    if path is None:
        return None
    from keysweep.config import load_config

    return load_config(path)


def build_options(args: argparse.Namespace, cfg: Any = None) -> ScanOptions:
    """Scan options: the configuration's scan section (when --config is given), then the flags."""
    from keysweep.allowlist import Allowlist
    from keysweep.config import parse_size

    paths = tuple(args.paths)
    if cfg is not None:
        from keysweep.sweep import build_scan_options

        base = build_scan_options(cfg, paths)
        allowlist_file = args.allowlist or cfg.scan.allowlist
    else:
        base = ScanOptions(paths=paths, sources=("files",) if paths else SOURCES, workers=0)
        allowlist_file = args.allowlist
    changes: dict[str, Any] = {}
    if args.sources:
        changes["sources"] = tuple(dict.fromkeys(args.sources))
    if args.exclude:
        changes["excludes"] = (*base.excludes, *args.exclude)
    if args.state_dir:  # never report the scan's own state (the agent's sweeps exclude it the same way)
        from keysweep.sweep import state_excludes

        own = state_excludes(args.state_dir, paths or base.roots, args.host_prefix or base.path_prefix)
        changes["excludes"] = (*changes.get("excludes", base.excludes), *own)
    if args.max_file_size is not None:
        try:
            changes["max_file_size"] = parse_size(args.max_file_size)
        except ValueError as exc:
            raise ConfigError(f"--max-file-size: {args.max_file_size!r}: {exc}") from None
    if args.workers is not None:
        changes["workers"] = args.workers
    if args.archive_depth is not None:
        changes["archive_max_depth"] = args.archive_depth
    for flag in ("same_filesystem", "skip_network_fs", "follow_symlinks"):
        if getattr(args, flag):
            changes[flag] = True
    if args.host_prefix:
        if not os.path.isdir(args.host_prefix):
            raise ConfigError(f"--host-prefix: {args.host_prefix} is not a directory")
        changes["path_prefix"] = args.host_prefix
    if allowlist_file:
        changes["allowlist"] = Allowlist.load(allowlist_file)
    for p in paths:
        if not os.path.lexists(p):
            raise ConfigError(f"{p}: no such file or directory")
    return dataclasses.replace(base, **changes)


# --- the hooks of the later pipeline stages -------------------------------------------------------------------


def _verify(
    findings: list[Finding], cfg: Any, state_dir: Path | None, fingerprinter: Any, mode: str | None
) -> list[Finding]:
    """--verify: the single call site of verification (keysweep.verify)."""
    from keysweep.verify import Verifier, VerifyConfig

    config = cfg.verify if cfg is not None and cfg.verify is not None else VerifyConfig()
    config = dataclasses.replace(config, enabled=True)  # --verify turns verification on for this scan
    if mode is not None:
        config = dataclasses.replace(config, mode=mode)
    verifier = Verifier(config, state_dir=state_dir, fingerprinter=fingerprinter)
    stopping = _StopFlag()  # Ctrl-C: keys not yet checked are reported as unknown (interrupted)
    with stopping.installed():
        verified = verifier.verify_all(findings, should_stop=stopping)
    counts = Counter(f.verification.status for f in verified if f.verification is not None)
    if counts:
        print(f"keysweep: verification: {_counts(counts)} ({verifier.calls} STS calls)", file=sys.stderr)
    return verified


def _report_config(queue_url: str, cfg: Any) -> Any:
    """--queue-url: the configuration's report section with this queue, checked (region included)."""
    from keysweep.aws import resolve_region
    from keysweep.report.sqs import ReportConfig

    report_cfg = cfg.report if cfg is not None and cfg.report is not None else ReportConfig()
    report_cfg = dataclasses.replace(report_cfg, queue_url=queue_url)
    problems = report_cfg.problems()
    if problems:
        raise ConfigError("--queue-url: " + "; ".join(problems))
    region = resolve_region(report_cfg.queue_region(), queue_url, what="--queue-url")
    return dataclasses.replace(report_cfg, region=region)


def _send_to_queue(
    report_cfg: Any, findings: list[Finding], stats: ScanStats, cfg: Any, state_dir: Path | None, fingerprinter: Any
) -> None:
    """--queue-url: the single call site of reporting to SQS (keysweep.report.sqs)."""
    from keysweep.context import ContextConfig, detect_context
    from keysweep.fingerprint import default_state_dir
    from keysweep.report.sqs import Reporter

    context = detect_context(cfg.context if cfg is not None and cfg.context is not None else ContextConfig())
    spool_home = state_dir or default_state_dir()
    result = Reporter(report_cfg, spool_home, context, fingerprinter=fingerprinter, mode="scan").report(findings, stats)
    if result.pending:
        print(
            f"keysweep: queue: {result.sent} messages sent; {result.pending} wait in {spool_home / 'spool'} "
            f"(a later run with --state-dir {spool_home} delivers them)",
            file=sys.stderr,
        )
    else:
        print(f"keysweep: queue: {result.sent} messages sent", file=sys.stderr)
    for error in result.errors:
        print(f"keysweep: queue: {error}", file=sys.stderr)


# --- output -------------------------------------------------------------------------------------------------


def _write_report(findings: list[Finding], fmt: str, output: str | None, summary: dict[str, Any]) -> None:
    import io

    from keysweep.atomicfile import atomic_output
    from keysweep.report.formats import render

    if output is None:
        render(findings, fmt, sys.stdout, summary=summary)
        sys.stdout.flush()
        return
    # a new 0600 file beside FILE renamed over it: a symlink at FILE is replaced, never followed, and an existing
    # file's wider mode is not kept
    try:
        with atomic_output(Path(output), parents=False) as raw:
            fh = io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace")
            render(findings, fmt, fh, summary=summary)
            fh.flush()
            fh.detach()  # the raw file stays open: atomic_output fsyncs and renames it
    except OSError as exc:
        raise ConfigError(f"--output {output}: cannot write ({exc.strerror})") from None


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _counts(c: Any) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


SUMMARY_PLACES = 5  # unread places named on stderr; the JSON/SARIF summary lists more


def _print_summary(stream: TextIO, findings: Sequence[Finding], stats: ScanStats) -> None:
    """The scan in a few lines on stderr; a count that is zero is left out."""
    from keysweep.report.formats import incomplete
    from keysweep.textsafe import safe_text

    parts = []
    if stats.files_scanned or not (stats.processes_scanned or stats.aws_files_scanned):
        parts.append(f"{stats.files_scanned} files ({_human(stats.bytes_scanned)})")
    if stats.files_cached:
        parts.append(f"{stats.files_cached} unchanged files from the state")
    if stats.archives_scanned:
        parts.append(f"{stats.archives_scanned} archives ({stats.archive_members_scanned} members)")
    if stats.processes_scanned:
        parts.append(f"{stats.processes_scanned} process environments")
    if stats.aws_files_scanned:
        parts.append(f"{stats.aws_files_scanned} AWS files")
    paired = sum(1 for f in findings if f.has_secret)
    found = f"{len(findings)} findings" + (f" ({paired} with secret)" if paired else "") if findings else "no findings"
    print(f"keysweep: scanned {', '.join(parts)} in {stats.duration_seconds:.1f} s; {found}"
          + (" — interrupted" if stats.interrupted else ""), file=stream)
    skipped = +stats.skipped  # unary plus drops zero counts
    if skipped:
        print(f"keysweep: skipped: {_counts(skipped)}", file=stream)
    if +stats.errors:
        print(f"keysweep: errors: {_counts(+stats.errors)}", file=stream)
    unread = incomplete(stats.to_dict())
    if unread["count"]:
        places = unread["places"]
        parts = [f"{safe_text(p['path'])} ({p['reason']})" for p in places[:SUMMARY_PLACES]]
        if len(places) > SUMMARY_PLACES:
            parts.append(f"{len(places) - SUMMARY_PLACES} more listed in the JSON/SARIF summary")
        if unread["not_listed"]:
            parts.append(f"{unread['not_listed']} more not named (counted above)")
        print(f"keysweep: not read or partly read ({unread['count']}): {'; '.join(parts)}", file=stream)
    if stats.suppressed:
        print(f"keysweep: allowlisted: {stats.suppressed} findings", file=stream)
    if +stats.profiles:
        print(f"keysweep: AWS profiles: {_counts(+stats.profiles)}", file=stream)


def scan_is_incomplete(stats: ScanStats) -> bool:
    """An error, or a file a limit left unread (what --strict turns into exit 3)."""
    from keysweep.report.formats import incomplete

    return bool(incomplete(stats.to_dict())["count"])


class _Progress:
    """One line on a terminal's stderr, rewritten in place: files, bytes, rate, findings so far."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.started = time.monotonic()

    def __call__(self, stats: ScanStats) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = stats.bytes_scanned / elapsed / 1e6
        found = sum(stats.findings_by_source.values())
        line = f"scanning: {stats.files_scanned} files, {_human(stats.bytes_scanned)}, {rate:.0f} MB/s"
        line += f", {found} findings so far" if found else ""
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()

    def clear(self) -> None:
        self.stream.write("\r\x1b[K")
        self.stream.flush()


class _StopFlag:
    """Set by Ctrl-C (SIGINT) or SIGTERM: the scan ends early and still reports what it found."""

    def __init__(self) -> None:
        self.stopped = False

    def __call__(self) -> bool:
        return self.stopped

    def _handle(self, signum: int, frame: object) -> None:
        if self.stopped:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.stopped = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        saved = [(sig, signal.signal(sig, self._handle)) for sig in (signal.SIGINT, signal.SIGTERM)]
        try:
            yield
        finally:
            for sig, handler in saved:
                signal.signal(sig, handler)
