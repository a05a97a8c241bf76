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
from keysweep.ipaddr import canonical_ip


@dataclass(frozen=True)
class Fleet:
    """What the fleet store says: instance ids of hosts running the agent, and the addresses the agents report
    (host context ``private_ip``, ``public_ip``, ``addresses``), each with the hosts that report it."""

    instance_ids: frozenset[str] = frozenset()
    hosts_by_address: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_hosts(cls, hosts: Iterable[Mapping[str, Any]]) -> Fleet:
        ids: set[str] = set()
        by_address: dict[str, set[str]] = {}
        for h in hosts:
            if h.get("instance_id"):
                ids.add(str(h["instance_id"]))
            name = str(h.get("host_id") or h.get("hostname") or "")
            reported = [h.get("private_ip"), h.get("public_ip"), *(h.get("addresses") or ())]
            for ip in filter(None, (canonical_ip(a) for a in reported if a)):
                by_address.setdefault(ip, set()).add(name)
        return cls(frozenset(ids), {ip: tuple(sorted(names)) for ip, names in by_address.items()})

    def host_at(self, ip: str) -> str | None:
        """The fleet host that reports ``ip`` (canonical form), a count when several do, None when none does."""
        hosts = self.hosts_by_address.get(ip)
        if not hosts:
            return None
        return hosts[0] if len(hosts) == 1 else f"{hosts[0]} and {len(hosts) - 1} more fleet hosts"


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
        fleet_host = self.fleet.host_at(str(address))
        # a public address is one host's: a fleet host reporting it is the answer. A private one can be reused by
        # any network (an office LAN, a docker bridge): the account's own interfaces are asked first, so an
        # instance without an agent is never hidden behind an on-premises host that reports the same address
        if fleet_host is not None and not address.is_private:
            return "fleet-host", fleet_host
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
        if fleet_host is not None:
            return "fleet-host", fleet_host
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
