"""The serverless deployment template: parses, least privilege, creates in the emulator, and its policies allow
exactly what the agents and the collector do."""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError
from keysweep.central import lambda_handler, store_dynamodb
from keysweep.central.collector import Collector, CollectorConfig
from keysweep.central.senders import SENDER_MAP_ENV
from keysweep.central.store import open_store

from tests.support import messages as M
from tests.support.audit_role import AUDIT_IAM_READS
from tests.support.central import ROOT

TEMPLATE = ROOT / "packaging" / "central" / "template.yaml"


class CloudFormationLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !GetAtt, !Sub, …) turned into their long form."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


CloudFormationLoader.add_multi_constructor("!", _tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=CloudFormationLoader)  # noqa: S506 (a SafeLoader subclass)


NO_VALUE = {"Ref": "AWS::NoValue"}


def _branches(statement: dict[str, Any]) -> list[dict[str, Any]]:
    """A statement, or both branches of a conditional one (``!If [Cond, statement, !Ref AWS::NoValue]``)."""
    if "Fn::If" in statement:
        return [b for b in statement["Fn::If"][1:] if b != NO_VALUE]
    return [statement]


def _statements(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, res in template["Resources"].items():
        props = res.get("Properties", {})
        docs = [p["PolicyDocument"] for p in props.get("Policies", [])]
        if "PolicyDocument" in props:
            docs.append(props["PolicyDocument"])
        for doc in docs:
            out += [(name, b) for s in doc["Statement"] for b in _branches(s)]
    return out


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _actions(template: dict[str, Any], resource: str) -> set[str]:
    return {
        a
        for name, s in _statements(template)
        if name == resource and s["Effect"] == "Allow"
        for a in _list(s["Action"])
    }


def test_template_resources(template: dict[str, Any]) -> None:
    res = template["Resources"]
    queue, dlq = res["FindingsQueue"]["Properties"], res["DeadLetterQueue"]["Properties"]
    for q in (queue, dlq):  # SSE-SQS, or SSE-KMS with the given key
        assert q["SqsManagedSseEnabled"] == {"Fn::If": ["UseKms", NO_VALUE, True]}
        assert q["KmsMasterKeyId"] == {"Fn::If": ["UseKms", {"Ref": "KmsKeyArn"}, NO_VALUE]}
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    assert queue["VisibilityTimeout"] >= 6 * res["CollectorFunction"]["Properties"]["Timeout"]
    table = res["FleetTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert {k["AttributeName"]: k["KeyType"] for k in table["KeySchema"]} == {"pk": "HASH", "sk": "RANGE"}
    # the index the store reads through, exactly as the store itself creates it
    assert table["GlobalSecondaryIndexes"] == [store_dynamodb.INDEX_DEFINITION]
    assert store_dynamodb.INDEX_ATTRIBUTES == [
        a for a in table["AttributeDefinitions"] if a["AttributeName"] in ("tpk", "tsk")
    ]
    fn = res["CollectorFunction"]["Properties"]
    module, func = fn["Handler"].rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module), func))
    assert fn["Environment"]["Variables"] == {
        lambda_handler.TABLE_ENV: {"Ref": "FleetTable"},
        SENDER_MAP_ENV: {"Ref": "SenderMap"},
    }
    # only the agents' principals may send: every other principal is denied sqs:SendMessage by the queue
    [only_agents] = [s for name, s in _statements(template) if s.get("Sid") == "OnlyAgentsSend"]
    assert only_agents["Effect"] == "Deny" and only_agents["Principal"] == "*"
    assert only_agents["Action"] == "sqs:SendMessage"
    assert only_agents["Resource"] == {"Fn::GetAtt": ["FindingsQueue", "Arn"]}
    assert only_agents["Condition"] == {"ArnNotLike": {"aws:PrincipalArn": {"Ref": "AgentPrincipalArns"}}}
    assert "Default" not in template["Parameters"]["AgentPrincipalArns"]  # a deployment must name its agents
    assert set(fn["Code"]) == {"S3Bucket", "S3Key"}
    esm = res["CollectorEventSource"]["Properties"]
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert esm["EventSourceArn"] == {"Fn::GetAtt": ["FindingsQueue", "Arn"]} and esm["BatchSize"] <= 10


def test_policies_are_least_privilege(template: dict[str, Any]) -> None:
    resources = set(template["Resources"]) | set(template["Parameters"])  # a parameter names one key
    allows = [(name, s) for name, s in _statements(template) if s["Effect"] == "Allow"]
    assert allows
    # the one exception to "no Resource *": the audit's reads of IAM and of the organisation, whose List/Get calls
    # take no narrower resource; those statements hold read actions only
    any_resource = {("AuditRole", "ReadIam"), ("AuditRole", "ReadOrganization")}
    for name, s in allows:
        for action in _list(s["Action"]):
            assert "*" not in action, (name, action)
        if s.get("Principal"):  # a trust policy names who may assume, not what is allowed
            continue
        if (name, s.get("Sid")) in any_resource:
            assert s["Resource"] == "*"
            for action in _list(s["Action"]):
                verb = action.split(":", 1)[1]
                assert verb.startswith(("Get", "List", "Describe")) or action == "iam:GenerateCredentialReport", action
            continue
        for resource in _list(s["Resource"]):
            assert resource != "*", name
            if "Fn::Sub" in resource:  # this account's Security Hub, or the audit role in the audited accounts
                assert resource["Fn::Sub"] in AUDIT_ARNS, (name, resource)
                continue
            ref = resource.get("Fn::GetAtt", [resource.get("Ref")])[0]
            assert ref in resources, (name, resource)
    for name, s in _statements(template):
        if s["Effect"] == "Deny":
            assert s["Condition"], name  # a deny-all only under a condition (TLS only)

    agent = [s for name, s in allows if name == "AgentSendPolicy"]
    assert agent == [
        {
            "Sid": "SendFindings",
            "Effect": "Allow",
            "Action": "sqs:SendMessage",
            "Resource": {"Fn::GetAtt": ["FindingsQueue", "Arn"]},
        }
    ]
    assert _actions(template, "AgentKeyPolicy") == {"kms:GenerateDataKey", "kms:Decrypt"}
    assert _actions(template, "CollectorKeyPolicy") == {"kms:Decrypt"}
    res = template["Resources"]
    assert res["AgentKeyPolicy"]["Condition"] == res["CollectorKeyPolicy"]["Condition"] == "UseKms"
    assert res["CollectorKeyPolicy"]["Properties"]["Roles"] == [{"Ref": "CollectorRole"}]
    # what the function and an event-source mapping need, nothing more
    assert _actions(template, "CollectorRole") - {"sts:AssumeRole"} == {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ChangeMessageVisibility",
        "dynamodb:DescribeTable",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    }


FLEET_INDEX_ARN = "${FleetTable.Arn}/index/" + store_dynamodb.INDEX
AUDIT_ARNS = {
    FLEET_INDEX_ARN,
    "arn:${AWS::Partition}:iam::*:role/${AuditRoleName}",
    "arn:${AWS::Partition}:securityhub:${AWS::Region}:${AWS::AccountId}:product/${AWS::AccountId}/default",
    "arn:${AWS::Partition}:securityhub:${AWS::Region}:${AWS::AccountId}:hub/default",
}


def _create_stack(name: str, **parameters: str) -> Any:
    """The template as stack ``name`` in the emulator, with ``parameters``; the CloudFormation client."""
    cfn = boto3.client("cloudformation", region_name="us-east-1")
    cfn.create_stack(
        StackName=name,
        TemplateBody=TEMPLATE.read_text(),
        Capabilities=["CAPABILITY_IAM"],
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
    )
    return cfn


def _audit_statements(template: dict[str, Any]) -> dict[str, tuple[str | None, dict[str, Any]]]:
    """The audit role's statements by Sid, each with the condition it exists under (None: always)."""
    [doc] = [p["PolicyDocument"] for p in template["Resources"]["AuditRole"]["Properties"]["Policies"]]
    out = {}
    for s in doc["Statement"]:
        condition, [statement] = (s["Fn::If"][0], _branches(s)) if "Fn::If" in s else (None, [s])
        out[statement["Sid"]] = (condition, statement)
    return out


def test_audit_function_and_schedule(template: dict[str, Any]) -> None:
    from keysweep.central import lambda_audit

    res, params = template["Resources"], template["Parameters"]
    fn = res["AuditFunction"]["Properties"]
    module, func = fn["Handler"].rsplit(".", 1)
    assert getattr(importlib.import_module(module), func) is lambda_audit.handler
    assert fn["Code"] == res["CollectorFunction"]["Properties"]["Code"]  # the same artefact
    assert fn["Timeout"] == 900 and fn["Role"] == {"Fn::GetAtt": ["AuditRole", "Arn"]}
    assert fn["Environment"]["Variables"] == {
        lambda_audit.TABLE_ENV: {"Ref": "FleetTable"},
        lambda_audit.ROLE_NAME_ENV: {"Ref": "AuditRoleName"},
        lambda_audit.ACCOUNTS_ENV: {"Ref": "AuditAccounts"},
        lambda_audit.ORGANIZATION_ENV: {"Ref": "AuditOrganization"},
        lambda_audit.SECURITYHUB_ENV: {"Ref": "AuditSecurityHub"},
    }
    assert params["AuditSchedule"]["Default"] == "rate(1 day)" and params["AuditRoleName"]["Default"] == ""
    assert params["AuditOrganization"]["Default"] == "false" and params["AuditSecurityHub"]["Default"] == "true"
    # the handler reads exactly the values these parameters can take
    assert (
        set(params["AuditOrganization"]["AllowedValues"])
        == set(params["AuditSecurityHub"]["AllowedValues"])
        == {"true", "false"}
    )
    assert template["Conditions"]["ScheduleAudit"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AuditSchedule"}, ""]}]}
    rule, permission = res["AuditScheduleRule"], res["AuditSchedulePermission"]
    assert rule["Condition"] == permission["Condition"] == "ScheduleAudit"
    assert "Condition" not in res["AuditFunction"]  # without a schedule it can still be invoked by hand
    assert rule["Properties"]["ScheduleExpression"] == {"Ref": "AuditSchedule"}
    assert [t["Arn"] for t in rule["Properties"]["Targets"]] == [{"Fn::GetAtt": ["AuditFunction", "Arn"]}]
    assert permission["Properties"] == {
        "Action": "lambda:InvokeFunction",
        "FunctionName": {"Fn::GetAtt": ["AuditFunction", "Arn"]},
        "Principal": "events.amazonaws.com",
        "SourceArn": {"Fn::GetAtt": ["AuditScheduleRule", "Arn"]},
    }


def test_audit_role_actions(template: dict[str, Any]) -> None:
    statements = _audit_statements(template)
    got = {sid: (cond, set(_list(s["Action"])), s["Resource"]) for sid, (cond, s) in statements.items()}
    security_hub = "arn:${AWS::Partition}:securityhub:${AWS::Region}:${AWS::AccountId}:"
    assert got == {
        "ReadIam": (None, AUDIT_IAM_READS, "*"),
        "AssumeAuditRole": (
            "AuditAssumesRole",
            {"sts:AssumeRole"},
            {"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/${AuditRoleName}"},
        ),
        "ReadOrganization": (
            "AuditInOrganization",
            {
                "organizations:DescribeOrganization",
                "organizations:ListAccounts",
                "organizations:ListRoots",
                "organizations:ListOrganizationalUnitsForParent",
                "organizations:ListAccountsForParent",
            },
            "*",
        ),
        "ImportAuditFindings": (
            "AuditToSecurityHub",
            {"securityhub:BatchImportFindings"},
            {"Fn::Sub": security_hub + "product/${AWS::AccountId}/default"},
        ),
        "ReadAuditFindings": (
            "AuditToSecurityHub",
            {"securityhub:GetFindings"},
            {"Fn::Sub": security_hub + "hub/default"},
        ),
        "ReadFleetTable": (
            None,
            {"dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:Scan"},
            {"Fn::GetAtt": ["FleetTable", "Arn"]},
        ),
        "ReadFleetIndex": (None, {"dynamodb:Query"}, {"Fn::Sub": FLEET_INDEX_ARN}),
        "OwnLogs": (None, {"logs:CreateLogStream", "logs:PutLogEvents"}, {"Fn::GetAtt": ["AuditLogGroup", "Arn"]}),
    }
    conditions = template["Conditions"]
    assert conditions["AuditAssumesRole"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AuditRoleName"}, ""]}]}
    assert conditions["AuditInOrganization"] == {"Fn::Equals": [{"Ref": "AuditOrganization"}, "true"]}
    assert conditions["AuditToSecurityHub"] == {"Fn::Equals": [{"Ref": "AuditSecurityHub"}, "true"]}
    # docs/audit-report.md lists what the audit role needs; the function's role has exactly those IAM reads
    docs = (ROOT / "docs" / "audit-report.md").read_text()
    accounts = docs.split("### Accounts", 1)[1].split("\n### ", 1)[0]
    listed = {f"iam:{a}" for a in re.findall(r"`iam:(\w+)`", accounts)} - {"iam:UpdateAccessKey"}
    assert listed == AUDIT_IAM_READS


def _client(service: str, key: dict[str, str]) -> Any:
    return boto3.client(
        service,
        region_name="us-east-1",
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )


def _user_with(iam: Any, name: str, *, managed: str | None = None, inline: dict[str, Any] | None = None) -> Any:
    iam.create_user(UserName=name)
    if managed:
        iam.attach_user_policy(UserName=name, PolicyArn=managed)
    if inline:
        iam.put_user_policy(UserName=name, PolicyName="inline", PolicyDocument=json.dumps(inline))
    return iam.create_access_key(UserName=name)["AccessKey"]


def _for_emulator(doc: dict[str, Any] | str) -> dict[str, Any]:
    """The policy as the emulator can enforce it. It checks DynamoDB actions only against resource "*" (SQS it
    checks against the queue ARN), so DynamoDB statements are widened there; and it wants its own permission for
    the SQS batch calls, which AWS authorises with the single-message action (sqs:DeleteMessage covers
    DeleteMessageBatch), so those are added beside it. A statement that is ``!If [Cond, …, !Ref AWS::NoValue]``
    with Cond false comes back as null from the emulator, where CloudFormation drops it: dropped here. Nothing else
    changes."""
    if isinstance(doc, str):  # the emulator hands documents back as JSON or as a Python literal
        doc = json.loads(doc) if doc.lstrip().startswith('{"') else ast.literal_eval(doc)
    assert isinstance(doc, dict)
    statements = []
    for s in doc["Statement"]:
        if s is None:
            continue
        actions = _list(s["Action"])
        if all(a.startswith("dynamodb:") for a in actions):
            s = {**s, "Resource": "*"}
        batch = [
            f"{a}Batch" for a in actions if a in ("sqs:SendMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility")
        ]
        if batch:
            s = {**s, "Action": [*actions, *batch]}
        statements.append(s)
    return {**doc, "Statement": statements}


def _denied(call: Any, **kwargs: Any) -> bool:
    try:
        call(**kwargs)
    except ClientError as exc:
        return "AccessDenied" in str(exc) or "not authorized" in str(exc)
    return False


@pytest.mark.timeout(180)
def test_stack_in_the_emulator_and_its_policies_enforced(
    moto_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    artefact = tmp_path / "collector.zip"
    subprocess.run(
        [sys.executable, str(ROOT / "packaging" / "central" / "build-lambda.py"), str(artefact)],
        check=True,
        capture_output=True,
    )
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="keysweep-artefacts")
    s3.put_object(Bucket="keysweep-artefacts", Key="collector.zip", Body=artefact.read_bytes())
    stack = f"ks{uuid.uuid4().hex[:6]}"
    cfn = _create_stack(
        stack,
        CodeBucket="keysweep-artefacts",
        CodeKey="collector.zip",
        AgentPrincipalArns="arn:aws:iam::123456789012:user/agent",
        AuditRoleName="KeysweepAudit",
        AuditAccounts="111111111111",
    )
    described = cfn.describe_stacks(StackName=stack)["Stacks"][0]
    assert described["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}
    physical = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cfn.list_stack_resources(StackName=stack)["StackResourceSummaries"]
    }

    # the test plays the event-source mapping itself (the emulator cannot run the function)
    lam = boto3.client("lambda", region_name="us-east-1")
    lam.update_event_source_mapping(UUID=physical["CollectorEventSource"], Enabled=False)
    sqs = boto3.client("sqs", region_name="us-east-1")
    queue_url = sqs.get_queue_url(QueueName=f"{stack}-findings")["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"].endswith(f"{stack}-findings-dlq")
    assert attrs["SqsManagedSseEnabled"] == "true" and "KmsMasterKeyId" not in attrs
    assert "AgentKeyPolicyArn" not in outputs and "AgentKeyPolicy" not in physical
    table = outputs["TableName"]
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    assert ddb.describe_table(TableName=table)["Table"]["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"

    iam = boto3.client("iam", region_name="us-east-1")
    _assert_scheduled_audit(cfn, stack, physical, outputs)
    role_policy = iam.get_role_policy(RoleName=physical["CollectorRole"], PolicyName="collect")["PolicyDocument"]
    host_arn = outputs["CollectorHostPolicyArn"]
    host_policy = iam.get_policy_version(
        PolicyArn=host_arn, VersionId=iam.get_policy(PolicyArn=host_arn)["Policy"]["DefaultVersionId"]
    )["PolicyVersion"]["Document"]
    agent_key = _user_with(iam, "agent", managed=outputs["AgentSendPolicyArn"])
    function_key = _user_with(iam, "function", inline=_for_emulator(role_policy))
    host_key = _user_with(iam, "collector-host", inline=_for_emulator(host_policy))
    moto_server.enable_auth()

    agent = _client("sqs", agent_key)
    h = M.host("i-cfn", "cfn-host")
    messages = [M.finding_message(host_info=h, path=f"/p/{i}") for i in range(3)]
    for m in messages:
        agent.send_message(QueueUrl=queue_url, MessageBody=json.dumps(m))
    assert _denied(agent.receive_message, QueueUrl=queue_url)
    assert _denied(agent.purge_queue, QueueUrl=queue_url)

    # the function's permissions: receive a batch, store it, no more
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", function_key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", function_key["SecretAccessKey"])
    monkeypatch.setenv(lambda_handler.TABLE_ENV, table)
    fn_sqs = _client("sqs", function_key)
    got = fn_sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=2, WaitTimeSeconds=1, MessageSystemAttributeNames=["All"]
    )["Messages"]
    event = {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m["Attributes"],
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": outputs["QueueArn"],
                "awsRegion": "us-east-1",
            }
            for m in got
        ]
    }
    assert lambda_handler.handler(event, None) == {"batchItemFailures": []}
    for m in got:
        fn_sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    fn_ddb = _client("dynamodb", function_key)
    assert _denied(fn_ddb.scan, TableName=table)
    assert _denied(fn_ddb.delete_table, TableName=table)

    # a collector host with the host policy drains the rest and can read the store
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", host_key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", host_key["SecretAccessKey"])
    store = open_store(outputs["StoreUrl"], create=False)
    stats = Collector(CollectorConfig(queue_url=queue_url, wait_seconds=1, once=True), store).run()
    assert stats.deleted == len(messages) - len(got) and stats.store_errors == 0
    assert len(list(store.iter_findings())) == len(messages)
    assert _denied(_client("dynamodb", host_key).delete_table, TableName=table)
    # a collector host opening the table as a writer marks it indexed, then lists hosts through the index
    indexed = open_store(outputs["StoreUrl"])
    assert isinstance(indexed, store_dynamodb.DynamoDBStore) and indexed.indexed()
    assert [h.host_id for h in indexed.iter_hosts()] == ["i-cfn"]


def _audit_policy(physical: dict[str, str]) -> dict[str, dict[str, Any]]:
    doc = _for_emulator(
        boto3.client("iam", region_name="us-east-1").get_role_policy(
            RoleName=physical["AuditRole"], PolicyName="audit"
        )["PolicyDocument"]
    )
    return {s["Sid"]: s for s in doc["Statement"]}


def _assert_scheduled_audit(cfn: Any, stack: str, physical: dict[str, str], outputs: dict[str, str]) -> None:
    """The audit function runs daily: the rule targets it and may invoke it; its role reaches the named role."""
    lam = boto3.client("lambda", region_name="us-east-1")
    fn = lam.get_function(FunctionName=outputs["AuditFunctionName"])["Configuration"]
    assert fn["Handler"] == "keysweep.central.lambda_audit.handler" and fn["Timeout"] == 900
    assert fn["Role"] == outputs["AuditRoleArn"] and outputs["AuditRoleArn"].endswith(physical["AuditRole"])
    assert fn["Environment"]["Variables"]["KEYSWEEP_TABLE"] == outputs["TableName"]
    assert fn["Environment"]["Variables"]["KEYSWEEP_AUDIT_ROLE_NAME"] == "KeysweepAudit"
    events = boto3.client("events", region_name="us-east-1")
    rule_name = physical["AuditScheduleRule"].rsplit("/", 1)[-1].split("|")[0]
    rule = events.describe_rule(Name=rule_name)
    assert rule["ScheduleExpression"] == "rate(1 day)" and rule["State"] == "ENABLED"
    assert [t["Arn"] for t in events.list_targets_by_rule(Rule=rule_name)["Targets"]] == [fn["FunctionArn"]]
    [grant] = json.loads(lam.get_policy(FunctionName=fn["FunctionName"])["Policy"])["Statement"]
    assert grant["Principal"] == {"Service": "events.amazonaws.com"} and grant["Action"] == "lambda:InvokeFunction"
    assert grant["Condition"]["ArnLike"]["AWS:SourceArn"] == rule["Arn"]
    audit = _audit_policy(physical)
    assert audit["AssumeAuditRole"]["Resource"] == "arn:aws:iam::*:role/KeysweepAudit"
    assert "ReadOrganization" not in audit and "ImportAuditFindings" in audit


@pytest.mark.timeout(120)
def test_stack_with_a_kms_key(moto_server: Any) -> None:
    key_arn = boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["Arn"]
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="artefacts")
    cfn = _create_stack(
        "kskms",
        CodeBucket="artefacts",
        KmsKeyArn=key_arn,
        AuditSchedule="",
        AuditOrganization="true",
        AuditSecurityHub="false",
        AgentPrincipalArns="arn:aws:iam::123456789012:role/keysweep-agent-*",
    )
    described = cfn.describe_stacks(StackName="kskms")["Stacks"][0]
    assert described["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}
    sqs = boto3.client("sqs", region_name="us-east-1")
    attrs = sqs.get_queue_attributes(
        QueueUrl=sqs.get_queue_url(QueueName="kskms-findings")["QueueUrl"], AttributeNames=["All"]
    )["Attributes"]
    assert attrs["KmsMasterKeyId"] == key_arn
    iam = boto3.client("iam", region_name="us-east-1")
    arn = outputs["AgentKeyPolicyArn"]
    doc = _for_emulator(
        iam.get_policy_version(PolicyArn=arn, VersionId=iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"])[
            "PolicyVersion"
        ]["Document"]
    )
    assert [s["Resource"] for s in doc["Statement"]] == [key_arn]
    assert "CollectorKeyPolicyArn" in outputs
    # no schedule: the audit function is there to invoke by hand, with no rule and no grant to EventBridge
    physical = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cfn.list_stack_resources(StackName="kskms")["StackResourceSummaries"]
    }
    assert "AuditFunction" in physical
    assert not {"AuditScheduleRule", "AuditSchedulePermission"} & set(physical)
    assert boto3.client("events", region_name="us-east-1").list_rules()["Rules"] == []
    audit = _audit_policy(physical)
    assert set(audit) == {"ReadIam", "ReadOrganization", "ReadFleetTable", "ReadFleetIndex", "OwnLogs"}


def test_collector_unit_runs_the_collect_command() -> None:
    from keysweep.cli import build_parser

    unit = (ROOT / "packaging" / "central" / "keysweep-collect.service").read_text()
    [exec_start] = [ln.split("=", 1)[1] for ln in unit.splitlines() if ln.startswith("ExecStart=")]
    argv = (
        exec_start.replace("${KEYSWEEP_QUEUE_URL}", "https://sqs.eu-west-1.amazonaws.com/123456789012/q")
        .replace("${KEYSWEEP_DB}", "/var/lib/keysweep-collect/fleet.db")
        .split()
    )
    assert argv[0] == "/usr/bin/keysweep"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "collect" and not args.once and args.wait_seconds == 20
    assert args.db.startswith("/var/lib/keysweep-collect/")  # inside StateDirectory=, the only writable path
    assert "StateDirectory=keysweep-collect" in unit and "ProtectSystem=strict" in unit


@pytest.mark.timeout(180)
def test_audit_function_runs_with_only_its_role(moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scheduled audit, correlated and exported, with nothing but the audit role's policy (auth enforced)."""
    from keysweep.central import lambda_audit
    from keysweep.central.handler import MessageHandler, Outcome

    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="artefacts")
    cfn = _create_stack(
        "ksaudit", CodeBucket="artefacts", AgentPrincipalArns="arn:aws:iam::123456789012:role/keysweep-agent"
    )
    physical = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cfn.list_stack_resources(StackName="ksaudit")["StackResourceSummaries"]
    }
    iam = boto3.client("iam", region_name="us-east-1")
    iam.create_user(UserName="ci")
    on_host = iam.create_access_key(UserName="ci")["AccessKey"]["AccessKeyId"]
    store = open_store("dynamodb://ksaudit-fleet", create=False)
    message = M.finding_message(host_info=M.host("i-0aaaaaaaaaaaaaaa1", "web-1"), key_id=on_host)
    assert MessageHandler(store).handle(json.dumps(message)).outcome is Outcome.OK
    store.close()
    # the emulator matches Security Hub actions against resource "*" only (as DynamoDB): widened like those
    statements = [
        {**s, "Resource": "*"} if s["Sid"].startswith(("ImportAudit", "ReadAudit")) else s
        for s in _audit_policy(physical).values()
    ]
    key = _user_with(iam, "audit-function", inline={"Version": "2012-10-17", "Statement": statements})
    moto_server.enable_auth()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.setenv(lambda_audit.TABLE_ENV, "ksaudit-fleet")
    monkeypatch.setenv(lambda_audit.SECURITYHUB_ENV, "true")
    out = lambda_audit.handler({}, None)
    assert out["failed_accounts"] == [] and out["audited_accounts"] == ["123456789012"]
    assert out["checks"] == {"key-on-hosts": 1} and out["securityhub"] == {"imported": 1, "archived": 0, "failed": 0}
    # and nothing that changes IAM
    assert _denied(_client("iam", key).update_access_key, UserName="ci", AccessKeyId=on_host, Status="Inactive")
    assert _denied(
        _client("dynamodb", key).put_item, TableName="ksaudit-fleet", Item={"pk": {"S": "x"}, "sk": {"S": "y"}}
    )
