#!/usr/bin/env python3
"""The security group of ``infra/aws/cluster.yaml``: SSH in from one network you name, the
cluster's nodes to each other, nothing else.

    python infra/aws/security_group.py --region us-east-1 \\
        --ssh-cidr "$(curl -s https://checkip.amazonaws.com)/32"      # [--vpc vpc-...]
    # prints the group's id: put it in place of sg-YOUR-GROUP-ID in cluster.yaml

Why not Ray's own group: for node types that name no ``SecurityGroupIds``, Ray's AWS provider
makes a group ``ray-autoscaler-<cluster>`` and always lets SSH in from 0.0.0.0/0
(``ray.autoscaler._private.aws.config._create_default_ssh_inbound_rules``);
``provider.security_group.IpPermissions`` only adds rules beside that one. So every node type
of cluster.yaml names this group, and Ray uses it as it is.

Run again with another ``--ssh-cidr`` (your address changed) and the group's rules are set to
exactly these two again: a rule added by hand (port 22 from anywhere, say) is removed.
Needs boto3 and AWS credentials allowed to describe VPCs and manage security groups.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

DEFAULT_NAME = "mammotune-ray"
WIDEST = {4: 16, 6: 48}  # shortest prefix accepted: an office, a VPN's exit, not the internet


def ssh_cidr(value: str) -> str:
    """``value`` as a network (a bare address is one host: /32, /128), refused if it is
    anywhere (0.0.0.0/0, ::/0) or wider than a /16 (IPv4) or /48 (IPv6)."""
    try:
        network = ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        msg = f"--ssh-cidr {value!r} is not a network such as 198.51.100.7/32: {exc}"
        raise ValueError(msg) from None
    if network.prefixlen < WIDEST[network.version]:
        raise ValueError(
            f"--ssh-cidr {network} lets SSH in from {network.num_addresses} addresses; name "
            f"your own address (/32) or your network (at most a /{WIDEST[network.version]})"
        )
    return str(network)


def expected_rules(group_id: str, cidr: str) -> set[tuple]:
    """The group's ingress rules as (protocol, from port, to port, source kind, source)."""
    kind = "CidrIpv6" if ipaddress.ip_network(cidr).version == 6 else "CidrIp"
    return {("-1", None, None, "GroupId", group_id), ("tcp", 22, 22, kind, cidr)}


def _flatten(permissions: list[dict]) -> set[tuple]:
    rules = set()
    for p in permissions:
        ports = (p.get("FromPort"), p.get("ToPort"))
        if p["IpProtocol"] == "-1":
            ports = (None, None)
        head = (p["IpProtocol"], *ports)
        rules |= {(*head, "CidrIp", r["CidrIp"]) for r in p.get("IpRanges", [])}
        rules |= {(*head, "CidrIpv6", r["CidrIpv6"]) for r in p.get("Ipv6Ranges", [])}
        rules |= {(*head, "GroupId", g["GroupId"]) for g in p.get("UserIdGroupPairs", [])}
        rules |= {(*head, "PrefixListId", x["PrefixListId"]) for x in p.get("PrefixListIds", [])}
    return rules


DESCRIPTIONS = {
    "GroupId": "Ray: the cluster's nodes to each other",
    "CidrIp": "SSH: ray up, ray dashboard (tunnel) from your network",
    "CidrIpv6": "SSH: ray up, ray dashboard (tunnel) from your network",
}
RANGES = {
    "CidrIp": ("IpRanges", "CidrIp"),
    "CidrIpv6": ("Ipv6Ranges", "CidrIpv6"),
    "GroupId": ("UserIdGroupPairs", "GroupId"),
    "PrefixListId": ("PrefixListIds", "PrefixListId"),
}


def _permission(rule: tuple, *, describe: bool = False) -> dict:
    protocol, low, high, kind, source = rule
    field, key = RANGES[kind]
    entry = {key: source}
    if describe and kind in DESCRIPTIONS:
        entry["Description"] = DESCRIPTIONS[kind]
    permission = {"IpProtocol": protocol, field: [entry]}
    if low is not None:
        permission.update(FromPort=low, ToPort=high)
    return permission


def ensure_group(ec2, cidr: str, *, vpc_id: str | None = None, name: str = DEFAULT_NAME) -> str:
    """The id of the group ``name`` in ``vpc_id`` (the default VPC if None), created if
    missing, its ingress rules set to exactly :func:`expected_rules`. ``ec2``: a boto3 EC2
    client."""
    cidr = ssh_cidr(cidr)
    if vpc_id is None:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise ValueError("this region has no default VPC: name one with --vpc")
        vpc_id = vpcs[0]["VpcId"]
    filters = [{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": [name]}]
    groups = ec2.describe_security_groups(Filters=filters)["SecurityGroups"]
    if groups:
        group_id, current = groups[0]["GroupId"], _flatten(groups[0]["IpPermissions"])
    else:
        group_id = ec2.create_security_group(
            GroupName=name,
            Description="mammotune Ray cluster: SSH from one network, nodes to each other",
            VpcId=vpc_id,
            TagSpecifications=[
                {"ResourceType": "security-group", "Tags": [{"Key": "Name", "Value": name}]}
            ],
        )["GroupId"]
        current = set()
    wanted = expected_rules(group_id, cidr)
    extra, missing = current - wanted, wanted - current
    if extra:
        ec2.revoke_security_group_ingress(
            GroupId=group_id, IpPermissions=[_permission(r) for r in sorted(extra, key=str)]
        )
    if missing:
        ec2.authorize_security_group_ingress(
            GroupId=group_id,
            IpPermissions=[_permission(r, describe=True) for r in sorted(missing, key=str)],
        )
    return group_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--region", required=True)
    parser.add_argument(
        "--ssh-cidr",
        required=True,
        help="where you run `ray up` / `ray dashboard` from: your address/32 or your network",
    )
    parser.add_argument("--vpc", help="the cluster's VPC (default: the region's default VPC)")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"group name ({DEFAULT_NAME})")
    args = parser.parse_args(argv)
    import boto3

    try:
        group_id = ensure_group(
            boto3.client("ec2", region_name=args.region),
            args.ssh_cidr,
            vpc_id=args.vpc,
            name=args.name,
        )
    except ValueError as exc:
        print(f"security_group: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.name}: SSH from {ssh_cidr(args.ssh_cidr)} only, its members to each other.\n"
        f"In infra/aws/cluster.yaml, replace sg-YOUR-GROUP-ID with {group_id}:\n"
        f"  sed -i 's/sg-YOUR-GROUP-ID/{group_id}/' infra/aws/cluster.yaml",
        file=sys.stderr,
    )
    print(group_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
