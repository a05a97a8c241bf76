from __future__ import annotations

import base64
import json
import socket

import pytest
from keysweep.context import detect_context
from keysweep.errors import ConfigError
from keysweep.stage_config import ContextConfig

from tests.support.metadata_server import (
    Instance,
    blackhole_endpoint,
    closed_endpoint,
    ecs_metadata_server,
    ecs_task_document,
    imds_server,
)

pytestmark = pytest.mark.timeout(30)


def _config(tmp_path, imds: str, **kw) -> ContextConfig:
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("4c4c4544003a3b10804cb2c04f4e4d32\n")
    defaults = dict(
        imds_endpoint=imds,
        imds_timeout=0.5,
        kubernetes_serviceaccount_dir=str(tmp_path / "sa"),
        kubernetes_podinfo_dir=str(tmp_path / "podinfo"),
        machine_id_path=str(machine_id),
    )
    defaults.update(kw)
    return ContextConfig(**defaults)


def test_ec2_with_instance_profile_through_imdsv2(tmp_path):
    with imds_server() as imds:
        ctx = detect_context(_config(tmp_path, imds.endpoint), environ={})
        requested = imds.paths_requested()
        gets = [r for r in imds.requests if r[0] == "GET"]
    assert ctx.kind == "ec2"
    assert ctx.host_id == ctx.instance_id == "i-0abc123def4567890"
    assert (ctx.account_id, ctx.region, ctx.availability_zone) == ("123456789012", "eu-west-1", "eu-west-1b")
    assert ctx.ami_id == "ami-0123456789abcdef0"
    assert ctx.instance_profile_arn == "arn:aws:iam::123456789012:instance-profile/web-profile"
    assert (ctx.private_ip, ctx.public_ip) == ("172.31.20.7", "54.170.12.34")
    assert "/latest/meta-data/local-ipv4" in requested and "/latest/meta-data/public-ipv4" in requested
    assert ctx.errors == ()
    # IMDSv2: one token, sent on every GET; live credentials are never requested
    assert requested[0] == "/latest/api/token"
    assert all(h.get("x-aws-ec2-metadata-token") for _, _, h in gets)
    assert not any("security-credentials" in p for p in requested)
    assert all(h["user-agent"].startswith("keysweep/") for _, _, h in imds.requests)


def test_ec2_without_instance_profile_nor_public_address(tmp_path):
    with imds_server(Instance(instance_profile_arn=None, public_ipv4=None, local_ipv4="10.20.30.40")) as imds:
        ctx = detect_context(_config(tmp_path, imds.endpoint), environ={})
    assert ctx.kind == "ec2"
    assert ctx.instance_profile_arn is None
    assert (ctx.private_ip, ctx.public_ip) == ("10.20.30.40", None)
    assert ctx.errors == ()  # a 404 on iam/info or public-ipv4 means "none", not an error


def test_imds_address_that_is_not_an_ip_literal_is_not_reported(tmp_path):
    with imds_server(Instance(local_ipv4="10.0.0.1\n<script>", public_ipv4=" 54.170.12.34 ")) as imds:
        ctx = detect_context(_config(tmp_path, imds.endpoint), environ={})
    assert (ctx.private_ip, ctx.public_ip) == (None, "54.170.12.34")


def _expected_interface_addresses() -> set[str]:
    """This machine's addresses a peer could see, read from psutil independently of the agent's code."""
    import ipaddress

    import psutil

    out = set()
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = ipaddress.ip_address(a.address.split("%")[0])
            if not (ip.is_loopback or ip.is_link_local):
                out.add(str(ip))
    return out


def test_on_premises_context_lists_this_machines_interface_addresses(tmp_path):
    ctx = detect_context(_config(tmp_path, closed_endpoint()), environ={})
    assert ctx.kind == "on-premises"
    expected = _expected_interface_addresses()
    assert len(ctx.addresses) == min(len(expected), 16)
    assert set(ctx.addresses) <= expected
    if len(expected) <= 16:
        assert set(ctx.addresses) == expected
    assert not {"127.0.0.1", "::1"} & set(ctx.addresses)
    assert not any(a.startswith("fe80:") for a in ctx.addresses)
    assert (ctx.private_ip, ctx.public_ip) == (None, None)  # those come from IMDS only
    assert ctx.to_dict()["addresses"] == list(ctx.addresses)


def test_ec2_context_also_lists_interface_addresses(tmp_path):
    with imds_server() as imds:
        ctx = detect_context(_config(tmp_path, imds.endpoint), environ={})
    assert set(ctx.addresses) == _expected_interface_addresses()


def test_reported_addresses_are_bounded_deduplicated_and_public_first():
    from keysweep.ipaddr import MAX_ADDRESSES, reachable_addresses

    many = [f"10.1.{i // 250}.{i % 250 + 1}" for i in range(40)]
    got = reachable_addresses(
        [
            *many,
            "10.1.0.1",
            "127.0.0.1",
            "::1",
            "fe80::1%eth0",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "2001:DB8:0:0::5",
            "81.2.69.160",
            "2a05:d018::1",
            "not-an-address",
            "",
        ]
    )
    assert len(got) == MAX_ADDRESSES == 16
    assert got[:2] == ("81.2.69.160", "2a05:d018::1")  # routable first: the bound never drops them for a bridge's
    assert got[2:] == tuple(many[:14])  # then by family and numeric value (10.1.0.10 after 10.1.0.9)
    assert reachable_addresses(["2001:DB8:0:0::5", "2001:db8::5", "fd00::2%eth0"]) == ("2001:db8::5", "fd00::2")


@pytest.mark.timeout(5)  # the metadata timeout is 0.3 s: anything near this bound is a hang
def test_no_metadata_service_gives_up_quickly_and_says_so(tmp_path):
    with blackhole_endpoint() as hole:
        ctx = detect_context(_config(tmp_path, hole, imds_timeout=0.3), environ={})
    assert ctx.kind == "on-premises"
    assert any("metadata unreachable" in e for e in ctx.errors)
    # the raw machine-id never leaves the host, a keyed hash of it is the stable host id
    assert ctx.host_id.startswith("machine-") and "4c4c4544" not in ctx.host_id
    again = detect_context(_config(tmp_path, closed_endpoint()), environ={})
    assert again.host_id == ctx.host_id and again.kind == "on-premises"


def test_no_machine_id_falls_back_to_hostname(tmp_path):
    cfg = _config(tmp_path, closed_endpoint(), machine_id_path=str(tmp_path / "absent"))
    ctx = detect_context(cfg, environ={})
    assert ctx.host_id == socket.gethostname() == ctx.hostname


def test_ecs_task_metadata_and_task_role(tmp_path):
    with ecs_metadata_server(ecs_task_document()) as ecs:
        env = {"ECS_CONTAINER_METADATA_URI_V4": ecs.endpoint + "/v4", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/x"}
        ctx = detect_context(_config(tmp_path, closed_endpoint()), environ=env)
    assert ctx.kind == "ecs"
    assert (
        ctx.task_arn == ctx.host_id == "arn:aws:ecs:us-east-2:111122223333:task/prod/0c8f3e1b2a4d4c6e8f0a1b2c3d4e5f60"
    )
    assert ctx.cluster == "arn:aws:ecs:us-east-2:111122223333:cluster/prod"
    assert (ctx.task_family, ctx.task_revision, ctx.launch_type) == ("billing-worker", "7", "FARGATE")
    assert (ctx.account_id, ctx.region, ctx.availability_zone) == ("111122223333", "us-east-2", "us-east-2a")
    assert ctx.task_role_present is True


def test_ecs_without_task_role_and_unreachable_metadata(tmp_path):
    env = {"ECS_CONTAINER_METADATA_URI_V4": closed_endpoint() + "/v4"}
    ctx = detect_context(_config(tmp_path, closed_endpoint()), environ=env)
    assert ctx.kind == "ecs"
    assert ctx.task_role_present is False
    assert any(e.startswith("ecs: task metadata unreachable") for e in ctx.errors)
    assert ctx.host_id.startswith("machine-")


def _service_account_token(namespace: str, name: str) -> str:
    def seg(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return ".".join([seg({"alg": "RS256"}), seg({"sub": f"system:serviceaccount:{namespace}:{name}"}), "c2lnbmF0dXJl"])


def test_eks_irsa_from_downward_api_files(tmp_path):
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "namespace").write_text("payments")
    token = _service_account_token("payments", "ledger-sa")
    (sa / "token").write_text(token)
    env = {
        "KUBERNETES_SERVICE_HOST": "10.100.0.1",
        "HOSTNAME": "ledger-7d9f8-abcde",
        "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/ledger-irsa",
        "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
    }
    with blackhole_endpoint() as hole:  # hop limit 1: IMDS does not answer inside the pod
        ctx = detect_context(_config(tmp_path, hole, imds_timeout=0.2), environ=env)
    assert ctx.kind == "eks"
    assert (ctx.namespace, ctx.pod, ctx.service_account) == ("payments", "ledger-7d9f8-abcde", "ledger-sa")
    assert ctx.host_id == "payments/ledger-7d9f8-abcde"
    assert ctx.irsa_role_arn == "arn:aws:iam::123456789012:role/ledger-irsa"
    assert ctx.pod_identity is False
    assert token not in json.dumps(ctx.to_dict())


def test_eks_pod_identity_from_env_and_podinfo(tmp_path):
    podinfo = tmp_path / "podinfo"
    podinfo.mkdir()
    (podinfo / "name").write_text("api-0\n")
    (podinfo / "namespace").write_text("web\n")
    (podinfo / "serviceaccount").write_text("api\n")
    env = {
        "KUBERNETES_SERVICE_HOST": "10.100.0.1",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.23/v1/credentials",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/token",
    }
    ctx = detect_context(_config(tmp_path, closed_endpoint(), cluster_name="prod-eks"), environ=env)
    assert ctx.kind == "eks" and ctx.cluster == "prod-eks"
    assert (ctx.namespace, ctx.pod, ctx.service_account) == ("web", "api-0", "api")
    assert ctx.pod_identity is True and ctx.irsa_role_arn is None


def test_plain_kubernetes_without_aws(tmp_path):
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "POD_NAME": "p", "POD_NAMESPACE": "ns"}
    ctx = detect_context(_config(tmp_path, closed_endpoint()), environ=env)
    assert ctx.kind == "kubernetes"
    assert ctx.host_id == "ns/p"


def test_kubernetes_node_on_ec2_is_eks(tmp_path):
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "POD_NAME": "p", "POD_NAMESPACE": "ns"}
    with imds_server() as imds:
        ctx = detect_context(_config(tmp_path, imds.endpoint), environ=env)
    assert ctx.kind == "eks"
    assert ctx.instance_id == "i-0abc123def4567890"
    assert ctx.host_id == "ns/p"


def test_detected_context_makes_a_valid_message(tmp_path):
    import copy

    import jsonschema
    from keysweep.central.validate import message_validator
    from keysweep.report.message import heartbeat_message
    from keysweep.schemas import message_schema

    validator = jsonschema.Draft202012Validator(message_schema())
    collector = message_validator()  # the collector's own validator must accept what the agent sends
    with imds_server() as imds:
        ec2 = detect_context(_config(tmp_path, imds.endpoint), environ={})
    on_prem = detect_context(_config(tmp_path, closed_endpoint()), environ={})
    for ctx in (ec2, on_prem):
        msg = heartbeat_message(ctx, stats=None, findings=[], started_at=0.0, finished_at=1.0, spool={})
        validator.validate(msg)
        assert collector.errors(msg) == []
        assert msg["host"]["addresses"] == list(ctx.addresses)
    assert msg["host"]["private_ip"] is None
    for field_name, bad in (
        ("private_ip", "10.0.0.1 "),
        ("public_ip", "999.1.1.1"),
        ("addresses", ["x"]),
        ("addresses", [f"10.0.0.{i}" for i in range(17)]),
    ):
        wrong = copy.deepcopy(msg)
        wrong["host"][field_name] = bad
        assert not validator.is_valid(wrong), (field_name, bad)
        assert collector.errors(wrong), (field_name, bad)


def test_lambda_from_environment_without_network(tmp_path):
    with blackhole_endpoint() as hole:
        imds_hit = _config(tmp_path, hole, imds_timeout=5)  # would take 5 s if it were asked
        env = {"AWS_LAMBDA_FUNCTION_NAME": "invoice-export", "AWS_REGION": "eu-central-1"}
        ctx = detect_context(imds_hit, environ=env)
    assert ctx.kind == "lambda"
    assert ctx.function_name == "invoice-export" and ctx.region == "eu-central-1"
    assert ctx.host_id == "lambda:eu-central-1:invoice-export"
    assert ctx.errors == ()


def test_imds_v1_only_or_broken_service_is_not_ec2(tmp_path):
    import http.server
    import threading

    class V1Only(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):  # noqa: N802
            self.send_response(405)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), V1Only)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        ctx = detect_context(_config(tmp_path, f"http://127.0.0.1:{srv.server_port}"), environ={})
    finally:
        srv.shutdown()
        srv.server_close()
    assert ctx.kind == "on-premises"
    assert "imds: token request answered HTTP 405" in ctx.errors


def test_sdk_metadata_settings_are_honoured(tmp_path):
    with imds_server() as imds:
        env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.endpoint}
        ctx = detect_context(_config(tmp_path, None), environ=env)
        assert ctx.kind == "ec2"
        off = detect_context(_config(tmp_path, None), environ={**env, "AWS_EC2_METADATA_DISABLED": "true"})
        assert off.kind == "on-premises" and off.errors == ()
        assert len([r for r in imds.requests if r[0] == "PUT"]) == 1


def test_disabled_detection_asks_nothing(tmp_path):
    with imds_server() as imds:
        ctx = detect_context(_config(tmp_path, imds.endpoint, enabled=False), environ={})
        assert imds.requests == []
    assert ctx.kind == "unknown"
    assert (ctx.addresses, ctx.private_ip, ctx.public_ip) == ((), None, None)


def test_http_proxy_in_environment_is_not_used_for_metadata(tmp_path, monkeypatch):
    monkeypatch.setenv("http_proxy", closed_endpoint())
    monkeypatch.setenv("HTTP_PROXY", closed_endpoint())
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with imds_server() as imds:
        ctx = detect_context(_config(tmp_path, imds.endpoint), environ={})
    assert ctx.kind == "ec2"


def test_config_from_mapping_names_bad_keys():
    cfg = ContextConfig.from_mapping({"imds_endpoint": "http://127.0.0.1:9", "imds_timeout": "250ms"})
    assert cfg.imds_endpoint == "http://127.0.0.1:9" and cfg.imds_timeout == 0.25
    with pytest.raises(ConfigError) as err:
        ContextConfig.from_mapping({"imds_endpont": "x", "imds_token_ttl": 0})
    assert "imds_endpont" in str(err.value) and "imds_token_ttl" in str(err.value)


def _live_finding():
    from keysweep.models import Finding, Location, Verification

    return Finding(
        rule="aws-access-key-pair",
        key_id="AKIAXYZDQCEN4B6JSJQI",
        fingerprint="0" * 32,
        has_secret=True,
        location=Location(kind="file", path="/srv/app/.env", line=2),
        verification=Verification(
            status="live", account="534261010715", arn="arn:aws:iam::534261010715:user/ci", principal_type="iam-user"
        ),
    )


@pytest.mark.parametrize(
    ("scenario", "kind"),
    [
        ("ec2-profile", "ec2-existing-profile"),
        ("ec2-bare", "ec2-new-instance-profile"),
        ("ecs", "ecs-task-role"),
        ("eks-irsa", "eks-irsa-existing"),
        ("lambda", "lambda-execution-role"),
        ("none", "roles-anywhere"),
    ],
)
def test_detected_context_drives_the_suggestion(tmp_path, scenario, kind):
    from keysweep.suggest import suggest

    profile = "arn:aws:iam::534261010715:instance-profile/web" if scenario == "ec2-profile" else None
    env: dict[str, str] = {}
    with imds_server(Instance(instance_profile_arn=profile)) as imds, ecs_metadata_server() as ecs:
        endpoint = imds.endpoint if scenario.startswith("ec2") else closed_endpoint()
        if scenario == "ecs":
            env = {"ECS_CONTAINER_METADATA_URI_V4": ecs.endpoint + "/v4"}
        elif scenario == "eks-irsa":
            env = {
                "KUBERNETES_SERVICE_HOST": "10.0.0.1",
                "POD_NAME": "p",
                "POD_NAMESPACE": "ns",
                "AWS_ROLE_ARN": "arn:aws:iam::534261010715:role/app-irsa",
                "AWS_WEB_IDENTITY_TOKEN_FILE": "/t",
            }
        elif scenario == "lambda":
            env = {"AWS_LAMBDA_FUNCTION_NAME": "export"}
        ctx = detect_context(_config(tmp_path, endpoint), environ=env)
    s = suggest(_live_finding(), ctx)
    assert s.kind == kind
    if scenario == "ec2-bare":
        assert any("--instance-id i-0abc123def4567890" in c for c in s.commands)
    if scenario == "ec2-profile":
        assert any("--instance-profile-name web " in c for c in s.commands)
    if scenario == "ecs":
        assert any("--task-definition billing-worker" in c for c in s.commands)
    if scenario == "eks-irsa":
        assert all("app-irsa" in c for c in s.commands if "--role-name" in c)
