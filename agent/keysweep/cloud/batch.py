"""AWS Batch: the container environment of every active job definition (single-container and multi-node)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from keysweep.cloud.items import Item, Reader, Resource, name_value_pairs, variables_item
from keysweep.cloud.session import Target, paginate


def _containers(jd: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    if jd.get("containerProperties"):
        yield "", jd["containerProperties"]
    for node in (jd.get("nodeProperties") or {}).get("nodeRangeProperties") or ():
        if node.get("container"):
            yield f"nodes:{node.get('targetNodes', '')}/", node["container"]


def job_definitions(target: Target) -> Iterator[Item]:
    client = target.client("batch")
    for jd in paginate(client, "describe_job_definitions", "jobDefinitions", status="ACTIVE"):
        for prefix, container in _containers(jd):
            role = container.get("jobRoleArn")
            resource = Resource("batch", jd["jobDefinitionArn"], target.region, target.account, role)
            item = variables_item(resource, name_value_pairs(container.get("environment")), prefix)
            if item is not None:
                yield item


READERS = (Reader("batch", "job definition container environments", job_definitions),)
