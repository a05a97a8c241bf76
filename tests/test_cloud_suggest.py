"""Suggestions for keys found by keysweep cloud: the resource's own role replaces the key."""

from __future__ import annotations

import pytest
from keysweep.cli.cloud import cloud_context
from keysweep.models import Finding, Location, Verification
from keysweep.suggest import UserPolicies, suggest

from tests.test_suggest import aws_command_problems

pytestmark = pytest.mark.timeout(60)

ACCOUNT = "123456789012"
LIVE = Verification(
    status="live", account=ACCOUNT, arn=f"arn:aws:iam::{ACCOUNT}:user/deployer", principal_type="iam-user"
)
POLICIES = UserPolicies("deployer", attached=("arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess",), inline=("extra",))


def cloud_finding(service: str, arn: str, field: str, role_arn: str | None) -> Finding:
    return Finding(
        rule="aws-access-key-pair",
        key_id="AKIAXYZDQCEN4B6JSJQI",
        fingerprint="0" * 32,
        has_secret=True,
        account_id=ACCOUNT,
        key_type="long-term",
        verification=LIVE,
        location=Location(
            kind="cloud",
            service=service,
            resource_arn=arn,
            field=field,
            region="eu-west-1",
            account=ACCOUNT,
            role_arn=role_arn,
            line=1,
        ),
    )


def plan(f: Finding):
    s = suggest(f, cloud_context(ACCOUNT, "eu-west-1"), iam_policies=POLICIES)
    for cmd in [*s.commands, *(c for c in s.cleanup if c.startswith("aws "))]:
        assert aws_command_problems(cmd.replace('"$ROLE_NAME"', "ROLE_NAME")) == [], cmd
    return s


def test_lambda_copies_permissions_to_the_execution_role_and_retires_the_version() -> None:
    s = plan(
        cloud_finding(
            "lambda",
            f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:billing:3",
            "AWS_ACCESS_KEY_ID",
            f"arn:aws:iam::{ACCOUNT}:role/billing-exec",
        )
    )
    assert s.kind == "lambda-execution-role" and s.role_name == "billing-exec"
    assert (
        "aws iam attach-role-policy --role-name billing-exec --policy-arn "
        "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"
    ) in s.commands
    assert any(c.startswith("aws iam put-role-policy --role-name billing-exec --policy-name extra") for c in s.commands)
    assert "aws lambda delete-function --function-name billing --qualifier 3 --region eu-west-1" in s.commands
    assert any("update-function-configuration --function-name billing" in c for c in s.commands)
    assert "function:billing:3 AWS_ACCESS_KEY_ID" in s.cleanup[0]
    assert (
        "aws iam update-access-key --access-key-id AKIAXYZDQCEN4B6JSJQI --status Inactive --user-name deployer"
        in s.cleanup
    )


def test_ecs_uses_the_task_role_not_the_execution_role() -> None:
    arn = f"arn:aws:ecs:eu-west-1:{ACCOUNT}:task-definition/worker:7"
    s = plan(cloud_finding("ecs", arn, "app/AWS_ACCESS_KEY_ID", f"arn:aws:iam::{ACCOUNT}:role/worker-task"))
    assert s.kind == "ecs-existing-task-role" and s.role_name == "worker-task"
    assert all("ecsTaskExecutionRole" not in c for c in s.commands)
    s = plan(cloud_finding("ecs", arn, "app/AWS_ACCESS_KEY_ID", None))
    assert s.kind == "ecs-task-role" and s.role_name == "worker-task"
    assert any(c.startswith("aws iam create-role --role-name worker-task") for c in s.commands)


def test_instances_and_launch_templates_use_their_instance_profile() -> None:
    inst = f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/i-0abc"
    s = plan(cloud_finding("ec2", inst, "UserData", f"arn:aws:iam::{ACCOUNT}:instance-profile/web"))
    assert s.kind == "ec2-existing-profile" and "--instance-profile-name web" in s.commands[0]
    s = plan(cloud_finding("ec2", inst, "UserData", None))
    assert s.kind == "ec2-new-instance-profile"
    assert any("associate-iam-instance-profile --instance-id i-0abc" in c for c in s.commands)
    lt = f"arn:aws:ec2:eu-west-1:{ACCOUNT}:launch-template/lt-0123"
    s = plan(cloud_finding("ec2", lt, "versions/2/UserData", None))
    assert s.kind == "ec2-new-instance-profile"
    assert any(c.startswith("aws ec2 create-launch-template-version --launch-template-id lt-0123") for c in s.commands)
    s = plan(
        cloud_finding(
            "autoscaling",
            f"arn:aws:autoscaling:eu-west-1:{ACCOUNT}:launchConfiguration:x:launchConfigurationName/old",
            "UserData",
            f"arn:aws:iam::{ACCOUNT}:instance-profile/old",
        )
    )
    assert s.kind == "ec2-existing-profile" and "launch configuration" in s.summary


def test_codebuild_batch_and_stored_keys() -> None:
    s = plan(
        cloud_finding(
            "codebuild",
            f"arn:aws:codebuild:eu-west-1:{ACCOUNT}:project/build",
            "DEPLOY_KEY",
            f"arn:aws:iam::{ACCOUNT}:role/build-svc",
        )
    )
    assert (s.kind, s.role_name) == ("codebuild-service-role", "build-svc")
    s = plan(cloud_finding("batch", f"arn:aws:batch:eu-west-1:{ACCOUNT}:job-definition/nightly:2", "K", None))
    assert s.kind == "batch-job-role" and s.trust_policy["Statement"][0]["Principal"] == {
        "Service": "ecs-tasks.amazonaws.com"
    }
    s = plan(cloud_finding("ssm", f"arn:aws:ssm:eu-west-1:{ACCOUNT}:parameter/ci/key", "/ci/key", None))
    assert s.kind == "stored-key" and "aws ssm delete-parameter --name /ci/key --region eu-west-1" in s.commands
    s = plan(
        cloud_finding("cloudformation", f"arn:aws:cloudformation:eu-west-1:{ACCOUNT}:stack/app/1", "Outputs/K", None)
    )
    assert s.kind == "stored-key" and "keysweep trail" in s.steps[0]
