"""Which secret goes with which id when several ids and secrets share a window: in order, and by the qualifiers
their names share (``_PROD``/``_DEV``, ``BACKUP_``, ``_2``), never crosswise. Observed through the findings: each
finding's secret fingerprint must be its own secret's."""

from __future__ import annotations

import json

import pytest
from keysweep.detect import Detector
from keysweep.fingerprint import Fingerprinter
from keysweep.models import Location
from keysweep.ruleset import load_ruleset

IDS = ["AKIAXYZDQCEN4B6JSJQI", "AKIASP2TPHJSQH3FJRUX", "AKIAYVP4CIPPERUVIFXG"]
SECRETS = [
    "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",
    "p9Lk2/Hd8+Qw3Er5Ty7Ui9Op1As3Df5Gh7Jk9Lz0",
    "Hh4gT7uJ2kL9mN3bV6cX1zQ8wE5rT0yU4iO7pA3s",
]
TEMP = ["ASIAY34FZKBOKMUTVV7A", "ASIAXYZDQCEN4B6JSJQI"]
TOKENS = ["IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ" + c * 200 + "AbCd3f==" for c in "DE"]
FP = Fingerprinter(b"test-fingerprint-key")


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(load_ruleset(), FP)


def paired(detector: Detector, text: str) -> dict[str, int | None]:
    """Each key id found -> the index of the secret it was paired with (by secret fingerprint)."""
    index = {FP.secret_fingerprint(s): n for n, s in enumerate(SECRETS)}
    findings = detector.scan(text.encode(), location=Location(kind="file", path="/srv/app/config"))
    return {f.key_id: index.get(f.secret_fingerprint) if f.secret_fingerprint else None for f in findings}


def lines(*items: tuple[str, str]) -> str:
    return "".join(f"{name}: {value}\n" for name, value in items)


K, S = IDS, SECRETS
IN_ORDER = {
    "two ids then two secrets": lines(
        ("access_key_id", K[0]), ("access_key_id", K[1]), ("secret_access_key", S[0]), ("secret_access_key", S[1])
    ),
    "alternating": lines(
        ("access_key_id", K[0]), ("secret_access_key", S[0]), ("access_key_id", K[1]), ("secret_access_key", S[1])
    ),
    "interleaved": lines(
        ("access_key_id", K[0]),
        ("access_key_id", K[1]),
        ("secret_access_key", S[0]),
        ("access_key_id", K[2]),
        ("secret_access_key", S[1]),
        ("secret_access_key", S[2]),
    ),
    "three ids then three secrets": lines(*[("access_key_id", k) for k in K], *[("secret_access_key", s) for s in S]),
    "secrets first": lines(
        ("secret_access_key", S[0]), ("secret_access_key", S[1]), ("access_key_id", K[0]), ("access_key_id", K[1])
    ),
    "unnamed values": "".join(f"{v}\n" for v in (K[0], K[1], S[0], S[1])),
    "one line": f"ids={K[0]},{K[1]} secrets={S[0]},{S[1]}\n",
}


@pytest.mark.parametrize("layout", sorted(IN_ORDER))
def test_several_ids_and_secrets_pair_in_order(detector, layout):
    text = IN_ORDER[layout]
    got = paired(detector, text)
    assert got == {k: n for n, k in enumerate(K) if k in text}


@pytest.mark.parametrize("indent", [None, 2])
def test_objects_holding_their_secret_before_their_id(detector, indent):
    doc = json.dumps([{"SecretAccessKey": s, "AccessKeyId": k} for k, s in zip(K, S, strict=True)], indent=indent)
    assert paired(detector, doc) == {K[0]: 0, K[1]: 1, K[2]: 2}


def _named(fmt: str, quals: list[str], order: list[int]) -> str:
    ids = [fmt.format(kind="ACCESS_KEY_ID", q=quals[n]) + f"={K[n]}\n" for n in range(len(quals))]
    secrets = [fmt.format(kind="SECRET_ACCESS_KEY", q=quals[n]) + f"={S[n]}\n" for n in order]
    return "".join(ids + secrets)


@pytest.mark.parametrize(
    ("fmt", "quals"),
    [
        ("AWS_{kind}_{q}", ["PROD", "DEV", "STAGING"]),  # suffix
        ("{q}_AWS_{kind}", ["PROD", "DEV", "STAGING"]),  # prefix
        ("aws_{kind}_{q}", ["1", "2", "3"]),  # numbered
    ],
)
@pytest.mark.parametrize("order", [[0, 1, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0]])
def test_shared_name_qualifiers_pair_whatever_the_order(detector, fmt, quals, order):
    # [2, 0, 1]: neither order nor nearness gives the right pairs, only the names do
    assert paired(detector, _named(fmt, quals, order)) == {K[0]: 0, K[1]: 1, K[2]: 2}


def test_qualifiers_in_camel_case_json(detector):
    doc = json.dumps(
        {
            "prodAccessKeyId": K[0],
            "backupAccessKeyId": K[1],
            "devAccessKeyId": K[2],
            "devSecretAccessKey": S[2],
            "prodSecretAccessKey": S[0],
            "backupSecretAccessKey": S[1],
        },
        indent=2,
    )
    assert paired(detector, doc) == {K[0]: 0, K[1]: 1, K[2]: 2}


def test_a_generic_secret_name_still_pairs_with_a_qualified_id(detector):
    text = f"AWS_ACCESS_KEY_ID_PROD={K[0]}\nAWS_SECRET_ACCESS_KEY={S[0]}\n"
    assert paired(detector, text) == {K[0]: 0}


def test_a_mismatched_qualifier_is_a_last_resort(detector):
    # the only secret near the prod id is named for dev: still paired (verification tells), but a dev id near
    # it gets it first
    assert paired(detector, f"KEY_ID_PROD={K[0]}\nSECRET_KEY_DEV={S[0]}\n") == {K[0]: 0}
    text = f"KEY_ID_PROD={K[0]}\nSECRET_KEY_DEV={S[0]}\nKEY_ID_DEV={K[1]}\n"
    assert paired(detector, text) == {K[0]: None, K[1]: 0}


def test_session_tokens_pair_in_order(detector):
    text = (
        f"aws_access_key_id = {TEMP[0]}\naws_access_key_id = {TEMP[1]}\n"
        f"aws_session_token = {TOKENS[0]}\naws_session_token = {TOKENS[1]}\n"
    )
    findings = detector.scan(text.encode(), location=Location(kind="file", path="/x"))
    got = {f.key_id: f.session_token.reveal() if f.session_token else None for f in findings}
    assert got == {TEMP[0]: TOKENS[0], TEMP[1]: TOKENS[1]}
