"""``keysweep scan [PATH ...]``: find AWS keys in files, archives, process environments and AWS files.

With paths, only those files and directories are scanned (source ``files``); with none, the whole host (the
configured roots, default ``/``, every process environment, every user's AWS files). Exit 0: nothing found,
1: findings, 2: usage or configuration error, 3: runtime error (with --strict: an incomplete scan), 130:
interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from keysweep.cli.common import FORMATS, StopFlag, add_pipeline_options, counts, print_delivery, verify_findings
from keysweep.errors import ConfigError, ExitCode
from keysweep.models import Finding
from keysweep.scan_types import SOURCES, ScanOptions, ScanStats

if TYPE_CHECKING:  # the configuration pulls in the AWS SDK: imported when a scan runs, not to parse its flags
    from keysweep.config import AgentConfig
    from keysweep.stage_config import ReportConfig
    from keysweep.sweep import Pipeline

__all__ = ["FORMATS", "build_options", "register", "scan_is_incomplete"]


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
    add_pipeline_options(p)
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
        "--verify-mode",
        choices=("identify", "sign"),
        help="with --verify (implied): sign = GetCallerIdentity with each found key (the config's verify.mode, "
        "default sign); identify = never sign with a found key, only learn its account (docs/verification.md)",
    )
    p.add_argument("--config", metavar="FILE", help="agent configuration file to take scan settings from")
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 3 instead of 0 when nothing was found but a file could not be read or was read only in part",
    )
    p.set_defaults(func=_scan)


def _scan(args: argparse.Namespace) -> int:
    from keysweep.sweep import Pipeline

    cfg = _load_config(args.config)
    args.verify = args.verify or args.verify_mode is not None
    options = build_options(args, cfg)
    config = _run_config(args, cfg)  # checked (queue URL and region included) before anything is created
    # a plain scan needs no state directory: without one (and without a spool to feed) fingerprints use a key
    # made for this run, and the output says so
    use_state_dir = bool(args.state_dir) or cfg is not None
    pipeline = Pipeline(
        config,
        options=options,
        use_state_dir=use_state_dir,
        incremental=bool(args.state_dir),  # the agent's file state: unchanged files are not read again
        reread_secrets=args.verify,
        per_run_key=not use_state_dir and not args.queue_url,
        include_examples=args.include_examples,
        mode="scan",
    )
    try:
        return _run(args, pipeline)
    finally:
        pipeline.close()


def _run(args: argparse.Namespace, pipeline: Pipeline) -> int:
    fmt = args.format or ("table" if args.output is None and sys.stdout.isatty() else "json")
    stopping = StopFlag()
    progress = _Progress(sys.stderr) if sys.stderr.isatty() else None
    with stopping.installed():
        result = pipeline.scan(should_stop=stopping, progress=progress)
    if progress is not None:
        progress.clear()
    findings = result.findings
    if args.verify:
        findings = verify_findings(pipeline, findings)
    source = pipeline.fingerprinter.source
    summary = {**result.stats.to_dict(), "fingerprint_key": source, **pipeline.native_passes()}
    _write_report(findings, fmt, args.output, summary)
    if args.queue_url:
        delivery = pipeline.deliver(findings, result.stats)
        print_delivery(delivery.sent, delivery.pending, delivery.errors, pipeline.spool_home)

    _print_summary(sys.stderr, findings, result.stats)
    if source == "per-run":
        print(
            "keysweep: fingerprint_key: per-run (no state directory; fingerprints match only within this report)",
            file=sys.stderr,
        )
    if result.stats.interrupted:
        return int(ExitCode.INTERRUPTED)
    if findings:
        return int(ExitCode.FINDINGS)
    if args.strict and scan_is_incomplete(result.stats):
        print("keysweep: --strict: the scan is incomplete (above): exit 3", file=sys.stderr)
        return int(ExitCode.RUNTIME)
    return int(ExitCode.CLEAN)


def _load_config(path: str | None) -> AgentConfig | None:
    from keysweep.config import load_config

    return load_config(path) if path is not None else None


def _run_config(args: argparse.Namespace, cfg: AgentConfig | None) -> AgentConfig:
    """The configuration of this run: the file's (or the defaults), with the flags that change a stage."""
    from keysweep.config import AgentConfig

    config = cfg if cfg is not None else AgentConfig()
    changes: dict[str, Any] = {}
    if args.state_dir:
        changes["state_dir"] = args.state_dir
    if args.verify:  # --verify turns verification on for this scan; --verify-mode overrides verify.mode
        changes["verify"] = dataclasses.replace(
            config.verify, enabled=True, **({"mode": args.verify_mode} if args.verify_mode else {})
        )
    if args.queue_url:
        changes["report"] = _report_config(args.queue_url, config.report)
    return dataclasses.replace(config, **changes)


def build_options(args: argparse.Namespace, cfg: AgentConfig | None = None) -> ScanOptions:
    """Scan options: the configuration's scan section (when --config is given, else the command's defaults), then
    the flags, through the one mapping of a scan section to scan options (:func:`keysweep.sweep.scan_options`)."""
    from keysweep.config import ScanConfig, parse_size
    from keysweep.sweep import scan_options

    paths = tuple(args.paths)
    for p in paths:
        if not os.path.lexists(p):
            raise ConfigError(f"{p}: no such file or directory")
    # without --config: one worker process per CPU, network file systems entered (the agent's file says otherwise)
    scan = cfg.scan if cfg is not None else ScanConfig(workers=0, skip_network_fs=False)
    changes: dict[str, Any] = {}
    if args.exclude:
        changes["excludes"] = (*scan.excludes, *args.exclude)
    if args.max_file_size is not None:
        try:
            changes["max_file_size"] = parse_size(args.max_file_size)
        except ValueError as exc:
            raise ConfigError(f"--max-file-size: {args.max_file_size!r}: {exc}") from None
    if args.workers is not None:
        changes["workers"] = args.workers
    if args.archive_depth is not None:
        changes["archive_max_depth"] = args.archive_depth
    for flag in ("same_filesystem", "skip_network_fs"):
        if getattr(args, flag):
            changes[flag] = True
    if args.host_prefix:
        if not os.path.isdir(args.host_prefix):
            raise ConfigError(f"--host-prefix: {args.host_prefix} is not a directory")
        changes["host_prefix"] = args.host_prefix
    if args.allowlist:
        changes["allowlist"] = args.allowlist
    # never report the scan's own state (the agent's sweeps exclude it the same way)
    state_dirs = (*((cfg.state_dir,) if cfg is not None else ()), *((args.state_dir,) if args.state_dir else ()))
    return scan_options(
        dataclasses.replace(scan, **changes),
        paths,
        state_dirs=state_dirs,
        sources=tuple(dict.fromkeys(args.sources)) if args.sources else None,
        follow_symlinks=args.follow_symlinks,
    )


def _report_config(queue_url: str, report: ReportConfig) -> ReportConfig:
    """--queue-url: the configuration's report section with this queue, checked (region included)."""
    from keysweep.aws import resolve_region

    report_cfg = dataclasses.replace(report, queue_url=queue_url)
    problems = report_cfg.problems()
    if problems:
        raise ConfigError("--queue-url: " + "; ".join(problems))
    region = resolve_region(report_cfg.queue_region(), queue_url, what="--queue-url")
    return dataclasses.replace(report_cfg, region=region)


# --- output -------------------------------------------------------------------------------------------------


def _write_report(findings: list[Finding], fmt: str, output: str | None, summary: dict[str, Any]) -> None:
    import io

    from keysweep.atomicfile import report_output
    from keysweep.report.formats import render

    if output is None:
        render(findings, fmt, sys.stdout, summary=summary)
        sys.stdout.flush()
        return
    # a new 0600 file beside FILE renamed over it: a symlink at FILE is replaced, never followed, and an existing
    # file's wider mode is not kept (a device or pipe is written as it is)
    try:
        with report_output(Path(output), parents=False) as raw:
            fh = io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace")
            render(findings, fmt, fh, summary=summary)
            fh.flush()
            fh.detach()  # the raw file stays open: report_output fsyncs and renames it
    except OSError as exc:
        raise ConfigError(f"--output {output}: cannot write ({exc.strerror})") from None


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


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
    print(
        f"keysweep: scanned {', '.join(parts)} in {stats.duration_seconds:.1f} s; {found}"
        + (" — interrupted" if stats.interrupted else ""),
        file=stream,
    )
    skipped = +stats.skipped  # unary plus drops zero counts
    if skipped:
        print(f"keysweep: skipped: {counts(skipped)}", file=stream)
    if +stats.errors:
        print(f"keysweep: errors: {counts(+stats.errors)}", file=stream)
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
        print(f"keysweep: AWS profiles: {counts(+stats.profiles)}", file=stream)


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
