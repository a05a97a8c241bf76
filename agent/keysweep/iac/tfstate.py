"""Terraform state (format 4, and format 3 of Terraform < 0.12): keys and users Terraform has created.

The state holds every created key's secret in plain text (``secret``, ``ses_smtp_password_v4``) unless a PGP key
encrypted it: such a key is reported as ``secret-in-state`` with its id and the secret redacted, never the secret.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from keysweep.fingerprint import redact
from keysweep.iac.model import KIND_ACCESS_KEY, KIND_IAM_USER, KIND_SECRET_IN_STATE, IacFinding
from keysweep.keyid import is_key_id

_TYPES = {"aws_iam_access_key": KIND_ACCESS_KEY, "aws_iam_user": KIND_IAM_USER}
_SECRET_ATTRIBUTES = ("secret", "ses_smtp_password_v4")


def read_state(document: Any, path: str) -> Iterator[IacFinding]:
    if not isinstance(document, Mapping):
        return
    for address, rtype, attributes in _instances(document):
        kind = _TYPES[rtype]
        key_id = attributes.get("id") if rtype == "aws_iam_access_key" else None
        key_id = key_id if isinstance(key_id, str) and is_key_id(key_id) else None
        secret = next((v for a in _SECRET_ATTRIBUTES if isinstance(v := attributes.get(a), str) and v), None)
        if rtype == "aws_iam_access_key" and secret and secret == attributes.get("secret"):
            kind = KIND_SECRET_IN_STATE
        yield IacFinding(
            kind,
            "terraform-state",
            address,
            path,
            key_id=key_id,
            secret_redacted=redact(secret) if kind == KIND_SECRET_IN_STATE else None,
        )


def _instances(document: Mapping[str, Any]) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """(address, type, attributes) of every managed key or user instance, whatever the state format."""
    resources = document.get("resources")
    if isinstance(resources, list):  # format 4
        for r in resources:
            if not isinstance(r, Mapping) or r.get("mode", "managed") != "managed" or r.get("type") not in _TYPES:
                continue
            base = f"{r['type']}.{r.get('name', '?')}"
            if isinstance(r.get("module"), str):
                base = f"{r['module']}.{base}"
            for inst in r.get("instances") or []:
                if isinstance(inst, Mapping) and isinstance(attrs := inst.get("attributes"), Mapping):
                    index = inst.get("index_key")
                    suffix = "" if index is None else f'["{index}"]' if isinstance(index, str) else f"[{index}]"
                    yield base + suffix, r["type"], attrs
    modules = document.get("modules")
    if isinstance(modules, list):  # format 3
        for module in modules:
            if not isinstance(module, Mapping) or not isinstance(module.get("resources"), Mapping):
                continue
            path = [p for p in module.get("path") or [] if isinstance(p, str) and p != "root"]
            prefix = "".join(f"module.{p}." for p in path)
            for name, r in module["resources"].items():
                if not isinstance(r, Mapping) or r.get("type") not in _TYPES or str(name).startswith("data."):
                    continue
                primary = r.get("primary")
                attrs = primary.get("attributes") if isinstance(primary, Mapping) else None
                if isinstance(primary, Mapping) and isinstance(attrs, Mapping):
                    yield prefix + str(name), r["type"], {**attrs, "id": primary.get("id", attrs.get("id"))}
