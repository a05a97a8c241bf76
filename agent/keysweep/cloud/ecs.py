"""ECS: the container environment of every active task definition revision (the task role replaces a key;
``secrets`` are references to SSM or Secrets Manager and hold no value)."""

from __future__ import annotations

from collections.abc import Iterator

from keysweep.cloud.items import Item, Reader, Resource, name_value_pairs, variables_item
from keysweep.cloud.session import Target, paginate


def task_definitions(target: Target) -> Iterator[Item]:
    client = target.client("ecs")
    for arn in paginate(client, "list_task_definitions", "taskDefinitionArns", status="ACTIVE"):
        got = target.attempt("ecs", client.describe_task_definition, taskDefinition=arn)
        if got is None:
            continue
        td = got["taskDefinition"]
        resource = Resource("ecs", arn, target.region, target.account, td.get("taskRoleArn"))
        for container in td.get("containerDefinitions") or ():
            item = variables_item(
                resource, name_value_pairs(container.get("environment")), f"{container.get('name', '')}/"
            )
            if item is not None:
                yield item


READERS = (Reader("ecs", "task definition container environments (every active revision)", task_definitions),)
