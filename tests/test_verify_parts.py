"""The pieces of verification that need no network: pacing, the canary list and gate, the cache, the config."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from keysweep import keyid
from keysweep.canary import CANARY_FILE, CanaryGate, builtin_canary_accounts, parse_canary_accounts
from keysweep.errors import ConfigError, RuleError
from keysweep.models import Verification
from keysweep.ratelimit import KeySpacing, TokenBucket
from keysweep.stage_config import VerifyConfig
from keysweep.verify import principal_type
from keysweep.verify_cache import CACHE_FILE, VerifyCache

from tests.support.verify_findings import finding

ISSUE_CANARY_ACCOUNTS = """
052310077262 171436882533 534261010715 595918472158 717712589309 819147034852 992382622183 730335385048 266735846894
893192397702 044858866125 251535659677 344043088457 351906852752 390477818340 426127672474 427150556519 439872796651
445142720921 465867158099 637958123769 693412236332 732624840810 735421457923 959235150393 982842642351 528757803018
538784191382 729780141977
""".split()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


# -- pacing --------------------------------------------------------------------------------------------------------
def test_token_bucket_spaces_calls_at_the_rate():
    clock = FakeClock()
    bucket = TokenBucket(5.0, clock=clock, sleep=clock.sleep)
    for _ in range(6):
        bucket.acquire()
    assert clock.slept == pytest.approx([0.2] * 5)
    clock.now += 10  # idle time refills at most `burst` tokens
    bucket.acquire()
    bucket.acquire()
    assert clock.slept[-1] == pytest.approx(0.2)


def test_token_bucket_reservations_queue_concurrent_callers():
    clock = FakeClock()
    bucket = TokenBucket(2.0, clock=clock)
    waits = [bucket.reserve() for _ in range(4)]  # four threads arriving at the same instant
    assert waits == pytest.approx([0.0, 0.5, 1.0, 1.5])


def test_key_spacing_applies_per_key_only():
    clock = FakeClock()
    spacing = KeySpacing(5.0, clock=clock)
    assert spacing.reserve("AKIA-A") == 0
    assert spacing.reserve("AKIA-B") == 0
    assert spacing.reserve("AKIA-A") == pytest.approx(5.0)
    assert spacing.reserve("AKIA-A") == pytest.approx(10.0)
    clock.now += 30
    assert spacing.reserve("AKIA-A") == 0
    clock.now += 2
    spacing.done("AKIA-A")  # a slow answer: the next use waits the full interval from here
    assert spacing.reserve("AKIA-A") == pytest.approx(5.0)


@pytest.mark.parametrize("bad", [0, -1])
def test_pacing_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        TokenBucket(bad)


# -- canary list and gate --------------------------------------------------------------------------------------------
def test_builtin_canary_list_is_exactly_the_known_accounts():
    assert len(ISSUE_CANARY_ACCOUNTS) == 29
    assert builtin_canary_accounts() == frozenset(ISSUE_CANARY_ACCOUNTS)


@pytest.mark.parametrize(
    "key_id, account",
    [
        ("AKIAXYZDQCEN4B6JSJQI", "534261010715"),
        ("AKIASP2TPHJSQH3FJRUX", "171436882533"),
        ("AKIAYVP4CIPPERUVIFXG", "595918472158"),
    ],
)
def test_known_canary_key_ids_are_held_back(key_id, account):
    gate = CanaryGate.build()
    f = finding(key_id, "S" * 40)
    assert keyid.decode_account(key_id) == account
    assert gate.reason(f, f.account_id) == "canary-account"


def test_gate_lets_ordinary_keys_through_and_honours_configuration():
    gate = CanaryGate.build(extra_accounts=["123456789012"], profiles=["prod-backup"], key_ids=["AKIAQQQQRRRRSSSSTTT3"])
    assert gate.reason(finding("AKIAQQQQRRRRSSSSTTT2", "S" * 40), "210987654321") is None
    assert gate.reason(finding("AKIAQQQQRRRRSSSSTTT2", "S" * 40), "123456789012") == "canary-account"
    assert gate.reason(finding("AKIAQQQQRRRRSSSSTTT2", "S" * 40, profile="prod-backup"), None) == "canary-profile"
    assert gate.reason(finding("AKIAQQQQRRRRSSSSTTT2", "S" * 40, profile="default"), None) is None
    assert gate.reason(finding("AKIAQQQQRRRRSSSSTTT3"), None) == "canary-key-id"
    assert (
        gate.reason(finding("AKIAQQQQRRRRSSSSTTT2", profile_kind="canary", profile="x"), None) == "honeytoken-profile"
    )


@pytest.mark.parametrize(
    "text, field",
    [
        ("accounts: [{id: 52310077262}]", "accounts[0].id"),  # unquoted: YAML ate the leading zero
        ("accounts: [{id: '05231007726'}]", "accounts[0].id"),
        ("accounts: {id: '052310077262'}", "'accounts'"),
        ("accounts: [", "YAML"),
    ],
)
def test_canary_file_errors_name_the_file_and_field(text, field):
    with pytest.raises(RuleError) as err:
        parse_canary_accounts(text, source=CANARY_FILE)
    assert CANARY_FILE in str(err.value) and field in str(err.value)


# -- cache ---------------------------------------------------------------------------------------------------------
TTLS = {"live": 100, "invalid": 700, "unknown": 0}


def test_cache_entries_expire_per_status(tmp_path: Path):
    clock = FakeClock()
    cache = VerifyCache(tmp_path / CACHE_FILE, TTLS, clock=clock)
    cache.put("k-live", Verification("live", account="210987654321", arn="arn:aws:iam::210987654321:user/x"))
    cache.put("k-invalid", Verification("invalid"))
    cache.put("k-unknown", Verification("unknown", reason="timeout"))
    cache.save()
    clock.now += 50
    reloaded = VerifyCache(tmp_path / CACHE_FILE, TTLS, clock=clock)
    assert reloaded.get("k-live") == Verification(
        "live", account="210987654321", arn="arn:aws:iam::210987654321:user/x", cached=True
    )
    assert reloaded.get("k-unknown") is None
    clock.now += 100
    assert reloaded.get("k-live") is None
    assert reloaded.get("k-invalid").status == "invalid"
    clock.now += 600
    assert reloaded.get("k-invalid") is None


def test_cache_file_is_private_and_replaced_atomically(tmp_path: Path):
    path = tmp_path / "state" / CACHE_FILE
    cache = VerifyCache(path, TTLS)
    cache.put("k", Verification("invalid"))
    cache.save()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert json.loads(path.read_text())["entries"]["k"]["status"] == "invalid"
    assert os.listdir(path.parent) == [CACHE_FILE]


@pytest.mark.parametrize(
    "content", ["", "{not json", "[]", '{"format": 99, "entries": {}}', '{"format": 1, "entries": 3}']
)
def test_damaged_cache_is_ignored(tmp_path: Path, content: str):
    path = tmp_path / CACHE_FILE
    path.write_text(content)
    cache = VerifyCache(path, TTLS)
    assert cache.get("k") is None
    cache.put("k", Verification("live", account="210987654321"))
    cache.save()
    assert VerifyCache(path, TTLS).get("k").status == "live"


# -- principal types -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "arn, kind",
    [
        ("arn:aws:iam::123456789012:root", "root"),
        ("arn:aws-us-gov:iam::123456789012:root", "root"),
        ("arn:aws:iam::123456789012:user/path/to/bob", "iam-user"),
        ("arn:aws:sts::123456789012:assumed-role/r/s", "assumed-role"),
        ("arn:aws:sts::123456789012:federated-user/f", "federated-user"),
        ("arn:aws:iam::123456789012:role/r", None),
        ("not-an-arn", None),
    ],
)
def test_principal_type(arn, kind):
    assert principal_type(arn) == kind


# -- configuration ---------------------------------------------------------------------------------------------------
def test_config_from_mapping_reads_every_kind_of_value():
    cfg = VerifyConfig.from_mapping(
        {
            "enabled": True,
            "endpoint": "https://sts.us-east-1.amazonaws.com",
            "rate_limit_per_s": 2,
            "max_concurrency": 8,
            "read_timeout": "2500ms",
            "cache_ttl_live": "12h",
            "cache_ttl_invalid": 3600,
            "canary_accounts": ["000000000001"],
            "allow_accounts": ["210987654321"],
            "canary_profiles": ["prod-backup"],
            "canary_key_ids": ["AKIAQQQQRRRRSSSSTTT3"],
            "unknown_account": "skip",
        },
        source="/etc/keysweep/agent.yaml",
    )
    assert cfg.enabled and cfg.rate_limit_per_s == 2.0 and cfg.max_concurrency == 8
    assert (cfg.read_timeout, cfg.cache_ttl_live, cfg.cache_ttl_invalid) == (2.5, 43200.0, 3600.0)
    assert cfg.canary_accounts == ("000000000001",) and cfg.unknown_account == "skip"
    assert VerifyConfig.from_mapping({}) == VerifyConfig()
    assert VerifyConfig().enabled is False
    assert VerifyConfig().cache_ttls()["live"] == 7 * 86400 and VerifyConfig().cache_ttls()["invalid"] == 7 * 86400
    assert VerifyConfig().mode == "sign" and VerifyConfig.from_mapping({"mode": "identify"}).mode == "identify"


@pytest.mark.parametrize(
    "key, value",
    [
        ("enabled", "yes"),
        ("rate_limit_per_s", 0),
        ("rate_limit_per_s", True),
        ("max_concurrency", 0),
        ("max_retries", 1.5),
        ("read_timeout", "soon"),
        ("connect_timeout", 0),
        ("cache_ttl_live", -5),
        ("allow_accounts", [123456789012]),
        ("deny_accounts", "210987654321"),
        ("canary_key_ids", ["AKIA-not-a-key"]),
        ("endpoint", "sts.amazonaws.com"),
        ("region", "mars"),
        ("unknown_account", "maybe"),
        ("mode", "probe"),
        ("verfy_everything", True),
    ],
)
def test_config_errors_name_the_key_and_value(key, value):
    with pytest.raises(ConfigError) as err:
        VerifyConfig.from_mapping({key: value}, source="/etc/keysweep/agent.yaml")
    message = str(err.value)
    assert message.startswith("/etc/keysweep/agent.yaml: verify." + key)
    assert repr(value) in message or "unknown key" in message


def test_endpoint_comes_from_config_then_own_environment(monkeypatch: pytest.MonkeyPatch):
    assert VerifyConfig().endpoint_url() == "https://sts.us-east-1.amazonaws.com"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    assert VerifyConfig().endpoint_url() == "http://127.0.0.1:1"
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:2")
    assert VerifyConfig().endpoint_url() == "http://127.0.0.1:2"
    assert VerifyConfig(endpoint="http://127.0.0.1:3").endpoint_url() == "http://127.0.0.1:3"
