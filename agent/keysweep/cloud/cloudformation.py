"""CloudFormation: every stack's parameters (except ``NoEcho`` ones), outputs and template."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import yaml

from keysweep.cloud.items import Item, Reader, Resource, variables_item
from keysweep.cloud.session import Target, paginate

_MASKED = "****"  # how CloudFormation shows a NoEcho parameter's value


class _AnyTagLoader(yaml.SafeLoader):
    """YAML templates use short-form intrinsic functions (!Ref, !Sub, …): read them as plain values."""


_AnyTagLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def _template_doc(body: Any) -> dict[str, Any]:
    if isinstance(body, dict):
        return body
    try:
        doc = yaml.load(str(body), Loader=_AnyTagLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _no_echo(doc: dict[str, Any]) -> set[str]:
    params = doc.get("Parameters")
    if not isinstance(params, dict):
        return set()
    return {k for k, v in params.items() if isinstance(v, dict) and str(v.get("NoEcho", "")).lower() == "true"}


def stacks(target: Target) -> Iterator[Item]:
    client = target.client("cloudformation")
    for stack in paginate(client, "describe_stacks", "Stacks"):
        stack_id = stack["StackId"]
        got = target.attempt("cloudformation", client.get_template, StackName=stack_id, TemplateStage="Original")
        body = (got or {}).get("TemplateBody")
        doc = _template_doc(body) if body is not None else {}
        hidden = _no_echo(doc)
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
