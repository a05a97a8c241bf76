"""DynamoDB store items of an earlier layout, written as that version of keysweep wrote them."""

from __future__ import annotations

import json
import zlib
from typing import Any

from keysweep.central.records import FindingRecord


def put_legacy_finding(client: Any, table: str, record: FindingRecord) -> None:
    """``record`` as an item of the layout before per-host records: keyed by its finding fingerprint alone, its
    record as compressed canonical JSON."""
    blob = zlib.compress(json.dumps(record.to_dict(), sort_keys=True, separators=(",", ":")).encode())
    client.put_item(
        TableName=table,
        Item={
            "pk": {"S": f"FINDING#{record.finding_fingerprint}"},
            "sk": {"S": "FINDING"},
            "type": {"S": "finding"},
            "rev": {"N": "1"},
            "data": {"B": blob},
        },
    )
