# SPDX-License-Identifier: GPL-3.0-or-later
"""Network helpers shared by the project's modules (stdlib only: runs on target hosts).

- ``ifname_problem``: why a string is not a valid Linux interface name (or None).
- ``IpRoute``: runs iproute2's ``ip`` with JSON output through an AnsibleModule.
"""

from __future__ import annotations

import ipaddress
import json

IFNAMSIZ = 16  # kernel limit, including the terminating NUL: at most 15 characters


def ifname_problem(name: object) -> str | None:
    """Return why ``name`` is not a valid Linux interface name, or None when it is.

    Same rules as the kernel's dev_valid_name(): 1 to 15 characters, not "." or "..",
    no "/", ":" or whitespace.
    """
    if not isinstance(name, str) or not name:
        return "is empty"
    if len(name) >= IFNAMSIZ:
        return f"is {len(name)} characters (Linux interface names have at most {IFNAMSIZ - 1})"
    if name in (".", ".."):
        return "is not a valid interface name"
    bad = sorted({c for c in name if c in "/:" or c.isspace()})
    if bad:
        return f"contains {''.join(repr(c) for c in bad)} (not allowed in an interface name)"
    if not name.isascii() or not name.isprintable():
        return "contains non-printable or non-ASCII characters"
    return None


def interface_key(address: str) -> tuple:
    """Sort key for 'ADDRESS/PREFIX' strings: IPv4 before IPv6, then numerically."""
    iface = ipaddress.ip_interface(address)
    return (iface.version, int(iface.ip), iface.network.prefixlen)


class IpRoute:
    """Thin wrapper around ``ip`` (iproute2). Every failure ends the module with fail_json."""

    def __init__(self, module) -> None:
        self.module = module
        self.ip = module.get_bin_path("ip", required=True)

    def _run(self, args: list[str]) -> tuple[int, str, str]:
        return self.module.run_command([self.ip, *args], environ_update={"LC_ALL": "C"})

    def json(self, *args: str, missing_ok: bool = False):
        """``ip -j ARGS``, parsed. With missing_ok, a missing device returns None."""
        rc, out, err = self._run(["-j", *args])
        if rc != 0:
            if missing_ok and ("does not exist" in err or "Cannot find device" in err):
                return None
            self.module.fail_json(
                msg=f"ip -j {' '.join(args)} failed: {err.strip() or out.strip()}"
            )
        try:
            return json.loads(out) if out.strip() else []
        except ValueError as exc:
            self.module.fail_json(
                msg=f"ip -j {' '.join(args)}: cannot parse its JSON output: {exc}"
            )

    def run(self, *args: str) -> None:
        """``ip ARGS``; fails the module with ip's own message."""
        rc, out, err = self._run(list(args))
        if rc != 0:
            self.module.fail_json(msg=f"ip {' '.join(args)} failed: {err.strip() or out.strip()}")

    def link(self, name: str, details: bool = False) -> dict | None:
        """The link called ``name`` (``ip -j [-d] link show dev NAME``) or None."""
        args = (["-d"] if details else []) + ["link", "show", "dev", name]
        links = self.json(*args, missing_ok=True)
        return links[0] if links else None

    def ports(self, master: str) -> list[dict]:
        """Links enslaved to ``master``."""
        return self.json("link", "show", "master", master) or []

    def addresses(self, name: str) -> list[dict]:
        """addr_info entries of ``name`` (both families)."""
        links = self.json("addr", "show", "dev", name, missing_ok=True) or []
        return links[0].get("addr_info", []) if links else []
