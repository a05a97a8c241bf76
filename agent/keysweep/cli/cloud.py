"""``keysweep cloud``: keys held in the AWS control plane, read without an agent.

Reads Lambda, ECS, EC2 user data, launch templates and configurations, SSM parameters, CloudFormation, CodeBuild
and Batch in the caller's account, the named accounts or the whole organisation (``--role-name`` assumed in
each), in the given or every enabled region; findings go through the scan's detector, verification, formats
and SQS reporting. Exit 0: nothing found, 1: findings, 2: usage or configuration error, 130: interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any, TextIO

from keysweep.cli.common import (
    StopFlag,
    add_cloud_accounts,
    add_pipeline_options,
    counts,
    print_delivery,
    verify_findings,
)
from keysweep.cloud import cloud_context
from keysweep.errors import ConfigError, ExitCode
from keysweep.models import Finding

if TYPE_CHECKING:
    from keysweep.sweep import Pipeline


def register(sub: Any) -> None:
    p = sub.add_parser(
        "cloud",
        help="find AWS keys held in the control plane (Lambda, ECS, EC2 user data, SSM, CloudFormation, …)",
        description="Read, read-only, Lambda environments and packages, ECS task definitions, EC2 user data, launch "
        "templates and configurations, SSM String parameters, CloudFormation stacks, CodeBuild projects and Batch job "
        "definitions for AWS access keys. Exit status: 0 nothing found, 1 findings, 2 usage or configuration error.",
    )
    add_cloud_accounts(p)
    add_pipeline_options(p, queue_help="also send the findings to this SQS queue (as a host would)")
    p.set_defaults(func=_cloud)


def _cloud(args: argparse.Namespace) -> int:
    from keysweep.cloud.session import account_regions, base_session, resolve_accounts
    from keysweep.cloud.sweep import CloudStats, sweep_targets
    from keysweep.config import AgentConfig
    from keysweep.report.formats import render
    from keysweep.stage_config import VerifyConfig
    from keysweep.sweep import Pipeline

    if args.role_name and not (args.account or args.organization):
        raise ConfigError("--role-name: only with --account or --organization")
    config = AgentConfig(verify=VerifyConfig(enabled=args.verify))
    if args.state_dir:
        config = dataclasses.replace(config, state_dir=args.state_dir)
    pipeline = Pipeline(config, use_state_dir=bool(args.state_dir), incremental=False, mode="scan")
    fmt = args.format or ("table" if sys.stdout.isatty() else "json")

    started = time.monotonic()
    stats = CloudStats()
    accounts, skips = resolve_accounts(
        base_session(), accounts=args.account, organization=args.organization, role_name=args.role_name
    )
    targets, more = account_regions(accounts, args.region)
    for s in skips + more:
        stats.skip(s)
    stopping = StopFlag()
    with stopping.installed():
        per_target = sweep_targets(targets, pipeline.detector, should_stop=stopping)
    for _, result in per_target:
        stats.merge(result.stats)
    stats.interrupted = stopping()
    stats.accounts = len({t.account for t in targets})
    stats.regions = len(targets)
    stats.duration_seconds = time.monotonic() - started
    findings = [f for _, result in per_target for f in result.findings]

    if args.verify and findings:
        findings = verify_findings(pipeline, findings)

    render(findings, fmt, sys.stdout, summary=stats)
    sys.stdout.flush()
    if args.queue_url:
        _send_to_queue(args.queue_url, findings, per_target, pipeline)
    _print_summary(sys.stderr, findings, stats)
    if stats.interrupted:
        return int(ExitCode.INTERRUPTED)
    return int(ExitCode.FINDINGS if findings else ExitCode.CLEAN)


def _send_to_queue(
    queue_url: str, findings: list[Finding], per_target: list[tuple[Any, Any]], pipeline: Pipeline
) -> None:
    """--queue-url: one sender per account and region (its own host context and heartbeat), one spool."""
    from keysweep.report.sqs import Reporter
    from keysweep.stage_config import ReportConfig

    config = ReportConfig(queue_url=queue_url)
    problems = config.problems()
    if problems:
        raise ConfigError("--queue-url: " + "; ".join(problems))
    by_place: dict[tuple[str | None, str | None], list[Finding]] = defaultdict(list)
    for f in findings:  # verified findings, regrouped by where they were found
        by_place[(f.location.account, f.location.region)].append(f)
    spool_home = pipeline.spool_home
    sent = pending = 0
    errors: list[str] = []
    for target, result in per_target:
        context = cloud_context(target.account, target.region)
        reporter = Reporter(config, spool_home, context, fingerprinter=pipeline.fingerprinter, mode="scan")
        delivery = reporter.report(by_place.get((target.account, target.region), []), result.stats)
        sent += delivery.sent
        pending = delivery.pending
        errors += delivery.errors
    print_delivery(sent, pending, errors, spool_home)


def _print_summary(stream: TextIO, findings: list[Finding], stats: Any) -> None:
    paired = sum(1 for f in findings if f.has_secret)
    read = counts(stats.items_scanned) if stats.items_scanned else "nothing"
    print(
        f"keysweep: read {stats.accounts} accounts, {stats.regions} account-regions: {read}; "
        f"{len(findings)} findings ({paired} with secret)" + (" — interrupted" if stats.interrupted else ""),
        file=stream,
    )
    for s in stats.skips:
        print(f"keysweep: skipped: {s.service} in {s.account} {s.region}: {s.reason}", file=stream)
