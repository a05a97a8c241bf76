"""keysweep cloud against moto's server: each service reader finds planted keys where AWS keeps them."""

from __future__ import annotations

import base64
import gzip
import io
import json
import zipfile
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

import boto3
import pytest
from keysweep.cli import main

from tests.support.accounts import client_in, member_account
from tests.support.moto_server import MotoServer
from tests.support.planted import Planted, planted_key

pytestmark = pytest.mark.timeout(120)

ACCOUNT = "123456789012"
REGION = "us-east-1"


def run_cloud(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    code = main(["cloud", "--format", "json", *args])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def by_key(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for f in doc["findings"]:
        out.setdefault(f["key_id"], []).append(f)
    return out


def creds_env(k: Planted) -> str:
    return f"aws_access_key_id = {k.key_id}\naws_secret_access_key = {k.secret}\n"


def role(name: str) -> str:
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    return boto3.client("iam").create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]


def zipped(name: str, text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(name, text)
    return buf.getvalue()


def test_lambda_every_version_and_its_package(moto_server: MotoServer, capsys: pytest.CaptureFixture[str]) -> None:
    old, new, in_code = planted_key(1), planted_key(2), planted_key(3)
    lam = boto3.client("lambda")
    exec_role = role("fn-exec")
    package = zipped("app/settings.py", f"ID = '{in_code.key_id}'\nSECRET = '{in_code.secret}'\n")
    lam.create_function(
        FunctionName="billing",
        Runtime="python3.12",
        Role=exec_role,
        Handler="h.h",
        Code={"ZipFile": package},
        Environment={"Variables": {"AWS_ACCESS_KEY_ID": old.key_id, "AWS_SECRET_ACCESS_KEY": old.secret}},
        Publish=True,
    )
    lam.update_function_configuration(
        FunctionName="billing", Environment={"Variables": {"LEGACY_ID": new.key_id, "LEGACY_SECRET": new.secret}}
    )
    # moto answers a pre-signed-looking Location it does not serve; put the package there in its S3 (public, as a
    # pre-signed URL would let it be read) and keysweep fetches it through its own S3 endpoint setting
    location = lam.get_function(FunctionName="billing")["Code"]["Location"]
    s3 = boto3.client("s3")
    bucket, key = location.split("//", 1)[1].split(".", 1)[0], location.rsplit("/", 1)[1]
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=key, Body=package, ACL="public-read")

    code, doc, err = run_cloud(capsys, "--region", REGION)
    assert code == 1, err
    found = by_key(doc)
    fn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:billing"
    (v1,) = found[old.key_id]
    assert v1["location"] == {
        "kind": "cloud",
        "line": 1,
        "offset": len("AWS_ACCESS_KEY_ID="),
        "service": "lambda",
        "resource_arn": f"{fn}:1",
        "field": "AWS_ACCESS_KEY_ID",
        "region": REGION,
        "account": ACCOUNT,
        "role_arn": exec_role,
    }
    assert v1["has_secret"] and v1["secret_redacted"] == old.secret[:4] + "…"
    (latest,) = found[new.key_id]
    assert latest["location"]["resource_arn"] == f"{fn}:$LATEST" and latest["location"]["field"] == "LEGACY_ID"
    assert latest["has_secret"]
    (packaged,) = found[in_code.key_id]  # both versions share the package: read once
    assert packaged["location"]["field"] == "Code" and packaged["location"]["member"] == "app/settings.py"
    assert packaged["has_secret"]
    assert doc["summary"]["archives_scanned"] == 1 and doc["summary"]["skips"] == []
    assert old.secret not in json.dumps(doc) and in_code.secret not in err


def test_ecs_task_role_every_active_revision(moto_server: MotoServer, capsys: pytest.CaptureFixture[str]) -> None:
    k1, k2, gone = planted_key(4), planted_key(5), planted_key(6)
    ecs = boto3.client("ecs")

    def register(k: Planted) -> str:
        return ecs.register_task_definition(
            family="worker",
            taskRoleArn=f"arn:aws:iam::{ACCOUNT}:role/worker-task",
            executionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/ecsTaskExecutionRole",
            containerDefinitions=[
                {
                    "name": "app",
                    "image": "app:1",
                    "memory": 128,
                    "environment": [
                        {"name": "AWS_ACCESS_KEY_ID", "value": k.key_id},
                        {"name": "AWS_SECRET_ACCESS_KEY", "value": k.secret},
                    ],
                }
            ],
        )["taskDefinition"]["taskDefinitionArn"]

    first, second, third = register(k1), register(k2), register(gone)
    ecs.deregister_task_definition(taskDefinition=third)
    code, doc, _ = run_cloud(capsys, "--region", REGION)
    found = by_key(doc)
    assert code == 1 and gone.key_id not in found
    assert found[k1.key_id][0]["location"]["resource_arn"] == first
    assert found[k2.key_id][0]["location"]["resource_arn"] == second
    loc = found[k2.key_id][0]["location"]
    assert loc["field"] == "app/AWS_ACCESS_KEY_ID"
    assert loc["role_arn"] == f"arn:aws:iam::{ACCOUNT}:role/worker-task"  # the task role, not the execution role


def test_ec2_user_data_launch_templates_and_configurations(
    moto_server: MotoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    plain, multipart, lt_v2, lc = planted_key(7), planted_key(8), planted_key(9), planted_key(10)
    ec2 = boto3.client("ec2")
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    iid = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, UserData="#!/bin/sh\n" + creds_env(plain))[
        "Instances"
    ][0]["InstanceId"]
    # cloud-init MIME multipart, gzipped, as `cloud-init devel make-mime | gzip` gives it
    mime = MIMEMultipart()
    mime.attach(MIMEText("#cloud-config\npackages: [nginx]\n", "cloud-config"))
    script = MIMEText(
        f"#!/bin/sh\nexport AWS_ACCESS_KEY_ID={multipart.key_id}\nexport AWS_SECRET_ACCESS_KEY={multipart.secret}\n",
        "x-shellscript",
    )
    script.add_header("Content-Disposition", "attachment", filename="setup.sh")
    mime.attach(script)
    ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, UserData=gzip.compress(mime.as_bytes()))
    ec2.create_launch_template(
        LaunchTemplateName="web",
        LaunchTemplateData={
            "UserData": base64.b64encode(b"#!/bin/sh\necho hi\n").decode(),
            "IamInstanceProfile": {"Name": "web"},
        },
    )
    ec2.create_launch_template_version(
        LaunchTemplateName="web",
        LaunchTemplateData={
            "UserData": base64.b64encode(creds_env(lt_v2).encode()).decode(),
            "IamInstanceProfile": {"Name": "web"},
        },
    )
    boto3.client("autoscaling").create_launch_configuration(
        LaunchConfigurationName="old-web",
        ImageId=ami,
        InstanceType="t3.micro",
        UserData=creds_env(lc),
        IamInstanceProfile="arn:aws:iam::123456789012:instance-profile/old-web",
    )

    code, doc, _ = run_cloud(capsys, "--region", REGION)
    found = by_key(doc)
    assert code == 1
    loc = found[plain.key_id][0]["location"]
    assert (loc["service"], loc["resource_arn"], loc["field"], loc["line"]) == (
        "ec2",
        f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{iid}",
        "UserData",
        2,
    )
    mp = found[multipart.key_id][0]
    assert mp["has_secret"] and mp["location"]["field"].startswith("UserData/setup.sh#")
    lt = found[lt_v2.key_id][0]["location"]
    assert lt["field"] == "versions/2/UserData"
    assert lt["role_arn"] == f"arn:aws:iam::{ACCOUNT}:instance-profile/web"
    lcl = found[lc.key_id][0]["location"]
    assert lcl["service"] == "autoscaling" and lcl["role_arn"].endswith(":instance-profile/old-web")
    assert doc["summary"]["items_scanned"]["ec2"] == 5  # plain user data, two MIME parts, two template versions


def test_ssm_cloudformation_codebuild_batch(moto_server: MotoServer, capsys: pytest.CaptureFixture[str]) -> None:
    ks = [planted_key(i) for i in range(20, 29)]
    ssm = boto3.client("ssm")
    ssm.put_parameter(Name="/ci/deploy", Type="String", Value=f"{ks[0].key_id}:{ks[0].secret}")
    ssm.put_parameter(Name="/ci/secure", Type="SecureString", Value=f"{ks[1].key_id}:{ks[1].secret}")
    template = {
        "Parameters": {"KeyId": {"Type": "String"}, "Hidden": {"Type": "String", "NoEcho": True}},
        "Resources": {"T": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {"Out": {"Value": ks[3].key_id}, "Tpl": {"Value": f"{ks[4].key_id}/{ks[4].secret}"}},
    }
    boto3.client("cloudformation").create_stack(
        StackName="app",
        TemplateBody=json.dumps(template),
        Parameters=[
            {"ParameterKey": "KeyId", "ParameterValue": ks[2].key_id},
            {"ParameterKey": "Hidden", "ParameterValue": ks[5].key_id},
        ],
    )
    boto3.client("s3").create_bucket(Bucket="src")
    boto3.client("codebuild").create_project(
        name="build",
        source={"type": "S3", "location": "src/app.zip"},
        artifacts={"type": "NO_ARTIFACTS"},
        environment={
            "type": "LINUX_CONTAINER",
            "image": "img",
            "computeType": "BUILD_GENERAL1_SMALL",
            "environmentVariables": [
                {"name": "DEPLOY_KEY_ID", "value": ks[6].key_id, "type": "PLAINTEXT"},
                {"name": "FROM_SSM", "value": "/ci/secure", "type": "PARAMETER_STORE"},
            ],
        },
        serviceRole=f"arn:aws:iam::{ACCOUNT}:role/build",
    )
    boto3.client("batch").register_job_definition(
        jobDefinitionName="nightly",
        type="container",
        containerProperties={
            "image": "img",
            "vcpus": 1,
            "memory": 128,
            "jobRoleArn": f"arn:aws:iam::{ACCOUNT}:role/nightly",
            "environment": [{"name": "BATCH_KEY", "value": ks[7].key_id}],
        },
    )

    code, doc, _ = run_cloud(capsys, "--region", REGION)
    found = by_key(doc)
    assert code == 1
    assert found[ks[0].key_id][0]["location"]["field"] == "/ci/deploy" and found[ks[0].key_id][0]["has_secret"]
    assert ks[1].key_id not in found  # SecureString: never decrypted
    fields = {f["location"]["field"] for k in (2, 3, 4) for f in found[ks[k].key_id]}
    assert {"Parameters/KeyId", "Outputs/Out", "Outputs/Tpl", "Template"} <= fields
    assert ks[5].key_id not in found  # NoEcho parameter
    cb = found[ks[6].key_id][0]["location"]
    assert (cb["service"], cb["field"], cb["role_arn"]) == (
        "codebuild",
        "DEPLOY_KEY_ID",
        f"arn:aws:iam::{ACCOUNT}:role/build",
    )
    bt = found[ks[7].key_id][0]["location"]
    assert (bt["service"], bt["field"], bt["role_arn"]) == (
        "batch",
        "BATCH_KEY",
        f"arn:aws:iam::{ACCOUNT}:role/nightly",
    )


def test_clean_account_exits_0_and_examples_do_not_count(
    moto_server: MotoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    boto3.client("ssm").put_parameter(Name="/doc", Type="String", Value="AKIAIOSFODNN7EXAMPLE")
    code, doc, err = run_cloud(capsys, "--region", REGION, "--region", "eu-west-1")
    assert code == 0 and doc["findings"] == []
    assert doc["summary"]["regions"] == 2 and doc["summary"]["items_scanned"] == {"ssm": 1}
    assert "read 1 accounts, 2 account-regions" in err


def test_default_regions_are_the_enabled_ones(moto_server: MotoServer) -> None:
    """Without --region every region DescribeRegions lists (the enabled ones) is read, in every account."""
    from keysweep.cloud.session import account_regions, base_session, resolve_accounts

    regions = sorted(r["RegionName"] for r in boto3.client("ec2").describe_regions()["Regions"])
    accounts, _ = resolve_accounts(base_session())
    targets, skips = account_regions(accounts, [])
    assert [(t.account, t.region) for t in targets] == [(ACCOUNT, r) for r in regions] and len(regions) > 10
    assert skips == []


def test_usage_errors(moto_server: MotoServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cloud", "--organization"]) == 2
    assert "--role-name" in capsys.readouterr().err
    assert main(["cloud", "--account", "12345"]) == 2
    assert main(["cloud", "--role-name", "r"]) == 2


def _reader_user(name: str, deny: list[str]) -> tuple[str, str]:
    iam = boto3.client("iam")
    iam.create_user(UserName=name)
    doc = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Effect": "Deny", "Action": deny, "Resource": "*"},
        ],
    }
    iam.put_user_policy(UserName=name, PolicyName="read", PolicyDocument=json.dumps(doc))
    k = iam.create_access_key(UserName=name)["AccessKey"]
    return k["AccessKeyId"], k["SecretAccessKey"]


def test_denied_service_is_skipped_and_the_rest_goes_on(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    in_ssm, in_lambda = planted_key(40), planted_key(41)
    boto3.client("ssm").put_parameter(Name="/k", Type="String", Value=in_ssm.key_id)
    boto3.client("lambda").create_function(
        FunctionName="f",
        Runtime="python3.12",
        Role=role("f"),
        Handler="h.h",
        Code={"ZipFile": zipped("h.py", "")},
        Environment={"Variables": {"K": in_lambda.key_id}},
    )
    key_id, secret = _reader_user("auditor", ["lambda:*", "ecs:ListTaskDefinitions"])
    moto_server.enable_auth()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    code, doc, err = run_cloud(capsys, "--region", REGION)
    assert code == 1 and list(by_key(doc)) == [in_ssm.key_id]
    # moto's denial of these JSON/REST calls has no parseable code: the reason is then the HTTP status
    skips = [(s["service"], s["reason"]) for s in doc["summary"]["skips"]]  # once each, though two readers hit it
    assert skips == [("lambda", "HTTP 403 (ListFunctions)"), ("ecs", "HTTP 403 (ListTaskDefinitions)")]
    assert all(s["account"] == ACCOUNT and s["region"] == REGION for s in doc["summary"]["skips"])
    assert "skipped: lambda in 123456789012 us-east-1: HTTP 403 (ListFunctions)" in err


def test_organization_assumes_the_role_in_each_account(
    moto_server: MotoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    member = member_account("member")
    in_member, in_own = planted_key(42), planted_key(43)
    client_in(member, "ssm").put_parameter(Name="/m", Type="String", Value=in_member.key_id)
    boto3.client("ssm").put_parameter(Name="/o", Type="String", Value=in_own.key_id)
    code, doc, err = run_cloud(capsys, "--organization", "--role-name", "Audit", "--region", REGION)
    found = by_key(doc)
    assert code == 1, err
    assert found[in_member.key_id][0]["location"]["account"] == member
    assert found[in_member.key_id][0]["location"]["resource_arn"] == f"arn:aws:ssm:{REGION}:{member}:parameter/m"
    assert found[in_own.key_id][0]["location"]["account"] == ACCOUNT
    assert doc["summary"]["accounts"] == 2
    code, doc, _ = run_cloud(capsys, "--account", member, "--role-name", "Audit", "--region", REGION)
    assert list(by_key(doc)) == [in_member.key_id]


def test_verify_proves_which_cloud_keys_are_live(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    iam = boto3.client("iam")
    iam.create_user(UserName="leaky")
    live = iam.create_access_key(UserName="leaky")["AccessKey"]
    dead = planted_key(44)  # well-formed, unknown to the emulator
    boto3.client("ssm").put_parameter(
        Name="/live", Type="String", Value=f"{live['AccessKeyId']}:{live['SecretAccessKey']}"
    )
    boto3.client("ssm").put_parameter(Name="/dead", Type="String", Value=f"{dead.key_id}:{dead.secret}")
    key_id, secret = _reader_user("auditor", ["lambda:*"])
    moto_server.enable_auth()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    code, doc, err = run_cloud(capsys, "--region", REGION, "--verify", "--state-dir", str(tmp_path / "state"))
    assert code == 1, err
    found = by_key(doc)
    v = found[live["AccessKeyId"]][0]["verification"]
    assert (v["status"], v["arn"], v["principal_type"]) == ("live", f"arn:aws:iam::{ACCOUNT}:user/leaky", "iam-user")
    assert found[dead.key_id][0]["verification"]["status"] == "invalid"
    assert doc["summary"]["by_verification"] == {"live": 1, "invalid": 1}
    assert live["SecretAccessKey"] not in json.dumps(doc) + err


class _ThrottlingProxy:
    """In front of moto: the first ``count`` calls of ``operation`` (JSON protocol) answer ThrottlingException."""

    def __init__(self, upstream: str, operation: str, count: int) -> None:
        import http.client
        import http.server
        import threading
        import urllib.parse

        self.throttled = 0
        proxy = self
        host = urllib.parse.urlsplit(upstream)

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("X-Amz-Target", "").endswith("." + operation) and proxy.throttled < count:
                    proxy.throttled += 1
                    status, data = 400, b'{"__type":"ThrottlingException","message":"Rate exceeded"}'
                else:
                    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
                    conn.request("POST", self.path, body, {k: v for k, v in self.headers.items()})
                    resp = conn.getresponse()
                    status, data = resp.status, resp.read()
                    conn.close()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_throttling_backs_off_and_the_read_completes(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    k = planted_key(45)
    boto3.client("ssm").put_parameter(Name="/k", Type="String", Value=k.key_id)
    proxy = _ThrottlingProxy(moto_server.endpoint, "DescribeParameters", 3)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", proxy.endpoint)
        code, doc, err = run_cloud(capsys, "--region", REGION)
    finally:
        proxy.close()
    assert proxy.throttled == 3
    assert code == 1 and list(by_key(doc)) == [k.key_id] and doc["summary"]["skips"] == [], err


def test_an_unreadable_layer_is_a_skip_with_its_reason(
    moto_server: MotoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    lam = boto3.client("lambda")
    layer = lam.publish_layer_version(LayerName="shared", Content={"ZipFile": zipped("python/x.py", "")})[
        "LayerVersionArn"
    ]
    for name in ("a", "b"):
        lam.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=role(f"r-{name}"),
            Handler="h.h",
            Code={"ZipFile": zipped("h.py", "")},
            Layers=[layer],
        )
    code, doc, err = run_cloud(capsys, "--region", REGION)
    # moto answers a layer's content location as "s3://" (nothing to fetch): the layer is looked up and
    # reported as not read, with the reason
    reasons = [s["reason"] for s in doc["summary"]["skips"]]
    assert reasons.count("no-package-location (Content)") == 1, err
    assert code == 0


def test_a_refused_per_resource_call_is_tried_once_and_the_rest_goes_on(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.recording_proxy import recording_proxy

    k = planted_key(46)
    ec2 = boto3.client("ec2")
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    ec2.run_instances(ImageId=ami, MinCount=3, MaxCount=3, UserData=k.key_id)
    ec2.create_launch_template(
        LaunchTemplateName="web", LaunchTemplateData={"UserData": base64.b64encode(k.key_id.encode()).decode()}
    )
    key_id, secret = _reader_user("auditor", ["ec2:DescribeInstanceAttribute"])
    moto_server.enable_auth()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with recording_proxy(moto_server.endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", proxy.endpoint)
        code, doc, err = run_cloud(capsys, "--region", REGION)
        asked = [r for r in proxy.snapshot() if b"Action=DescribeInstanceAttribute" in r.body]
    assert len(asked) == 1  # refused once: the other two instances are not asked
    # (AWS's code is UnauthorizedOperation, moto's AccessDenied; moto also refuses an IAM user's Lambda calls)
    ec2_skips = [s["reason"] for s in doc["summary"]["skips"] if s["service"] == "ec2"]
    assert len(ec2_skips) == 1 and ec2_skips[0].endswith(" (DescribeInstanceAttribute)"), err
    (found,) = doc["findings"]  # the launch template is still read
    assert code == 1 and found["location"]["field"] == "versions/1/UserData"
