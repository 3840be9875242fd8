"""cloudctl group ..., cloudctl address ..., cloudctl zone list."""

from __future__ import annotations

import click

from cloudctl.addresses import Addresses
from cloudctl.cli.common import CliContext, output_option, pass_context, task_progress
from cloudctl.cli.output import output_result
from cloudctl.groups import Groups, parse_rule
from cloudctl.zones import Zones

GROUP_COLUMNS = ["id", "name", "description", "rules", "account"]
ADDRESS_COLUMNS = ["id", "public_ip", "zone", "instance", "private_ip", "account"]


def _rule_text(rule: dict, names: dict[str, str]) -> str:
    proto = rule["protocol"]
    if proto in ("tcp", "udp"):
        low, high = rule["from_port"], rule["to_port"]
        proto += f":{low}" if low == high else f":{low}-{high}"
    elif proto == "icmp" and rule.get("icmp_type", -1) != -1:
        proto += f":{rule['icmp_type']}"
    source = rule.get("cidr") or "group " + names.get(rule["source_group"], rule["source_group"])
    return f"{proto} from {source}"


def _group_rows(groups: list[dict], names: dict[str, str], fmt: str) -> list[dict]:
    if fmt != "table":
        return groups
    return [{**g, "rules": "; ".join(_rule_text(r, names) for r in g["rules"])} for g in groups]


def rule_options(func):
    for option in reversed(
        [
            click.option("--protocol", required=True, help="tcp, udp, icmp or all."),
            click.option("--port", type=int, default=None, help="One port (tcp/udp)."),
            click.option("--port-range", default=None, metavar="A-B", help="Ports A to B."),
            click.option("--icmp-type", type=int, default=None, help="ICMP type (-1: any)."),
            click.option("--cidr", default=None, help="Allowed source network."),
            click.option("--source-group", default=None, help="Allowed source: a group's members."),
        ]
    ):
        func = option(func)
    return func


@click.group()
def group() -> None:
    """Security groups: inbound rules enforced on every instance of the group."""


@group.command("create")
@click.argument("name")
@click.option("--description", default="", help="What the group is for.")
@output_option
@pass_context
def group_create(obj: CliContext, name: str, description: str, output: str | None) -> None:
    """Create a security group (no inbound traffic until rules allow it)."""
    fmt = obj.output_format(output)
    output_result(_group_rows([Groups(obj.settings).create(name, description)], {}, fmt), fmt,
                  GROUP_COLUMNS)  # fmt: skip


@group.command("list")
@output_option
@pass_context
def group_list(obj: CliContext, output: str | None) -> None:
    """List the security groups."""
    fmt = obj.output_format(output)
    groups = Groups(obj.settings).list()
    names = {g["id"]: g["name"] for g in groups}
    output_result(_group_rows(groups, names, fmt), fmt, GROUP_COLUMNS)


@group.command("show")
@click.argument("ref", metavar="NAME|ID")
@output_option
@pass_context
def group_show(obj: CliContext, ref: str, output: str | None) -> None:
    """Show a security group, its rules and its instances."""
    fmt = obj.output_format(output)
    service = Groups(obj.settings)
    names = {g["id"]: g["name"] for g in service.list()}
    group_ = service.show(ref)
    if fmt == "table":
        group_ = {**group_, "instances": ", ".join(group_["instances"])}
    output_result(_group_rows([group_], names, fmt), fmt, [*GROUP_COLUMNS, "instances"])


@group.command("delete")
@click.argument("ref", metavar="NAME|ID")
@pass_context
def group_delete(obj: CliContext, ref: str) -> None:
    """Delete a security group (refused while instances use it)."""
    removed = Groups(obj.settings).delete(ref)
    click.echo(f"security group {removed['name']} ({removed['id']}) deleted")


def _rule_command(name: str, help_text: str) -> None:
    @click.argument("ref", metavar="NAME|ID")
    @rule_options
    @output_option
    @pass_context
    def command(obj: CliContext, ref: str, protocol: str, port: int | None,
                port_range: str | None, icmp_type: int | None, cidr: str | None,
                source_group: str | None, output: str | None) -> None:  # fmt: skip
        rule = parse_rule(protocol, port, port_range, icmp_type, cidr, source_group)
        service = Groups(obj.settings)
        with task_progress("Applying", None) as progress:
            changed = getattr(service, name)(ref, rule, progress=progress)
        fmt = obj.output_format(output)
        names = {g["id"]: g["name"] for g in service.list()}
        output_result(_group_rows([changed], names, fmt), fmt, GROUP_COLUMNS)

    command.__doc__ = help_text
    group.command(name)(command)


_rule_command("authorize", "Allow inbound traffic to the group's instances (applied at once).")
_rule_command("revoke", "Remove a rule (the same options as authorize; applied at once).")


@click.group()
def address() -> None:
    """Elastic IPs: public addresses of a zone's pool, mapped to instances by the CC."""


@address.command("allocate")
@click.option("--zone", default=None, help="Zone whose pool to take it from (default: the first).")
@output_option
@pass_context
def address_allocate(obj: CliContext, zone: str | None, output: str | None) -> None:
    """Allocate an elastic IP."""
    output_result([Addresses(obj.settings).allocate(zone)], obj.output_format(output),
                  ADDRESS_COLUMNS)  # fmt: skip


@address.command("list")
@output_option
@pass_context
def address_list(obj: CliContext, output: str | None) -> None:
    """List the allocated elastic IPs."""
    output_result(Addresses(obj.settings).list(), obj.output_format(output), ADDRESS_COLUMNS)


@address.command("associate")
@click.argument("ref", metavar="ADDR")
@click.option("--instance", "instance_id", required=True, metavar="ID", help="Instance id.")
@output_option
@pass_context
def address_associate(obj: CliContext, ref: str, instance_id: str, output: str | None) -> None:
    """Map an elastic IP (public address or allocation id) to an instance."""
    with task_progress("Associating", None) as progress:
        record = Addresses(obj.settings).associate(ref, instance_id, progress=progress)
    output_result([record], obj.output_format(output), ADDRESS_COLUMNS)


@address.command("disassociate")
@click.argument("ref", metavar="ADDR")
@output_option
@pass_context
def address_disassociate(obj: CliContext, ref: str, output: str | None) -> None:
    """Unmap an elastic IP from its instance."""
    with task_progress("Disassociating", None) as progress:
        record = Addresses(obj.settings).disassociate(ref, progress=progress)
    output_result([record], obj.output_format(output), ADDRESS_COLUMNS)


@address.command("release")
@click.argument("ref", metavar="ADDR")
@pass_context
def address_release(obj: CliContext, ref: str) -> None:
    """Give an elastic IP back to the pool (disassociating it first)."""
    with task_progress("Releasing", None) as progress:
        record = Addresses(obj.settings).release(ref, progress=progress)
    click.echo(f"address {record['public_ip']} ({record['id']}) released")


@click.group()
def zone() -> None:
    """Availability zones (clusters)."""


@zone.command("list")
@click.option("--verbose", is_flag=True, help="Free / max instances per instance type.")
@output_option
@pass_context
def zone_list(obj: CliContext, verbose: bool, output: str | None) -> None:
    """List the zones."""
    columns = ["zone", "state", "cc", "subnet", "nodes"]
    if verbose:
        columns += ["free", "max", "cpus", "memory_mb", "disk_gb"]
    output_result(Zones(obj.settings).list(verbose), obj.output_format(output), columns)


@zone.command("network")
@click.argument("zone_name", required=False)
@output_option
@pass_context
def zone_network(obj: CliContext, zone_name: str | None, output: str | None) -> None:
    """The DHCP reservations and elastic IPs every CC of a zone (default: of every zone)
    holds: one row per instance that has a reservation."""
    fmt = obj.output_format(output)
    columns = ["zone", "name", "mac", "ip", "public_ip"] if fmt == "table" else None  # all
    output_result(Zones(obj.settings).network(zone_name), fmt, columns)
