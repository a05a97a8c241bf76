"""EC2: the user data of every instance and of every version of every launch template, decoded as the
instance would (base64, gzip, MIME multipart)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from keysweep.cloud import userdata
from keysweep.cloud.items import Item, Reader, Resource
from keysweep.cloud.session import Target, paginate


def profile_arn(target: Target, profile: dict[str, Any] | str | None) -> str | None:
    """An instance profile given as ``{"Arn"|"Name": …}`` or a bare name or ARN, as an ARN."""
    if isinstance(profile, dict):
        profile = profile.get("Arn") or profile.get("Name")
    if not profile:
        return None
    return profile if profile.startswith("arn:") else f"arn:aws:iam::{target.account}:instance-profile/{profile}"


def user_data_items(resource: Resource, field: str, encoded: str | None) -> Iterator[Item]:
    for name, data in userdata.parts(userdata.decode_base64(encoded)):
        if data:
            yield Item(resource, f"{field}/{name}" if name else field, data)


def instances(target: Target) -> Iterator[Item]:
    client = target.client("ec2")
    for reservation in paginate(client, "describe_instances", "Reservations"):
        for inst in reservation.get("Instances") or ():
            if (inst.get("State") or {}).get("Name") == "terminated":
                continue
            iid = inst["InstanceId"]
            got = target.attempt("ec2", client.describe_instance_attribute, InstanceId=iid, Attribute="userData")
            value = ((got or {}).get("UserData") or {}).get("Value")
            if not value:
                continue
            arn = f"arn:aws:ec2:{target.region}:{target.account}:instance/{iid}"
            resource = Resource(
                "ec2", arn, target.region, target.account, profile_arn(target, inst.get("IamInstanceProfile"))
            )
            yield from user_data_items(resource, "UserData", value)


def launch_templates(target: Target) -> Iterator[Item]:
    client = target.client("ec2")
    for lt in paginate(client, "describe_launch_templates", "LaunchTemplates"):
        arn = f"arn:aws:ec2:{target.region}:{target.account}:launch-template/{lt['LaunchTemplateId']}"
        for version in paginate(
            client,
            "describe_launch_template_versions",
            "LaunchTemplateVersions",
            LaunchTemplateId=lt["LaunchTemplateId"],
        ):
            data = version.get("LaunchTemplateData") or {}
            if not data.get("UserData"):
                continue
            role = profile_arn(target, data.get("IamInstanceProfile"))
            resource = Resource("ec2", arn, target.region, target.account, role)
            yield from user_data_items(resource, f"versions/{version['VersionNumber']}/UserData", data["UserData"])


READERS = (
    Reader("ec2", "instance user data", instances),
    Reader("ec2", "launch template user data (every version)", launch_templates),
)
