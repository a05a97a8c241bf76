"""A fleet store holding what a compromised host would send to attack the report's readers, not the store.

Terminal escapes and bidi overrides arrive through the collector's message handler in genuine agent messages
(a path is bytes: a file name may hold any of them). A non-finite number and a 250-level nested trust policy are
written with the store's own upsert, as a store filled before the collector bounded messages would hold them:
the outputs must be safe for whatever the store holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from keysweep.central.handler import MessageHandler, Outcome
from keysweep.central.store import open_store

from tests.support.messages import finding_message, host

CLEAR_SCREEN = "\x1b[2J"
RLO, LRI, PDI = "\u202e", "\u2066", "\u2069"
BIDI = ("\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069")
KEY_ESC = "AKIAXYZDQCEN4B6JSJQI"
KEY_DEEP = "AKIASP2TPHJSQH3FJRUX"
ESC_PATH = f"/srv/{CLEAR_SCREEN}app/{RLO}vne.txt\x9b31m/=HYPERLINK(1)"
BIDI_HOST = host("i-0bbbbbbbbbbbbbbb1", f"web{LRI}-evil{PDI}\x07", "ec2")
DEEP_LEVELS = 250


def nested(levels: int) -> dict[str, Any]:
    policy: dict[str, Any] = {"Effect": "Allow"}
    for _ in range(levels - 1):
        policy = {"Statement": policy}
    return policy


def build_hostile_store(path: Path) -> Path:
    escaping = finding_message(host_info=BIDI_HOST, key_id=KEY_ESC, path=ESC_PATH, sent_at="2026-11-28T10:00:00Z")
    escaping["suggestion"]["summary"] = f"-2+3 {CLEAR_SCREEN}replace {RLO}me"
    escaping["suggestion"]["commands"] = [f"aws iam create-role {CLEAR_SCREEN}", "@SUM(1)"]
    legacy = finding_message(
        host_info=BIDI_HOST, key_id=KEY_DEEP, path="/srv/deep.json", sent_at="2026-11-28T10:01:00Z"
    )
    legacy["finding"]["location"]["size"] = json.loads("1e400")  # what a JSON parser makes of 1e400: inf
    legacy["suggestion"]["trust_policy"] = nested(DEEP_LEVELS)
    store = open_store(str(path))
    try:
        result = MessageHandler(store).handle(json.dumps(escaping))
        assert result.outcome is Outcome.OK, result.reason
        store.upsert_finding(legacy)
    finally:
        store.close()
    return path
