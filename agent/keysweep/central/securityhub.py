"""Exporting the fleet's live keys and the account audit's items to AWS Security Hub as ASFF findings
(``securityhub:BatchImportFindings``).

One finding per key (by key fingerprint), in the account and region that runs the export; the key's own account,
owner and every host it was found on are in the finding. Keys that stopped being live (deactivated, invalid,
expired) are sent ARCHIVED so a finding imported earlier closes. Every text from hosts goes through
:mod:`keysweep.textsafe` (control and bidi characters shown as escapes) before it is cut to ASFF's limits. Batches hold at most 100 findings; findings
Security Hub refuses come back in ``FailedFindings`` and are reported, not lost silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from keysweep import __version__, aws, timeutil
from keysweep.central.audit import AuditItem, AuditResult
from keysweep.central.fleet_report import FleetKey, FleetReport
from keysweep.errors import KeysweepError
from keysweep.retry import error_code
from keysweep.textsafe import safe_data, shorten

ASFF_SCHEMA_VERSION = "2018-10-08"
MAX_BATCH = 100
MAX_RESOURCES = 32
GENERATOR_ID = "keysweep/long-lived-access-key"
AUDIT_GENERATOR_PREFIX = "keysweep/audit/"  # + the check name
FINDING_TYPES = (
    "Sensitive Data Identifications/Passwords/AWS access key",
    "Software and Configuration Checks/AWS Security Best Practices",
)
_SEVERITY = {"critical": "CRITICAL", "high": "HIGH", "medium": "MEDIUM", "low": "LOW", "info": "INFORMATIONAL"}
_CLOSED = ("invalid", "expired")


class SecurityHubError(KeysweepError):
    """Security Hub could not be reached or refused the whole export."""


@dataclass(frozen=True)
class ExportResult:
    imported: int = 0
    archived: int = 0
    failed: tuple[dict[str, str], ...] = field(default_factory=tuple)  # {"Id", "ErrorCode", "ErrorMessage"}


def _iso(value: str | None, default: str) -> str:
    if not value:
        return default
    return value if value.endswith("Z") else value.replace("+00:00", "Z")


def _cut(text: str, limit: int) -> str:
    """Safe text (host values carry no control or bidi character into Security Hub) of at most ``limit``."""
    return shorten(text, limit)


def _principal(owner_arn: str | None) -> tuple[str | None, str | None]:
    """(principal type, name) from an owner ARN like arn:aws:iam::123:user/path/name."""
    if not owner_arn or ":" not in owner_arn:
        return None, None
    resource = owner_arn.split(":", 5)[-1]
    if resource == "root":
        return "Root", "root"
    if resource.startswith("user/"):
        return "IAMUser", resource.rsplit("/", 1)[-1]
    return None, resource.rsplit("/", 1)[-1]


def to_asff(
    key: FleetKey, *, account_id: str, region: str, partition: str = "aws", now: datetime | None = None
) -> dict[str, Any]:
    """The ASFF finding for one key. ``account_id``/``region``: where Security Hub receives it."""
    stamp = timeutil.iso(now or timeutil.now())
    archived = bool(key.deactivated_at) or key.status in _CLOSED
    hosts = key.hosts
    places = "; ".join(f"{loc.hostname}:{loc.place}" for loc in key.locations)
    principal_type, principal_name = _principal(key.owner_arn)
    access_key: dict[str, Any] = {"AccessKeyId": key.key_id, "Status": "Inactive" if archived else "Active"}
    if key.account_id:
        access_key["AccountId"] = key.account_id
    if principal_type:
        access_key["PrincipalType"] = principal_type
    if principal_name:
        access_key["PrincipalName"] = principal_name
    resources: list[dict[str, Any]] = [
        {
            "Type": "AwsIamAccessKey",
            "Id": f"AWS::IAM::AccessKey:{key.key_id}",
            "Partition": partition,
            "Region": region,
            "Details": {"AwsIamAccessKey": access_key},
        }
    ]
    for loc in key.locations[: MAX_RESOURCES - 1]:
        resources.append(
            {
                "Type": "Other",
                "Id": _cut(f"keysweep-host/{loc.host_id}/{loc.place}", 512),
                "Partition": partition,
                "Region": region,
                "Details": {
                    "Other": {
                        "hostname": _cut(loc.hostname, 1024),
                        "host_kind": loc.host_kind,
                        "place": _cut(loc.place, 1024),
                        "last_seen": loc.last_seen,
                    }
                },
            }
        )
    suggestion = key.suggestions[0] if key.suggestions else {}
    recommendation = suggestion.get("summary") or "Replace the key with a role, then deactivate and delete it."
    finding: dict[str, Any] = {
        "SchemaVersion": ASFF_SCHEMA_VERSION,
        "Id": f"keysweep/{key.fingerprint}",
        "ProductArn": f"arn:{partition}:securityhub:{region}:{account_id}:product/{account_id}/default",
        "GeneratorId": GENERATOR_ID,
        "AwsAccountId": account_id,
        "Types": list(FINDING_TYPES),
        "FirstObservedAt": _iso(key.first_seen, stamp),
        "LastObservedAt": _iso(key.last_seen, stamp),
        "CreatedAt": _iso(key.first_seen, stamp),
        "UpdatedAt": stamp,
        "Severity": {"Label": "INFORMATIONAL" if archived else _SEVERITY.get(key.severity, "HIGH")},
        "Title": _cut(
            f"{'Live' if key.status == 'live' else 'Former'} long-lived AWS access key {key.key_id} "
            f"on {len(hosts)} host(s)",
            256,
        ),
        "Description": _cut(
            f"keysweep found the access key {key.key_id} (account {key.account_id or 'unknown'}, owner "
            f"{key.owner_arn or 'unknown'}, status {key.status}) in {len(key.locations)} place(s): {places}",
            1024,
        ),
        "Remediation": {"Recommendation": {"Text": _cut(str(recommendation), 512)}},
        "ProductFields": {
            "ProviderName": "keysweep",
            "ProviderVersion": __version__,
            "keysweep/status": key.status,
            "keysweep/fingerprint": key.fingerprint,
            "keysweep/hosts": str(len(hosts)),
            "keysweep/key_account": key.account_id or "unknown",
        },
        "CompanyName": "keysweep",
        "ProductName": "keysweep",
        "RecordState": "ARCHIVED" if archived else "ACTIVE",
        "Resources": resources,
    }
    if key.deactivated_at:
        finding["ProductFields"]["keysweep/deactivated_by"] = _cut(str(key.deactivated_by), 1024)
    result: dict[str, Any] = safe_data(finding)  # the fields not cut above (key id, host kind, times)
    return result


def exportable(keys: Iterable[FleetKey]) -> list[FleetKey]:
    """Live keys (ACTIVE, or ARCHIVED once deactivated) and keys now verified invalid or expired (ARCHIVED)."""
    return [k for k in keys if k.status == "live" or k.status in _CLOSED]


def import_findings(client: Any, findings: Sequence[dict[str, Any]]) -> ExportResult:
    """BatchImportFindings in batches of at most 100; refused findings are collected with their error."""
    imported = archived = 0
    failed: list[dict[str, str]] = []
    for start in range(0, len(findings), MAX_BATCH):
        batch = list(findings[start : start + MAX_BATCH])
        try:
            resp = client.batch_import_findings(Findings=batch)
        except ClientError as exc:
            code = error_code(exc)
            failed.extend({"Id": f["Id"], "ErrorCode": code, "ErrorMessage": "batch refused"} for f in batch)
            continue
        except BotoCoreError as exc:
            raise SecurityHubError(f"Security Hub unreachable: {type(exc).__name__}") from None
        refused = {f.get("Id", ""): f for f in resp.get("FailedFindings", [])}
        failed.extend(
            {
                "Id": str(f.get("Id", "")),
                "ErrorCode": str(f.get("ErrorCode", "")),
                "ErrorMessage": _cut(str(f.get("ErrorMessage", "")), 300),
            }
            for f in refused.values()
        )
        for f in batch:
            if f["Id"] not in refused:
                if f.get("RecordState") == "ARCHIVED":
                    archived += 1
                else:
                    imported += 1
    return ExportResult(imported, archived, tuple(failed))


def _hub(region: str | None) -> tuple[Any, str, str]:
    """(Security Hub client, account id, partition) of keysweep's own credentials."""
    try:
        client = aws.make_client("securityhub", region=region)
        identity = aws.make_client("sts", region=region).get_caller_identity()
    except ClientError as exc:
        raise SecurityHubError(f"Security Hub export: {error_code(exc)}") from None
    except BotoCoreError as exc:
        raise SecurityHubError(f"Security Hub export: {type(exc).__name__}") from None
    return client, identity["Account"], identity["Arn"].split(":")[1]


def export_report(report: FleetReport, *, region: str | None = None) -> ExportResult:
    """Send the report's live (and newly closed) keys to Security Hub in keysweep's own account and region."""
    client, account, partition = _hub(region)
    findings = [
        to_asff(k, account_id=account, region=client.meta.region_name, partition=partition, now=report.generated_at)
        for k in exportable(report.keys)
    ]
    return import_findings(client, findings)


def audit_item_to_asff(
    item: AuditItem, *, account_id: str, region: str, partition: str = "aws", now: datetime | None = None
) -> dict[str, Any]:
    """The ASFF finding for one audit item; its id names the audited account, the check and the key or user, so
    the next audit updates the same finding."""
    stamp = timeutil.iso(now or timeutil.now())
    subject = item.key_id or item.user or "account"
    if item.key_id:
        details: dict[str, Any] = {"AccessKeyId": item.key_id, "AccountId": item.account_id, "PrincipalType": "IAMUser"}
        if item.user:
            details["PrincipalName"] = item.user
        resource = {
            "Type": "AwsIamAccessKey",
            "Id": f"AWS::IAM::AccessKey:{item.key_id}",
            "Details": {"AwsIamAccessKey": details},
        }
    else:
        resource = {
            "Type": "AwsIamUser" if item.user and item.user != "<root_account>" else "AwsAccount",
            "Id": item.arn or f"AWS::::Account:{item.account_id}",
        }
    commands = "\n".join(item.commands)
    finding: dict[str, Any] = {
        "SchemaVersion": ASFF_SCHEMA_VERSION,
        "Id": f"keysweep-audit/{item.account_id}/{item.check}/{subject}",
        "ProductArn": f"arn:{partition}:securityhub:{region}:{account_id}:product/{account_id}/default",
        "GeneratorId": AUDIT_GENERATOR_PREFIX + item.check,
        "AwsAccountId": account_id,
        "Types": ["Software and Configuration Checks/AWS Security Best Practices"],
        "CreatedAt": stamp,
        "UpdatedAt": stamp,
        "Severity": {"Label": _SEVERITY.get(item.severity, "MEDIUM")},
        "Title": _cut(f"keysweep audit {item.check}: {subject} in account {item.account_id}", 256),
        "Description": _cut(item.summary, 1024),
        "Remediation": {"Recommendation": {"Text": _cut(item.action, 512)}},
        "ProductFields": {
            "ProviderName": "keysweep",
            "ProviderVersion": __version__,
            "keysweep/check": item.check,
            "keysweep/account": item.account_id,
            "keysweep/commands": _cut(commands, 2048) if commands else "none",
        },
        "CompanyName": "keysweep",
        "ProductName": "keysweep",
        "RecordState": "ACTIVE",
        "Resources": [{**resource, "Partition": partition, "Region": region}],
    }
    result: dict[str, Any] = safe_data(finding)
    return result


def _active_audit_findings(client: Any, accounts: set[str]) -> list[dict[str, Any]]:
    """Audit findings imported earlier, still ACTIVE, of the accounts audited now (the filter is applied here
    too: an endpoint may ignore it)."""
    filters = {
        "GeneratorId": [{"Value": AUDIT_GENERATOR_PREFIX, "Comparison": "PREFIX"}],
        "RecordState": [{"Value": "ACTIVE", "Comparison": "EQUALS"}],
    }
    found: list[dict[str, Any]] = []
    for page in client.get_paginator("get_findings").paginate(Filters=filters):
        found.extend(
            f
            for f in page.get("Findings", [])
            if str(f.get("GeneratorId", "")).startswith(AUDIT_GENERATOR_PREFIX)
            and f.get("RecordState", "ACTIVE") == "ACTIVE"
            and f.get("ProductFields", {}).get("keysweep/account") in accounts
        )
    return found


def export_audit(result: AuditResult, *, region: str | None = None, now: datetime | None = None) -> ExportResult:
    """Send every audit item to Security Hub; an item imported by an earlier audit of the same account that this
    audit no longer finds (the key was deleted, the user removed) is sent ARCHIVED, so its finding closes."""
    client, account, partition = _hub(region)
    stamp_at = now or timeutil.now()
    current = [
        audit_item_to_asff(i, account_id=account, region=client.meta.region_name, partition=partition, now=stamp_at)
        for i in result.items
    ]
    audited = {a.account_id for a in result.accounts if not a.error}
    ids = {f["Id"] for f in current}
    try:
        earlier = _active_audit_findings(client, audited)
    except ClientError as exc:
        raise SecurityHubError(f"Security Hub export: {error_code(exc)}") from None
    except BotoCoreError as exc:
        raise SecurityHubError(f"Security Hub export: {type(exc).__name__}") from None
    stamp = timeutil.iso(stamp_at)
    stale = [dict(f, RecordState="ARCHIVED", UpdatedAt=stamp) for f in earlier if f["Id"] not in ids]
    return import_findings(client, current + stale)
