"""Writing an audit result as a terminal table, JSON or CSV.

Names in an audit come from IAM and, with a fleet store, from hosts: every value goes through
:mod:`keysweep.textsafe` (no control or bidi character in any format; standard JSON; formula-safe CSV).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from typing import Any, TextIO

from keysweep import scp as scp_policy
from keysweep.central.audit import CHECKS, AuditResult
from keysweep.central.organization import scp_targets
from keysweep.textsafe import csv_cell, dump_json, safe_text

FORMATS = ("table", "json", "csv")
CSV_FIELDS = ("account_id", "check", "severity", "user", "key_id", "arn", "summary", "action", "commands")


def _ready_accounts(result: AuditResult) -> list[str]:
    """Audited accounts with no key left at all (no user key of any status, no root key)."""
    return [a.account_id for a in result.accounts if not a.error and not a.keys and not a.root_keys_present]


def scp_section(result: AuditResult) -> dict[str, Any]:
    """The deny-key-creation SCP, with the audited accounts that are ready for it and where to attach it: one
    command per ready account, or per OU whose every account is ready; never the management account."""
    audited = [a for a in result.accounts if not a.error]
    ready = _ready_accounts(result)
    targets = scp_targets(result.organization, set(ready))
    rec = scp_policy.scp_recommendation([t.target_id for t in targets], result.exempt_roles)
    rec["ready_accounts"] = ready
    rec["not_ready_accounts"] = [a.account_id for a in audited if a.account_id not in ready]
    rec["targets"] = [t.to_dict() for t in targets]
    rec["exempt_roles"] = list(result.exempt_roles)
    if result.organization is not None:
        rec["management_account"] = result.organization.management_account
    return rec


def root_scp_section(result: AuditResult) -> dict[str, Any]:
    """The deny-root-user SCP, offered apart, for the same targets."""
    targets = scp_targets(result.organization, set(_ready_accounts(result)))
    return scp_policy.root_scp_recommendation([t.target_id for t in targets])


def audit_to_dict(result: AuditResult, *, include_scp: bool = True) -> dict[str, Any]:
    opts = result.options
    return {
        "options": {
            "unused_days": opts.unused_days,
            "recommended_unused_days": opts.recommended_unused_days,
            "rotation_days": opts.rotation_days,
        },
        "accounts": [a.to_dict() for a in result.accounts],
        "counts": {check: sum(1 for i in result.items if i.check == check) for check in CHECKS},
        "items": [i.to_dict() for i in result.items],
        "host_keys": [k.to_dict() for k in result.host_keys],
        "notes": list(result.notes) + [n for a in result.accounts for n in a.notes],
        "scp": scp_section(result) if include_scp else None,
        "root_scp": root_scp_section(result) if include_scp else None,
    }


def render_audit(result: AuditResult, fmt: str, stream: TextIO, *, include_scp: bool = True) -> None:
    """``csv`` holds the items only (one row each); ``json`` and ``table`` add accounts, notes and the SCP."""
    if fmt == "json":
        dump_json(audit_to_dict(result, include_scp=include_scp), stream)
    elif fmt == "csv":
        writer = csv.DictWriter(stream, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for item in result.items:
            row = item.to_dict()
            row["commands"] = list(item.commands)
            writer.writerow({k: csv_cell(v) for k, v in row.items() if k in CSV_FIELDS})
    elif fmt == "table":
        _table(
            result,
            stream,
            scp_section(result) if include_scp else None,
            root_scp_section(result) if include_scp else None,
        )
    else:
        raise ValueError(f"unknown audit format {fmt!r}")


def _table(result: AuditResult, out: TextIO, scp: Mapping[str, Any] | None, root_scp: Mapping[str, Any] | None) -> None:
    items = result.items
    out.write(f"keysweep audit: {len(result.accounts)} account(s), {len(items)} item(s)\n\n")
    for acct in result.accounts:
        if acct.error:
            out.write(f"  account {safe_text(acct.account_id)}: NOT AUDITED: {safe_text(acct.error)}\n")
            continue
        root = "PRESENT" if acct.root_keys_present else "none"
        out.write(
            f"  account {safe_text(acct.account_id)}  ({safe_text(acct.caller_arn)})  users {acct.users}"
            f"  keys {len(acct.keys)}"
            f"  root keys {root}\n"
        )
    for check, (severity, meaning) in CHECKS.items():
        group = [i for i in items if i.check == check]
        if not group:
            continue
        out.write(f"\n[{severity.upper()}] {check}: {meaning} ({len(group)})\n")
        for item in group:
            out.write(f"  - {safe_text(item.account_id)}  {safe_text(item.summary)}\n")
            out.write(f"    action: {safe_text(item.action)}\n")
            for cmd in item.commands:
                out.write(f"      $ {safe_text(cmd)}\n")
    notes = list(result.notes) + [f"{a.account_id}: {n}" for a in result.accounts for n in a.notes]
    if notes:
        out.write("\nNotes:\n")
        for note in notes:
            out.write(f"  - {safe_text(note)}\n")
    if scp is not None:
        out.write(f"\nService control policy {scp['name']} (apply when {scp['apply_when']}):\n")
        out.write(f"  WARNING: {scp['warning']}\n")
        ready = ", ".join(scp["ready_accounts"]) or "none yet"
        out.write(f"  accounts ready for it now: {ready}\n")
        for target in scp["targets"]:
            name = f" {safe_text(target['name'])}" if target["name"] else ""
            out.write(
                f"  attach to {target['type'].lower().replace('_', ' ')} {target['target_id']}{name}"
                f" ({', '.join(target['accounts'])})\n"
            )
        out.write(f"  NOTE: {scp['management_account_note']}\n")
        out.write(json.dumps(scp["policy"], indent=2) + "\n")
        for cmd in scp["commands"]:
            out.write(f"  $ {cmd}\n")
    if root_scp is not None:
        out.write(f"\nOptional: service control policy {root_scp['name']} (apply when {root_scp['apply_when']}):\n")
        out.write(json.dumps(root_scp["policy"], indent=2) + "\n")
        for cmd in root_scp["commands"]:
            out.write(f"  $ {cmd}\n")
