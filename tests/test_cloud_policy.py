"""The shipped least-privilege policies for keysweep cloud / trail: every action is a real API operation in
botocore's models, every call the readers make is allowed and nothing else is, and with exactly that policy a
sweep of an account holding every kind of resource reads it all (moto enforcing IAM)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import boto3
import botocore.session
import pytest
from botocore import xform_name
from keysweep.cli import main

from tests.support.moto_server import MotoServer
from tests.support.planted import planted_key
from tests.test_cloud import REGION, role, zipped

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
READ_POLICY = ROOT / "packaging/central/keysweep-cloud-readonly-policy.json"
ORG_POLICY = ROOT / "packaging/central/keysweep-cloud-organization-policy.json"
ATHENA_POLICY = ROOT / "packaging/central/keysweep-trail-athena-policy.json"
TRAIL_CALLS = {
    "iam:ListUsers",
    "iam:ListAccessKeys",
    "cloudtrail:LookupEvents",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeAddresses",
    "ec2:DescribeInstances",
}
_BOTO = botocore.session.get_session()


def actions(path: Path, effect: str = "Allow") -> set[str]:
    out: set[str] = set()
    for st in json.loads(path.read_text())["Statement"]:
        if st["Effect"] == effect:
            out |= {st["Action"]} if isinstance(st["Action"], str) else set(st["Action"])
    return out


def called_operations() -> set[str]:
    """``service:Operation`` for every call in the cloud package: each reader module talks to one service."""
    found: set[str] = set()
    for module in (ROOT / "agent/keysweep/cloud").glob("*.py"):
        text = module.read_text()
        services = set(re.findall(r'client\("([a-z0-9-]+)"', text))
        if not services:
            continue
        if module.name in ("trail.py", "addresses.py", "athena.py"):  # keysweep trail: TRAIL_CALLS, Athena's file
            continue
        if module.name == "session.py":  # several services, one call each
            found |= {"sts:GetCallerIdentity", "sts:AssumeRole", "organizations:ListAccounts", "ec2:DescribeRegions"}
            continue
        assert len(services) == 1, module
        (service,) = services
        ops = re.findall(r'paginate\(\s*client,\s*"(\w+)"', text) + re.findall(r"client\.(\w+)\b", text)
        model = _BOTO.get_service_model(service)
        names = {xform_name(n): n for n in model.operation_names}
        found |= {f"{service}:{names[op]}" for op in ops if op in names}
    return found


# IAM actions without an API operation of that name (S3's ListBucket authorises ListObjects / ListObjectsV2)
_NOT_OPERATIONS = {"s3:ListBucket"}


@pytest.mark.parametrize("path", [READ_POLICY, ORG_POLICY, ATHENA_POLICY])
def test_every_action_is_an_operation_in_botocore(path: Path) -> None:
    for action in actions(path) | actions(path, "Deny"):
        if action in _NOT_OPERATIONS:
            continue
        service, op = action.split(":")
        assert op in _BOTO.get_service_model(service).operation_names, action


def test_the_policies_allow_exactly_what_the_cloud_readers_call() -> None:
    allowed = actions(READ_POLICY) | actions(ORG_POLICY) | {"sts:GetCallerIdentity"}  # needs no permission
    called = called_operations()
    assert TRAIL_CALLS <= allowed
    assert called == allowed - (TRAIL_CALLS - called)


def test_a_sweep_with_exactly_the_policy_reads_everything(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    k = planted_key(60)
    env = [{"name": "K", "value": k.key_id}]
    boto3.client("lambda").create_function(
        FunctionName="f",
        Runtime="python3.12",
        Role=role("f"),
        Handler="h.h",
        Code={"ZipFile": zipped("h.py", "")},
        Environment={"Variables": {"K": k.key_id}},
    )
    boto3.client("ecs").register_task_definition(
        family="t", containerDefinitions=[{"name": "c", "image": "i", "memory": 128, "environment": env}]
    )
    ec2 = boto3.client("ec2")
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, UserData=k.key_id)
    ec2.create_launch_template(
        LaunchTemplateName="ltx", LaunchTemplateData={"UserData": base64.b64encode(k.key_id.encode()).decode()}
    )
    boto3.client("autoscaling").create_launch_configuration(
        LaunchConfigurationName="lc", ImageId=ami, InstanceType="t3.micro", UserData=k.key_id
    )
    boto3.client("ssm").put_parameter(Name="/p", Type="String", Value=k.key_id)
    boto3.client("cloudformation").create_stack(
        StackName="s",
        TemplateBody=json.dumps(
            {"Resources": {"T": {"Type": "AWS::SNS::Topic"}}, "Outputs": {"O": {"Value": k.key_id}}}
        ),
    )
    boto3.client("s3").create_bucket(Bucket="src")
    boto3.client("codebuild").create_project(
        name="pb",
        source={"type": "S3", "location": "src/a.zip"},
        artifacts={"type": "NO_ARTIFACTS"},
        environment={
            "type": "LINUX_CONTAINER",
            "image": "i",
            "computeType": "BUILD_GENERAL1_SMALL",
            "environmentVariables": [{"name": "K", "value": k.key_id}],
        },
        serviceRole="arn:aws:iam::123456789012:role/b",
    )
    boto3.client("batch").register_job_definition(
        jobDefinitionName="j",
        type="container",
        containerProperties={"image": "i", "vcpus": 1, "memory": 128, "environment": env},
    )

    iam = boto3.client("iam")
    iam.create_user(UserName="keysweep-cloud")
    doc = json.loads(READ_POLICY.read_text())
    doc["Statement"] = [s for s in doc["Statement"] if s["Effect"] == "Allow"]
    iam.put_user_policy(UserName="keysweep-cloud", PolicyName="read", PolicyDocument=json.dumps(doc))
    key = iam.create_access_key(UserName="keysweep-cloud")["AccessKey"]
    moto_server.enable_auth()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])

    code = main(["cloud", "--format", "json", "--region", REGION])
    out, err = capsys.readouterr()
    summary = json.loads(out)["summary"]
    # moto cannot authorise Lambda's REST calls for an IAM user (its signature check fails on their paths) and
    # compares Batch actions case-sensitively against a lower-cased name: those two are covered by the static
    # test above; every other service is read with exactly the policy
    assert summary["skips"] == [
        {"account": "123456789012", "region": REGION, "service": "lambda", "reason": "HTTP 403 (ListFunctions)"},
        {
            "account": "123456789012",
            "region": REGION,
            "service": "batch",
            "reason": "HTTP 403 (DescribeJobDefinitions)",
        },
    ], err
    assert code == 1
    assert set(summary["findings_by_source"]) == {"ecs", "ec2", "autoscaling", "ssm", "cloudformation", "codebuild"}
