"""CloudFormation: every stack's parameters (except ``NoEcho`` ones), outputs and template."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import yaml

from keysweep.cloud.items import Item, Reader, Resource, variables_item
from keysweep.cloud.session import Target, paginate

_MASKED = "****"  # how CloudFormation shows a NoEcho parameter's value


def _mapping(node: yaml.Node | None) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: v for k, v in node.value if isinstance(k, yaml.ScalarNode)}


def _no_echo(body: Any) -> set[str]:
    """Names of the template's NoEcho parameters. A YAML template is composed, not constructed: its short-form
    intrinsic functions (!Ref, !Sub) need no constructor and aliases are not expanded."""
    if isinstance(body, dict):
        params = body.get("Parameters")
        if not isinstance(params, dict):
            return set()
        return {k for k, v in params.items() if isinstance(v, dict) and str(v.get("NoEcho", "")).lower() == "true"}
    try:
        root = yaml.compose(str(body), Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return set()
    out = set()
    for name, param in _mapping(_mapping(root).get("Parameters")).items():
        flag = _mapping(param).get("NoEcho")
        if isinstance(flag, yaml.ScalarNode) and flag.value.lower() == "true":
            out.add(name)
    return out


def stacks(target: Target) -> Iterator[Item]:
    client = target.client("cloudformation")
    for stack in paginate(client, "describe_stacks", "Stacks"):
        stack_id = stack["StackId"]
        got = target.attempt("cloudformation", client.get_template, StackName=stack_id, TemplateStage="Original")
        body = (got or {}).get("TemplateBody")
        hidden = _no_echo(body) if body is not None else set()
        resource = Resource("cloudformation", stack_id, target.region, target.account, stack.get("RoleARN"))
        params = [
            (p["ParameterKey"], p.get("ParameterValue"))
            for p in stack.get("Parameters") or ()
            if p["ParameterKey"] not in hidden and p.get("ParameterValue") not in (None, _MASKED)
        ]
        outputs = [(o["OutputKey"], o.get("OutputValue")) for o in stack.get("Outputs") or ()]
        for item in (variables_item(resource, params, "Parameters/"), variables_item(resource, outputs, "Outputs/")):
            if item is not None:
                yield item
        if body is not None:
            text = json.dumps(body, indent=1) if isinstance(body, dict) else str(body)
            yield Item(resource, "Template", text.encode("utf-8", "surrogateescape"))


READERS = (Reader("cloudformation", "stack parameters, outputs and templates", stacks),)
