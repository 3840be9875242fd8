"""A Node Controller for module tests: virtlogd + libvirtd (+ dnsmasq) in private namespaces.

``NcLab`` makes a network namespace (``nct-<random>``) and, inside it, a private mount
namespace held by one ``sleep`` process, with tmpfs over /run, /var/lib/libvirt,
/var/log/libvirt and /var/cache/libvirt and a private copy of /etc/libvirt (libvirt's
default NAT network does not autostart; persistent domain definitions vanish with the lab).
In there it makes the instance bridge with a gateway address, and starts virtlogd, libvirtd
and (optionally) dnsmasq serving DHCP reservations on the bridge. The nc role's directories
(image cache, instances, root:kvm 0750) and its node.json live in a work directory that the
QEMU user can traverse. Nothing touches the machine's own interfaces.

    with NcLab() as lab:                      # or lab = NcLab(); lab.start(); ...; lab.stop()
        lab.reserve("52:54:00:12:34:56", "10.97.0.10")      # DHCP reservation
        modhelpers.run_module(tmp_path, "cloud_instance", {..., "node_config": lab.node_config},
                              wrapper=lab.wrapper)         # runs inside the namespaces
        lab.run(["virsh", "list", "--all"])                # any command inside

``lab.wrapper`` is the command prefix that enters the lab (nsenter into the holder's mount
and network namespaces). ``stop()`` destroys the lab's domains, stops every process in the
lab's network namespace (all of them started by the lab: daemons and QEMUs) by PID, deletes
the namespace and the work directory.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

DAEMON_TIMEOUT = 60  # seconds for libvirtd to answer after it starts

# Run inside the new mount namespace (propagation private), then become the holder.
HOLDER_SCRIPT = """set -e
for d in /run /var/lib/libvirt /var/log/libvirt /var/cache/libvirt; do
  mount -t tmpfs -o mode=0755 tmpfs "$d"
done
mkdir -p /run/lock /run/etc-libvirt
cp -a /etc/libvirt/. /run/etc-libvirt/
mount --bind /run/etc-libvirt /etc/libvirt
rm -f /etc/libvirt/qemu/networks/autostart/*.xml
ip link set lo up
ip link add "$BRIDGE" type bridge forward_delay 0 stp_state 0
ip addr add "$GATEWAY/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
touch "$READY"
exec sleep infinity
"""


class NcLab:
    """virtlogd + libvirtd inside a network + mount namespace of the test's own."""

    def __init__(
        self,
        bridge: str = "cloudbr0",
        subnet: str = "10.97.0",
        dhcp: bool = True,
        cache_max_mb: int = 1024,
        domain_type: str = "qemu",
    ) -> None:
        self.name = f"nct-{secrets.token_hex(4)}"
        self.bridge = bridge
        self.subnet = subnet
        self.gateway = f"{subnet}.1"
        self.dhcp = dhcp
        self.cache_max_mb = cache_max_mb
        self.domain_type = domain_type
        self.holder: subprocess.Popen | None = None
        self.dir: Path | None = None

    # -- paths -----------------------------------------------------------------------------
    @property
    def wrapper(self) -> list[str]:
        """Command prefix that runs a command inside the lab."""
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-n", "--"]

    @property
    def node_config(self) -> str:
        return str(self.dir / "node.json")

    @property
    def cache_dir(self) -> Path:
        return self.dir / "cache"

    @property
    def instances_dir(self) -> Path:
        return self.dir / "instances"

    # -- life cycle ------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        fix_kvm_device()
        # Under /var/tmp with mode 0755 so that the QEMU user can reach the files below.
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir="/var/tmp"))
        self.dir.chmod(0o755)
        for d in (self.cache_dir, self.instances_dir):
            d.mkdir()
            shutil.chown(d, "root", "kvm")
            d.chmod(0o750)
        Path(self.node_config).write_text(
            json.dumps(
                {
                    "cluster": "zone-test",
                    "domain_type": self.domain_type,
                    "bridge": self.bridge,
                    "cache_dir": str(self.cache_dir),
                    "cache_max_mb": self.cache_max_mb,
                    "instances_dir": str(self.instances_dir),
                    "vcpus": os.cpu_count(),
                    "memory_mb": 4096,
                    "reserved_memory_mb": 512,
                },
                indent=2,
            )
        )
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        ready = self.dir / "ready"
        env = {**os.environ, "BRIDGE": self.bridge, "GATEWAY": self.gateway, "READY": str(ready)}
        with open(self.dir / "holder.log", "w") as log:
            self.holder = subprocess.Popen(
                ["ip", "netns", "exec", self.name, "unshare", "--mount", "--propagation", "private"]
                + ["/bin/sh", "-c", HOLDER_SCRIPT],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(lambda: ready.exists() or self.holder.poll() is not None, 30, "lab holder")
        if self.holder.poll() is not None:
            raise RuntimeError(f"lab holder failed: {(self.dir / 'holder.log').read_text()}")
        self.run(["virtlogd", "-d"])
        self.run(["libvirtd", "-d"])
        wait_until(
            lambda: (
                self.run(["virsh", "-c", "qemu:///system", "version"], check=False).returncode == 0
            ),
            DAEMON_TIMEOUT,
            "libvirtd to answer",
        )
        if self.dhcp:
            hosts = self.dir / "dhcp-hosts"
            hosts.write_text("")
            self.run(
                ["dnsmasq", f"--pid-file={self.dir / 'dnsmasq.pid'}"]
                + [f"--interface={self.bridge}", "--bind-interfaces", "--port=0"]
                + [f"--dhcp-range={self.subnet}.2,static,255.255.255.0"]
                + [f"--dhcp-hostsfile={hosts}", f"--dhcp-leasefile={self.dir / 'leases'}"]
            )

    def stop(self) -> None:
        if self.holder is not None and self.holder.poll() is None:
            # Destroy domains through libvirt so it releases cgroups and taps cleanly.
            out = self.virsh("list", "--name", check=False).stdout
            for dom in out.split():
                self.virsh("destroy", dom, check=False)
        netns = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=False
        ).stdout
        if self.name in netns.split():
            stop_netns_processes(self.name)
            subprocess.run(["ip", "netns", "del", self.name], check=False)
        if self.holder is not None and self.holder.poll() is None:
            self.holder.kill()
            self.holder.wait()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------------------
    def cache_put(self, data: bytes) -> Path:
        """Put ``data`` in the image cache as image_cache does: <sha256>, 0644, group kvm."""
        path = self.cache_dir / hashlib.sha256(data).hexdigest()
        path.write_bytes(data)
        shutil.chown(path, "root", "kvm")
        path.chmod(0o644)
        return path

    def cache_test_image(self, image_dir: Path) -> None:
        """The test image's kernel and initramfs and a raw 4 MiB root disk in the cache
        (self.kernel, self.ramdisk, self.disk)."""
        self.kernel = self.cache_put((image_dir / "vmlinuz").read_bytes())
        self.ramdisk = self.cache_put((image_dir / "initrd.img").read_bytes())
        self.disk = self.cache_put(b"\0" * (4 << 20))

    def run(self, cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
        """Run ``cmd`` inside the lab; capture text output."""
        proc = subprocess.run(
            self.wrapper + cmd, capture_output=True, text=True, check=False, timeout=120, **kw
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(["virsh", "-c", "qemu:///system", *args], check=check)

    def restart_libvirtd(self) -> None:
        """Stop libvirtd (by the PID in the lab's /run/libvirtd.pid) and start it again."""
        pid = int(self.run(["cat", "/run/libvirtd.pid"]).stdout.split()[0])
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), 30, "libvirtd to exit")
        self.run(["libvirtd", "-d"])
        wait_until(
            lambda: self.virsh("version", check=False).returncode == 0,
            DAEMON_TIMEOUT,
            "libvirtd to answer",
        )

    def reserve(self, mac: str, ip: str) -> None:
        """A DHCP reservation MAC -> IP (dnsmasq re-reads its hosts file on SIGHUP)."""
        hosts = self.dir / "dhcp-hosts"
        with hosts.open("a") as f:
            f.write(f"{mac},{ip}\n")
        pid = int((self.dir / "dnsmasq.pid").read_text().split()[0])
        os.kill(pid, signal.SIGHUP)

    def domain_state(self, name: str) -> str | None:
        """``virsh domstate`` text (``running``, ``shut off``...), None when undefined."""
        proc = self.virsh("domstate", name, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None


def wait_until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s")


def fix_kvm_device() -> None:
    """Give /dev/kvm udev's root:kvm 0660, as the nc role's kvm_probe does.

    Without it libvirtd re-probes QEMU at every domain start (48 s each, ENVIRONMENT.md).
    """
    try:
        st = os.stat("/dev/kvm")
    except FileNotFoundError:
        return
    kvm_gid = grp.getgrnam("kvm").gr_gid
    if st.st_gid != kvm_gid or stat.S_IMODE(st.st_mode) & 0o060 != 0o060:
        os.chown("/dev/kvm", 0, kvm_gid)
        os.chmod("/dev/kvm", stat.S_IMODE(st.st_mode) | 0o660)


def netns_pids(ns: str) -> list[int]:
    out = subprocess.run(
        ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False
    ).stdout
    return [int(p) for p in out.split()]


def stop_netns_processes(ns: str, timeout: float = 15) -> None:
    """TERM, then KILL, every process in the lab's network namespace (all started by it)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in netns_pids(ns):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while netns_pids(ns) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not netns_pids(ns):
            return
