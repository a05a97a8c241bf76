"""What a CloudTrail ``sourceIPAddress`` is: an AWS service, a network interface of the account (an instance,
a Lambda or ECS interface, a NAT gateway), a host of the fleet (an instance whose agent reports to the store), or
something outside the account."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keysweep.aws import client_config
from keysweep.cloud.session import AWS_ERRORS, Target, error_reason


@dataclass(frozen=True)
class Fleet:
    """What the fleet store says: instance ids and addresses of hosts running the agent."""

    instance_ids: frozenset[str] = frozenset()
    addresses: frozenset[str] = frozenset()

    @classmethod
    def from_hosts(cls, hosts: Iterable[Mapping[str, Any]]) -> Fleet:
        ids: set[str] = set()
        addrs: set[str] = set()
        for h in hosts:
            if h.get("instance_id"):
                ids.add(str(h["instance_id"]))
            for name in ("private_ip", "public_ip"):
                if h.get(name):
                    addrs.add(str(h[name]))
            addrs.update(str(a) for a in h.get("addresses") or ())
        return cls(frozenset(ids), frozenset(addrs))


def _interface_kind(eni: Mapping[str, Any]) -> tuple[str, str]:
    attachment = eni.get("Attachment") or {}
    if attachment.get("InstanceId"):
        return "ec2-instance", str(attachment["InstanceId"])
    itype = str(eni.get("InterfaceType") or "")
    desc = str(eni.get("Description") or "")
    if itype == "lambda" or desc.startswith("AWS Lambda VPC ENI"):
        return "lambda", desc or eni["NetworkInterfaceId"]
    if itype == "nat_gateway":
        return "nat-gateway", desc or eni["NetworkInterfaceId"]
    if desc.startswith("arn:aws:ecs:") or eni.get("RequesterId") == "ecs" or "ecs" in itype:
        return "ecs-task", desc or eni["NetworkInterfaceId"]
    return "network-interface", " ".join(p for p in (str(eni["NetworkInterfaceId"]), itype, desc) if p)


@dataclass
class Resolver:
    """Resolves addresses with ``ec2:DescribeNetworkInterfaces`` in each of an account's regions (cached)."""

    targets: list[Target]
    fleet: Fleet = field(default_factory=Fleet)
    _cache: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    def resolve(self, ip: str) -> tuple[str, str | None]:
        if ip not in self._cache:
            self._cache[ip] = self._resolve(ip)
        return self._cache[ip]

    def _resolve(self, ip: str) -> tuple[str, str | None]:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:  # "lambda.amazonaws.com", "AWS Internal": a service acting with the key
            return "aws-service", ip
        if ip in self.fleet.addresses:
            return "fleet-host", ip
        lookups = _PRIVATE_LOOKUPS if address.is_private else _PUBLIC_LOOKUPS
        for target in self.targets:
            for lookup in lookups:
                try:
                    found = lookup(_ec2(target), ip)
                except AWS_ERRORS as exc:
                    target.skip("ec2", error_reason(exc))
                    continue
                if found is not None:
                    kind, resource = found
                    if kind == "ec2-instance" and resource in self.fleet.instance_ids:
                        return "fleet-host", resource
                    return kind, resource
        return "outside-aws", None


_FAIL_FAST = client_config(read_timeout=15.0, max_attempts=3)


def _ec2(target: Target) -> Any:
    """An EC2 client that fails fast: an address that cannot be resolved is a skip, not minutes of retries."""
    return target.client("ec2", config=_FAIL_FAST)


def _by_interface(filter_name: str) -> Any:
    def lookup(ec2: Any, ip: str) -> tuple[str, str] | None:
        found = ec2.describe_network_interfaces(Filters=[{"Name": filter_name, "Values": [ip]}])["NetworkInterfaces"]
        return _interface_kind(found[0]) if found else None

    return lookup


def _by_instance_address(ec2: Any, ip: str) -> tuple[str, str] | None:
    for reservation in ec2.describe_instances(Filters=[{"Name": "ip-address", "Values": [ip]}])["Reservations"]:
        for inst in reservation.get("Instances") or ():
            return "ec2-instance", str(inst["InstanceId"])
    return None


def _by_elastic_ip(ec2: Any, ip: str) -> tuple[str, str] | None:
    for addr in ec2.describe_addresses(Filters=[{"Name": "public-ip", "Values": [ip]}])["Addresses"]:
        if addr.get("InstanceId"):
            return "ec2-instance", str(addr["InstanceId"])
        if addr.get("NetworkInterfaceId"):
            found = ec2.describe_network_interfaces(NetworkInterfaceIds=[addr["NetworkInterfaceId"]])
            if found["NetworkInterfaces"]:
                return _interface_kind(found["NetworkInterfaces"][0])
    return None


_PRIVATE_LOOKUPS = (_by_interface("addresses.private-ip-address"),)
# instances and Elastic IPs first; then any interface's auto-assigned public address (a Fargate task's)
_PUBLIC_LOOKUPS = (_by_instance_address, _by_elastic_ip, _by_interface("association.public-ip"))
