"""`keysweep iac`: key and user resources in Terraform, CloudFormation and Terraform state, through the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from keysweep.iac import scan_iac

from tests.support.cli import run_keysweep
from tests.support.planted import planted_key

DATA = Path(__file__).parent / "data" / "iac"
EXPECTED = {
    ("terraform", "aws_iam_user.deploy", "main.tf", 2),
    ("terraform", "aws_iam_access_key.deploy", "main.tf", 6),
    ("terraform", "aws_iam_access_key.bare_labels", "main.tf", 26),
    ("terraform", "aws_iam_access_key.json_key", "keys.tf.json", None),
    ("cloudformation", "AWS::IAM::User.Deploy", "template.yaml", 4),
    ("cloudformation", "AWS::IAM::AccessKey.DeployKey", "template.yaml", 8),
    ("cloudformation", "AWS::IAM::User.CiUser1A2B3C", "cdk.template.json", 3),
    ("cloudformation", "AWS::IAM::AccessKey.CiUserKeyD4E5F6", "cdk.template.json", 4),
}


def keysweep(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_keysweep(*args, cwd=cwd)


def _state(tmp_path: Path, *, version: int = 4) -> tuple[Path, str, str]:
    p = planted_key(7)
    attributes = {
        "id": p.key_id,
        "user": "deploy",
        "secret": p.secret,
        "ses_smtp_password_v4": "BPx" + p.secret[:41],
        "status": "Active",
    }
    if version == 4:
        doc = {
            "version": 4,
            "resources": [
                {
                    "mode": "managed",
                    "type": "aws_iam_access_key",
                    "name": "deploy",
                    "module": "module.ci",
                    "instances": [{"index_key": 0, "attributes": attributes}],
                },
                {
                    "mode": "managed",
                    "type": "aws_iam_user",
                    "name": "deploy",
                    "instances": [{"attributes": {"id": "deploy", "name": "deploy"}}],
                },
                {"mode": "data", "type": "aws_iam_access_key", "name": "ignored", "instances": []},
                {"mode": "managed", "type": "aws_iam_role", "name": "app", "instances": [{"attributes": {}}]},
            ],
        }
    else:
        doc = {
            "version": 3,
            "modules": [
                {
                    "path": ["root", "ci"],
                    "resources": {
                        "aws_iam_access_key.deploy": {
                            "type": "aws_iam_access_key",
                            "primary": {"id": p.key_id, "attributes": attributes},
                        }
                    },
                }
            ],
        }
    path = tmp_path / "terraform.tfstate"
    path.write_text(json.dumps(doc))
    return path, p.key_id, p.secret


def test_every_framework_flags_keys_and_users_at_their_lines() -> None:
    result = scan_iac([str(DATA)])
    got = {(f.framework, f.resource, Path(f.path).name, f.line) for f in result.findings}
    assert got == EXPECTED  # comments, heredocs, the role, the S3 bucket and the clean directory flag nothing
    assert result.files == 6 and not result.errors


@pytest.mark.parametrize("version", [4, 3])
def test_state_reports_the_key_id_and_never_the_secret(tmp_path: Path, version: int) -> None:
    state, key_id, secret = _state(tmp_path, version=version)
    run = keysweep("iac", str(tmp_path), "--format", "json")
    assert run.returncode == 1, run.stderr
    doc = json.loads(run.stdout)
    keys = [f for f in doc["findings"] if f["kind"] == "secret-in-state"]
    assert len(keys) == 1
    assert keys[0]["key_id"] == key_id and keys[0]["framework"] == "terraform-state"
    assert keys[0]["resource"] == (
        "module.ci.aws_iam_access_key.deploy[0]" if version == 4 else "module.ci.aws_iam_access_key.deploy"
    )
    assert keys[0]["secret_redacted"] and keys[0]["secret_redacted"] != secret
    text = keysweep("iac", str(state))
    for out in (run.stdout, run.stderr, text.stdout, text.stderr):
        assert secret not in out and secret[:20] not in out
    assert key_id in text.stdout


def test_state_with_an_encrypted_secret_is_a_key_not_a_plaintext_secret(tmp_path: Path) -> None:
    p = planted_key(3)
    doc = {
        "version": 4,
        "resources": [
            {
                "mode": "managed",
                "type": "aws_iam_access_key",
                "name": "k",
                "instances": [
                    {
                        "attributes": {
                            "id": p.key_id,
                            "secret": None,
                            "encrypted_secret": "wcBMA...",
                            "key_fingerprint": "ab",
                        }
                    }
                ],
            }
        ],
    }
    (tmp_path / "x.tfstate.backup").write_text(json.dumps(doc))
    [f] = scan_iac([str(tmp_path)]).findings
    assert (f.kind, f.key_id, f.secret_redacted) == ("access-key", p.key_id, None)


def test_text_output_and_exit_codes(tmp_path: Path) -> None:
    flagged = keysweep("iac", str(DATA / "terraform"))
    assert flagged.returncode == 1
    assert (
        f"{DATA / 'terraform' / 'main.tf'}:6: aws_iam_access_key.deploy: creates a long-lived IAM access key"
        in flagged.stdout
    )
    assert "4 flagged resource(s) in 2 file(s)" in flagged.stderr
    clean = keysweep("iac", str(DATA / "clean"))
    assert clean.returncode == 0 and clean.stdout == ""
    missing = keysweep("iac", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "vanished" in missing.stderr and "Traceback" not in missing.stderr


def test_hostile_files_are_counted_and_the_rest_still_read(tmp_path: Path) -> None:
    shutil.copy(DATA / "terraform" / "main.tf", tmp_path / "main.tf")
    (tmp_path / "broken.yaml").write_text("Resources: [AWS::IAM::User\n  - : :")
    (tmp_path / "multi.yaml").write_text("a: AWS::IAM::User\n---\nb: 2\n")
    (tmp_path / "deep.json").write_text('{"AWS::IAM::User": ' + "[" * 100_000 + "]" * 100_000 + "}")
    (tmp_path / "bad.tfstate").write_bytes(b"\xff\xfe not json")
    (tmp_path / "terraform.tfstate").write_text("[1, 2]")  # valid JSON, wrong shape
    os.mkfifo(tmp_path / "fifo.tf")
    (tmp_path / "link.tf").symlink_to(DATA / "terraform" / "main.tf")
    (tmp_path / os.fsdecode(b"caf\xe9.tf")).write_text('resource "aws_iam_user" "u" {}\n')
    (tmp_path / "a\x1b[2Jb.yaml").write_text('Resources:\n  "X\\u202eY\\x1b[2J": {Type: AWS::IAM::User}\n')
    (tmp_path / ".terraform" / "modules").mkdir(parents=True)
    (tmp_path / ".terraform" / "modules" / "m.tf").write_text('resource "aws_iam_user" "vendored" {}\n')
    run = keysweep("iac", str(tmp_path), "--format", "json")
    assert run.returncode == 1, run.stderr
    doc = json.loads(run.stdout)
    names = {Path(f["path"]).name: f["resource"] for f in doc["findings"]}
    assert names["caf\\xe9.tf"] == "aws_iam_user.u"
    assert names["a\\x1b[2Jb.yaml"] == "AWS::IAM::User.X\\u202eY\\x1b[2J"  # shown, never acted on
    text = keysweep("iac", str(tmp_path))
    assert "\x1b" not in text.stdout + text.stderr and "\u202e" not in text.stdout
    assert "m.tf" not in names and "link.tf" not in names and "fifo.tf" not in names
    reasons = {Path(e["path"]).name: e["reason"] for e in doc["summary"]["errors"]}
    assert reasons["broken.yaml"].startswith("unparsable") and reasons["multi.yaml"].startswith("unparsable")
    assert reasons["deep.json"].startswith("unparsable") and reasons["bad.tfstate"].startswith("unparsable")
    assert "terraform.tfstate" not in reasons  # a document of the wrong shape holds nothing to flag
    assert sum(1 for f in doc["findings"] if Path(f["path"]).name == "main.tf") == 3


def test_tf_json_resource_may_be_a_list_of_objects(tmp_path: Path) -> None:
    (tmp_path / "k.tf.json").write_text(
        json.dumps(
            {
                "resource": [
                    {"aws_iam_access_key": {"a": {"user": "ci"}}},
                    {"aws_iam_user": {"b": {"name": "b"}}},
                    "junk",
                ]
            }
        )
    )
    assert {f.resource for f in scan_iac([str(tmp_path)]).findings} == {"aws_iam_access_key.a", "aws_iam_user.b"}
