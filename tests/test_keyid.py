from __future__ import annotations

import base64
import random

import pytest
from keysweep import keyid

VECTORS = {
    "AKIAXYZDQCEN4B6JSJQI": "534261010715",
    "AKIASP2TPHJSQH3FJRUX": "171436882533",
    "AKIAYVP4CIPPERUVIFXG": "595918472158",
    "ASIAY34FZKBOKMUTVV7A": "609629065308",
}


def _encode_key(prefix: str, account: int, rest: int) -> str:
    """The inverse of the decoding (as AWS and moto build ids): account shifted into the first 6 bytes."""
    z = (account << 7) | (rest & 0x7F) | (1 << 47)  # high bit set: new-format ids start Q..Z / 2..7
    raw = z.to_bytes(6, "big") + rest.to_bytes(4, "big")
    return prefix + base64.b32encode(raw).decode()


@pytest.mark.parametrize(("key_id", "account"), sorted(VECTORS.items()))
def test_decode_account_vectors(key_id, account):
    assert keyid.decode_account(key_id) == account


def test_decode_account_round_trips_random_accounts():
    rng = random.Random(7)
    for _ in range(200):
        account = rng.randrange(10**12)
        kid = _encode_key(rng.choice(["AKIA", "ASIA"]), account, rng.getrandbits(32))
        assert keyid.decode_account(kid) == f"{account:012d}", kid


@pytest.mark.parametrize("key_id", ["AKIAIOSFODNN7EXAMPLE", "AKIAJSIE27KKMHXI3BJQ", "ASIAJ34FZKBOKMUTVV7A"])
def test_old_format_ids_have_no_account(key_id):
    assert keyid.decode_account(key_id) is None


def test_decoded_accounts_are_always_twelve_digits_or_none():
    rng = random.Random(11)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    for _ in range(2000):
        kid = "AKIA" + "".join(rng.choice(alphabet) for _ in range(16))
        account = keyid.decode_account(kid)
        if kid[4] in "QRSTUVWXYZ234567":
            # 40 bits can exceed 12 digits: such an id is not one AWS issued, so it names no account
            assert account is None or (len(account) == 12 and account.isdigit()), kid
        else:  # older formats carry no account: never a made-up 13-digit one
            assert account is None, kid


@pytest.mark.parametrize(
    ("key_id", "kind"),
    [
        ("AKIAXYZDQCEN4B6JSJQI", "long-term"),
        ("ASIAY34FZKBOKMUTVV7A", "temporary"),
        ("ABIAY34FZKBOKMUTVV7A", "bearer"),
        ("ACCAY34FZKBOKMUTVV7A", "context"),
    ],
)
def test_key_type(key_id, kind):
    assert keyid.key_type(key_id) == kind


@pytest.mark.parametrize(
    "value",
    [
        "AIDAXYZDQCEN4B6JSJQI",
        "AROAXYZDQCEN4B6JSJQI",
        "AGPAXYZDQCEN4B6JSJQI",
        "AIPAXYZDQCEN4B6JSJQI",
        "ANPAXYZDQCEN4B6JSJQI",
        "ANVAXYZDQCEN4B6JSJQI",
        "APKAXYZDQCEN4B6JSJQI",
        "ASCAXYZDQCEN4B6JSJQI",
        "A3TAXYZDQCEN4B6JSJQI",
        "AKIAXYZDQCEN4B6JSJQ",
        "AKIAXYZDQCEN4B6JSJQI1",
        "AKIAXYZDQCEN4B6JSJQ0",
        "AKIAXYZDQCEN4B6JSJQ8",
        "akiaxyzdqcen4b6jsjqi",
        "",
    ],
)
def test_non_keys_have_no_type_or_account(value):
    assert keyid.key_type(value) is None
    assert keyid.decode_account(value) is None


@pytest.mark.parametrize(
    "key_id",
    [
        "AKIAIOSFODNN7EXAMPLE",
        "ASIAIOSFODNN7EXAMPLE",
        "AKIAI44QH8DHBEXAMPLE",
        "AKIAXXXXXXXXXXXXXXXX",
        "AKIAAAAAAAAAAAAAAAAA",
        "AKIA2222222222222222",
        "AKIAABCDEFGHIJKLMNOP",
        "AKIAABABABABABABABAB",
        "AKIAZZZZZZZZYVP4CIPP",
        "AKIAYOURACCESSKEYID2",
        "AKIAREDACTEDREDACTED",
    ],
)
def test_example_and_placeholder_ids(key_id):
    assert keyid.is_example_key(key_id)


def test_random_ids_are_not_examples():
    rng = random.Random(11)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    ids = ["AKIA" + "".join(rng.choice(alphabet) for _ in range(16)) for _ in range(2000)]
    assert [k for k in ids if keyid.is_example_key(k)] == []
    assert not any(keyid.is_example_key(k) for k in VECTORS)
