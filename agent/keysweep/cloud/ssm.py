"""SSM Parameter Store: ``String`` and ``StringList`` parameters. ``SecureString`` values are never asked for
(``WithDecryption`` is always false and such parameters are not even fetched)."""

from __future__ import annotations

from collections.abc import Iterator

from keysweep.cloud.items import Item, Reader, Resource
from keysweep.cloud.session import Target, paginate

_BATCH = 10  # GetParameters takes at most 10 names


def parameters(target: Target) -> Iterator[Item]:
    client = target.client("ssm")
    plain = [{"Key": "Type", "Option": "Equals", "Values": ["String", "StringList"]}]
    names = [p["Name"] for p in paginate(client, "describe_parameters", "Parameters", ParameterFilters=plain)]
    for i in range(0, len(names), _BATCH):
        got = client.get_parameters(Names=names[i : i + _BATCH], WithDecryption=False)
        for p in got.get("Parameters") or ():
            if p.get("Type") == "SecureString" or p.get("Value") is None:
                continue
            arn = p.get("ARN") or p["Name"]
            yield Item(Resource("ssm", arn, target.region, target.account), p["Name"], p["Value"].encode("utf-8"))


READERS = (Reader("ssm", "String and StringList parameters", parameters),)
