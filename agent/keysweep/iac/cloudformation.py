"""CloudFormation templates (YAML with intrinsic-function tags, or JSON): key and user resources."""

from __future__ import annotations

from collections.abc import Iterator

import yaml

from keysweep.iac.model import KIND_ACCESS_KEY, KIND_IAM_USER, IacFinding

FLAGGED_TYPES = {"AWS::IAM::AccessKey": KIND_ACCESS_KEY, "AWS::IAM::User": KIND_IAM_USER}
# cheap test before parsing: a template that names neither type has nothing to flag
MARKERS = (b"AWS::IAM::AccessKey", b"AWS::IAM::User")


def read_template(text: str, path: str) -> Iterator[IacFinding]:
    """Flagged resources with their line. The template is composed, never constructed: tags such as ``!Ref``
    need no constructor, and aliases are not expanded."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    resources = _value(root, "Resources")
    if not isinstance(resources, yaml.MappingNode):
        return
    for key, body in resources.value:
        rtype = _value(body, "Type")
        if isinstance(rtype, yaml.ScalarNode) and rtype.value in FLAGGED_TYPES:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            yield IacFinding(
                FLAGGED_TYPES[rtype.value], "cloudformation", f"{rtype.value}.{name}", path, key.start_mark.line + 1
            )


def _value(node: yaml.Node | None, name: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode) and key.value == name:
            return value
    return None
