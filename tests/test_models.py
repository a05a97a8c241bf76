from __future__ import annotations

import pickle

import pytest
from keysweep.models import Finding, Location, Secret

PLAIN = "Zq3vY8pL0mN2bX7cR5tK9wE1sD4fG6hJ8kL0pQ2z"


def test_secret_never_shows_in_repr_or_str():
    s = Secret(PLAIN)
    assert PLAIN not in repr(s)
    assert PLAIN not in str(s)
    assert PLAIN not in f"{s}"
    assert s.reveal() == PLAIN


def test_secret_refuses_pickling():
    with pytest.raises(TypeError):
        pickle.dumps(Secret(PLAIN))


def test_finding_serialisation_and_repr_hold_no_secret():
    f = Finding(
        rule="aws-access-key-id",
        key_id="AKIAXYZDQCEN4B6JSJQI",
        location=Location(kind="file", path="/tmp/x", line=3),
        fingerprint="f" * 32,
        has_secret=True,
        secret=Secret(PLAIN),
    )
    assert PLAIN not in repr(f)
    assert PLAIN not in str(f.to_dict())
    assert f.to_dict()["location"] == {"kind": "file", "path": "/tmp/x", "line": 3}
    assert f.without_secret().secret is None


def test_moto_server_answers_over_http(moto_server):
    import boto3

    sts = boto3.client("sts")
    ident = sts.get_caller_identity()
    assert ident["Account"].isdigit() and len(ident["Account"]) == 12
    assert moto_server.endpoint in sts.meta.endpoint_url
