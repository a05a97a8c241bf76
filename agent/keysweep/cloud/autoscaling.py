"""Auto Scaling launch configurations: their user data (launch templates are read with EC2)."""

from __future__ import annotations

from collections.abc import Iterator

from keysweep.cloud.ec2 import profile_arn, user_data_items
from keysweep.cloud.items import Item, Reader, Resource
from keysweep.cloud.session import Target, paginate


def launch_configurations(target: Target) -> Iterator[Item]:
    client = target.client("autoscaling")
    for lc in paginate(client, "describe_launch_configurations", "LaunchConfigurations"):
        if not lc.get("UserData"):
            continue
        arn = lc.get("LaunchConfigurationARN") or lc["LaunchConfigurationName"]
        role = profile_arn(target, lc.get("IamInstanceProfile"))
        yield from user_data_items(
            Resource("autoscaling", arn, target.region, target.account, role), "UserData", lc["UserData"]
        )


READERS = (Reader("autoscaling", "launch configuration user data", launch_configurations),)
