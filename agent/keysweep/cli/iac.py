"""``keysweep iac PATH ...``: access keys and IAM users in Terraform, CloudFormation and Terraform state."""

from __future__ import annotations

import argparse
import sys

from keysweep.errors import ConfigError, ExitCode
from keysweep.iac import IacResult, scan_iac
from keysweep.textsafe import dump_json, safe_text

FORMATS = ("text", "json")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "iac",
        help="flag access keys and IAM users in Terraform, CloudFormation and Terraform state",
        description="Flag resources that create long-lived credentials before they are deployed: "
        "aws_iam_access_key / AWS::IAM::AccessKey and aws_iam_user / AWS::IAM::User in Terraform (*.tf, *.tf.json) "
        "and CloudFormation (YAML or JSON) files, and keys in Terraform state (*.tfstate), which holds their "
        "secrets in plain text (shown redacted). No external tool is needed. Exit codes: 0 nothing flagged, "
        "1 resources flagged, 2 usage error (a PATH that does not exist), 3 runtime error.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="file or directory to check (links are not followed)")
    p.add_argument("--format", choices=FORMATS, default="text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = scan_iac(args.paths)
    if result.files == 0 and result.errors and len(result.errors) == len(args.paths):
        raise ConfigError(f"{result.errors[0][0]}: {result.errors[0][1]}")
    if args.format == "json":
        dump_json(_document(result), sys.stdout)
    else:
        _text(result)
    return int(ExitCode.FINDINGS if result.findings else ExitCode.CLEAN)


def _document(result: IacResult) -> dict[str, object]:
    return {
        "findings": [f.to_dict() for f in result.findings],
        "summary": {
            "files": result.files,
            "findings": len(result.findings),
            "skipped": dict(result.skipped),
            "errors": [{"path": p, "reason": r} for p, r in result.errors],
        },
    }


def _text(result: IacResult) -> None:
    for f in result.findings:
        where = f"{f.path}:{f.line}" if f.line else f.path
        key = f" ({f.key_id}, secret {f.secret_redacted})" if f.key_id and f.secret_redacted else ""
        key = key or (f" ({f.key_id})" if f.key_id else "")
        print(safe_text(f"{where}: {f.resource}{key}: {f.message}"))
    for path, reason in result.errors:
        print(safe_text(f"keysweep: iac: skipped {path}: {reason}"), file=sys.stderr)
    print(f"{len(result.findings)} flagged resource(s) in {result.files} file(s)", file=sys.stderr)
