"""The pieces of keysweep cloud that need no AWS: user data decoding (bounded), variable blocks, package URLs."""

from __future__ import annotations

import base64
import gzip

import pytest
from keysweep.cloud import packages, userdata
from keysweep.cloud.items import Resource, variables_item

pytestmark = pytest.mark.timeout(60)


def test_user_data_plain_gzip_and_not_base64() -> None:
    script = b"#!/bin/sh\necho hi\n"
    assert userdata.parts(userdata.decode_base64(base64.b64encode(script).decode())) == [("", script)]
    assert userdata.parts(userdata.decode_base64(base64.b64encode(gzip.compress(script)))) == [("", script)]
    assert userdata.decode_base64("not base64 at all!") == b"not base64 at all!"
    assert userdata.decode_base64(None) == b""


def test_a_gzip_bomb_in_user_data_expands_only_to_the_bound() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))
    assert len(bomb) < 100_000
    ((_, data),) = userdata.parts(bomb)
    assert len(data) == userdata.MAX_EXPANDED


def test_variables_item_names_each_variable_by_line() -> None:
    r = Resource("ecs", "arn:task", "eu-west-1", "123456789012")
    item = variables_item(r, [("A", "1"), ("MULTI", "x\ny\nz"), ("B", "2")], "app/")
    assert item is not None and item.data == b"A=1\nMULTI=x\ny\nz\nB=2\n"
    assert [item.field_at(n) for n in (1, 2, 4, 5)] == ["app/A", "app/MULTI", "app/MULTI", "app/B"]
    assert variables_item(r, []) is None


def test_package_urls_go_through_keysweeps_own_s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "https://awslambda-eu-west-1-tasks.s3.eu-west-1.amazonaws.com/snapshots/123/fn-abc?X-Amz-Signature=s"
    assert packages._through_endpoint(url) == url
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9/")
    assert packages._through_endpoint(url) == (
        "http://127.0.0.1:9/awslambda-eu-west-1-tasks/snapshots/123/fn-abc?X-Amz-Signature=s"
    )
    with pytest.raises(packages.PackageError) as why:
        packages.fetch("s3://", max_bytes=10)
    assert why.value.reason == "no-package-location"
    with pytest.raises(packages.PackageError) as why:  # nothing listens on port 9: unreachable, URL not in the reason
        packages.fetch(url, max_bytes=10, timeout=2)
    assert why.value.reason.startswith("package-unreachable") and "Signature" not in str(why.value)


def test_no_echo_parameters_of_json_and_yaml_templates() -> None:
    from keysweep.cloud.cloudformation import _no_echo

    yaml_template = (
        "Parameters:\n  Hidden: {Type: String, NoEcho: true}\n  Shown: {Type: String}\n"
        "  Quoted:\n    Type: String\n    NoEcho: 'TRUE'\n"
        "Resources:\n  T:\n    Type: AWS::SNS::Topic\n    Properties: {TopicName: !Ref Shown}\n"
    )
    assert _no_echo(yaml_template) == {"Hidden", "Quoted"}
    assert _no_echo({"Parameters": {"H": {"NoEcho": "true"}, "S": {}}}) == {"H"}
    assert _no_echo("a: [unclosed") == set() and _no_echo("- just a list") == set()
