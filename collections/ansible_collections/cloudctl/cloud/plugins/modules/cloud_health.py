#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Check that a cloud component answers on this host (read-only, never fails the task)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: cloud_health
short_description: Check that a cloud component answers on this host
description:
  - Asks one component of the cloud whether it answers, the way a client would, and
    returns C(healthy) and a one-line C(detail).
  - Read-only. An unhealthy component does not fail the task, so that a status report can
    show every component of every host.
  - C(nc) opens a read-only libvirt connection to I(libvirt_uri) (python3-libvirt, else
    C(virsh)).
  - C(sc) asks tgtd for its state with C(tgtadm --lld iscsi --op show --mode system).
  - C(walrus) lists the S3 buckets with the credentials in I(credentials)
    (python3-boto3) and expects the buckets in I(buckets).
  - C(cc) looks for a DHCP socket (UDP port 67) bound to I(bridge) or to one of its
    addresses, as dnsmasq opens with C(bind-interfaces) or C(bind-dynamic).
  - C(clc) runs C(cloudctl --version) from I(venv) and expects the file I(config).
  - C(api) sends an unsigned request to the API endpoint that I(config) names (its C(api)
    section), over TLS verified with its C(ca_file), and expects EC2's C(AuthFailure) error
    (python3-yaml).
options:
  component:
    description: The component to check.
    type: str
    required: true
    choices: [clc, api, walrus, cc, sc, nc]
  bridge:
    description: The cluster's instance bridge (C(cc)).
    type: str
  pair_gateway:
    description: >-
      The zone's gateway address when a CC pair serves the zone (C(cc)): only the CC that
      holds it on I(bridge) serves DHCP; the other is the standby, healthy without DHCP.
    type: str
  credentials:
    description: >-
      JSON file with C(access_key), C(secret_key), C(endpoint) and optionally C(region)
      (C(walrus)).
    type: path
    default: /etc/cloud/walrus/credentials.json
  buckets:
    description: Buckets that must exist (C(walrus)).
    type: list
    elements: str
    default: [images, snapshots]
  venv:
    description: The virtualenv cloudctl is installed in (C(clc)).
    type: path
    default: /opt/cloud/cloudctl
  config:
    description: The cloud configuration file (C(clc), C(api)).
    type: path
    default: /etc/cloud/cloud.yml
  libvirt_uri:
    description: libvirt connection URI (C(nc)).
    type: str
    default: qemu:///system
  timeout:
    description: Seconds to wait for a command or an S3 request.
    type: int
    default: 10
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: It only reads, and runs the same way in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - cloudctl developers (@cloudctl)
"""

EXAMPLES = r"""
- name: Check the Storage Controller
  cloudctl.cloud.cloud_health:
    component: sc
  register: sc_health

- name: Check the Cluster Controller's DHCP
  cloudctl.cloud.cloud_health:
    component: cc
    bridge: "{{ cloud_clusters[cloud_cluster].bridge }}"
"""

RETURN = r"""
component:
  description: The component checked.
  returned: always
  type: str
  sample: sc
healthy:
  description: Whether the component answered as expected.
  returned: always
  type: bool
  sample: true
detail:
  description: One line saying what answered, or why the component is unhealthy.
  returned: always
  type: str
  sample: "tgtd answers: state ready, iscsi ready"
"""

import json
import os
import re
import urllib.error

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url

COMPONENTS = ["clc", "api", "walrus", "cc", "sc", "nc"]
DHCP_PORT = 67


# -- parsing (pure functions, unit tested) --------------------------------------------------


def parse_ss_sockets(output: str) -> list[dict]:
    """Sockets from ``ss -H -lunp`` lines: address, device, port and process name.

    A local address looks like ``0.0.0.0%cloudbr0:67``, ``172.31.0.1:67``, ``*:67`` or
    ``[::]%br0:547``.
    """
    sockets = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        local = fields[3]
        host, _colon, port = local.rpartition(":")
        if not port.isdigit():
            continue
        address, _percent, device = host.partition("%")
        process = re.search(r'users:\(\("([^"]+)"', line)
        sockets.append(
            {
                "address": address.strip("[]"),
                "device": device,
                "port": int(port),
                "process": process.group(1) if process else "",
                "local": local,
            }
        )
    return sockets


def find_dhcp_socket(sockets: list[dict], bridge: str, addresses: list[str]) -> dict | None:
    """The DHCP socket bound to the bridge (SO_BINDTODEVICE) or to one of its addresses."""
    for sock in sockets:
        if sock["port"] != DHCP_PORT:
            continue
        if sock["device"] == bridge or (not sock["device"] and sock["address"] in addresses):
            return sock
    return None


def ipv4_addresses(ip_json: str) -> list[str]:
    """IPv4 addresses from ``ip -j -4 addr show dev NAME``."""
    try:
        links = json.loads(ip_json) if ip_json.strip() else []
    except ValueError:
        return []
    return [
        a["local"]
        for link in links
        for a in link.get("addr_info", [])
        if a.get("family") == "inet" and a.get("local")
    ]


def parse_tgtadm_system(output: str) -> dict[str, str]:
    """``State`` and the LLD states (``iscsi``, ...) from ``tgtadm --op show --mode system``."""
    values: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and value.strip():
            values.setdefault(key.strip(), value.strip())
    return values


def libvirt_version(number: int) -> str:
    """libvirt encodes versions as major * 1000000 + minor * 1000 + release."""
    return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"


def parse_virsh_version(output: str) -> dict[str, str]:
    values = {}
    for line in output.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.strip()
    return values


def missing_buckets(found: list[str], wanted: list[str]) -> list[str]:
    return [b for b in wanted if b not in found]


# -- checks ---------------------------------------------------------------------------------


class HealthCheck:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.p = module.params

    def run(self, args: list[str]) -> tuple[int, str, str]:
        timeout = self.tool("timeout")  # coreutils: a hung daemon must not hang the check
        if timeout:
            args = [timeout, str(self.p["timeout"]), *args]
        return self.module.run_command(args, environ_update={"LC_ALL": "C"})

    def tool(self, name: str) -> str | None:
        return self.module.get_bin_path(name, opt_dirs=["/usr/sbin", "/sbin"])

    def nc(self) -> tuple[bool, str]:
        uri = self.p["libvirt_uri"]
        try:
            import libvirt
        except ImportError:
            return self._nc_virsh(uri)
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # no stderr noise
        try:
            conn = libvirt.openReadOnly(uri)
            try:
                hypervisor = f"{conn.getType()} {libvirt_version(conn.getVersion())}"
                detail = (
                    f"libvirt {libvirt_version(conn.getLibVersion())} answers on {uri}"
                    f" ({conn.getHostname()}), hypervisor {hypervisor}"
                )
            finally:
                conn.close()
        except libvirt.libvirtError as exc:
            return False, f"libvirt {uri}: {exc}"
        return True, detail

    def _nc_virsh(self, uri: str) -> tuple[bool, str]:
        virsh = self.tool("virsh")
        if not virsh:
            return False, "neither python3-libvirt nor virsh is installed"
        rc, out, err = self.run([virsh, "-r", "-c", uri, "version"])
        if rc != 0:
            return False, f"virsh -c {uri} version: {_line(err or out)}"
        v = parse_virsh_version(out)
        return True, (
            f"libvirt answers on {uri} (virsh): {v.get('Using library', '?')},"
            f" hypervisor {v.get('Running hypervisor', '?')}"
        )

    def sc(self) -> tuple[bool, str]:
        tgtadm = self.tool("tgtadm")
        if not tgtadm:
            return False, "tgtadm is not installed (package tgt)"
        rc, out, err = self.run([tgtadm, "--lld", "iscsi", "--op", "show", "--mode", "system"])
        if rc != 0:
            return False, f"tgtd does not answer: {_line(err or out) or f'tgtadm rc {rc}'}"
        values = parse_tgtadm_system(out)
        return True, (
            f"tgtd answers: state {values.get('State', '?')}, iscsi {values.get('iscsi', '?')}"
        )

    def cc(self) -> tuple[bool, str]:
        bridge = self.p["bridge"]
        if not bridge:
            return False, "no bridge given (cloud_clusters[cloud_cluster].bridge)"
        ss = self.tool("ss")
        if not ss:
            return False, "ss is not installed (package iproute2)"
        rc, out, err = self.run([ss, "-H", "-lunp", f"sport = :{DHCP_PORT}"])
        if rc != 0:
            return False, f"ss failed: {_line(err or out)}"
        sockets = parse_ss_sockets(out)
        addresses = []
        ip = self.tool("ip")
        if ip:
            rc, ip_out, _err = self.run([ip, "-j", "-4", "addr", "show", "dev", bridge])
            addresses = ipv4_addresses(ip_out) if rc == 0 else []
        sock = find_dhcp_socket(sockets, bridge, addresses)
        gateway = self.p.get("pair_gateway")
        if gateway and gateway not in addresses:  # the standby CC of a pair
            if sock is None:
                return True, f"standby: the holder of the gateway {gateway} serves DHCP"
            return False, f"serves DHCP on {bridge} without holding the gateway {gateway}"
        if sock is None:
            found = ", ".join(s["local"] for s in sockets) or "none"
            return False, f"no DHCP socket on {bridge} (UDP :{DHCP_PORT} sockets: {found})"
        by = f" ({sock['process']})" if sock["process"] else ""
        return True, f"DHCP listens on {sock['local']}{by}"

    def walrus(self) -> tuple[bool, str]:
        try:
            creds = _read_json(self.p["credentials"])
            access, secret, endpoint = creds["access_key"], creds["secret_key"], creds["endpoint"]
        except OSError as exc:
            return False, f"cannot read {self.p['credentials']}: {exc.strerror}"
        except ValueError as exc:
            return False, f"cannot read {self.p['credentials']}: {exc}"
        except KeyError as exc:
            return False, f"{self.p['credentials']} has no {exc.args[0]}"
        try:
            import boto3
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError:
            return False, "python3-boto3 is not installed on this host"
        timeout = self.p["timeout"]
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=access,
            aws_secret_access_key=secret,
            region_name=creds.get("region") or "us-east-1",
            config=Config(
                connect_timeout=timeout,
                read_timeout=timeout,
                retries={"max_attempts": 1},
                s3={"addressing_style": "path"},
            ),
        )
        try:
            names = sorted(b["Name"] for b in client.list_buckets().get("Buckets", []))
        except (BotoCoreError, ClientError) as exc:
            return False, f"S3 {endpoint}: {_line(str(exc))}"
        missing = missing_buckets(names, self.p["buckets"])
        listed = ", ".join(names) or "none"
        if missing:
            return False, f"S3 {endpoint} lacks bucket(s) {', '.join(missing)} (buckets: {listed})"
        return True, f"S3 {endpoint} answers, buckets: {listed}"

    def clc(self) -> tuple[bool, str]:
        cloudctl = os.path.join(self.p["venv"], "bin", "cloudctl")
        if not os.access(cloudctl, os.X_OK):
            return False, f"{cloudctl} is not installed"
        rc, out, err = self.run([cloudctl, "--version"])
        if rc != 0:
            return False, f"{cloudctl} --version failed: {_line(err or out)}"
        if not os.path.isfile(self.p["config"]):
            return False, f"{_line(out)}, but {self.p['config']} is missing"
        return True, f"{_line(out)}, config {self.p['config']}"

    def api(self) -> tuple[bool, str]:
        """The API as its clients see it: the endpoint of cloud.yml, TLS verified with the CA
        cloud.yml names; an unsigned request must get EC2's AuthFailure."""
        try:
            import yaml
        except ImportError:
            return False, "python3-yaml is not installed on this host"
        try:
            with open(self.p["config"], encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
        except (OSError, yaml.YAMLError) as exc:
            return False, f"cannot read {self.p['config']}: {_line(str(exc))}"
        api = data.get("api") if isinstance(data, dict) else None
        if not isinstance(api, dict) or not api.get("endpoint"):
            return False, f"{self.p['config']} names no API endpoint (clc_api_enabled false?)"
        endpoint, ca_file = str(api["endpoint"]), api.get("ca_file") or None
        try:
            with open_url(
                endpoint,
                timeout=self.p["timeout"],
                ca_path=ca_file,
                use_proxy=False,
                use_netrc=False,
            ):
                return False, f"{endpoint} accepted an unsigned request: not the cloud's API"
        except urllib.error.HTTPError as exc:
            return api_answer(endpoint, ca_file, exc.code, exc.read().decode("utf-8", "replace"))
        except (urllib.error.URLError, OSError) as exc:
            return False, f"{endpoint}: {_line(str(getattr(exc, 'reason', exc)))}"


def api_answer(endpoint: str, ca_file: str | None, status: int, body: str) -> tuple[bool, str]:
    """Healthy when the unsigned request got EC2's AuthFailure (HTTP 401)."""
    code = re.search(r"<Code>([^<]*)</Code>", body)
    if status == 401 and code and code.group(1) == "AuthFailure":
        verified = f", TLS verified with {ca_file}" if ca_file else ""
        return True, f"EC2 API {endpoint} answers (AuthFailure to an unsigned request){verified}"
    what = code.group(1) if code else _line(body)[:80] or "no EC2 error"
    return False, f"{endpoint} answered HTTP {status} ({what}), not EC2's AuthFailure"


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")  # noqa: TRY004 (reported like bad JSON)
    return data


def _line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "component": {"type": "str", "required": True, "choices": COMPONENTS},
            "bridge": {"type": "str"},
            "pair_gateway": {"type": "str"},
            "credentials": {"type": "path", "default": "/etc/cloud/walrus/credentials.json"},
            "buckets": {"type": "list", "elements": "str", "default": ["images", "snapshots"]},
            "venv": {"type": "path", "default": "/opt/cloud/cloudctl"},
            "config": {"type": "path", "default": "/etc/cloud/cloud.yml"},
            "libvirt_uri": {"type": "str", "default": "qemu:///system"},
            "timeout": {"type": "int", "default": 10},
        },
        supports_check_mode=True,  # read-only: check mode runs the same checks
    )
    component = module.params["component"]
    healthy, detail = getattr(HealthCheck(module), component)()
    module.exit_json(changed=False, component=component, healthy=healthy, detail=detail)


if __name__ == "__main__":
    main()
