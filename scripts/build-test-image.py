#!/usr/bin/env python3
"""Build the tiny cloud test image (kernel + initramfs) from Debian packages only.

Output (default: <project>/.cache/test-image/):
  vmlinuz        Debian's kernel (linux-image-amd64's versioned dependency)
  initrd.img     gzip'd newc cpio: busybox-static, dropbear + its libraries, the virtio /
                 iso9660 / cdrom modules, and an /init that reads a NoCloud seed
  manifest.json  sha256s, package versions and the cache key

The build is cached: when the cache key (this script + the candidate versions of the
packages) matches the manifest and the outputs exist, nothing is rebuilt.
Works as root or not (apt-get download and dpkg -x need no privileges).
See images/README.md.
"""

import argparse
import fcntl
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = PROJECT / ".cache" / "test-image"

# Modules the initramfs loads (their dependencies are added from each .ko's modinfo).
ROOT_MODULES = [
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_scsi",
    "virtio_console",
    "isofs",
    "cdrom",
    "sr_mod",
    "sd_mod",
    "ata_piix",
    "ata_generic",
]

INIT = r"""#!/bin/sh
# Tiny cloud test image: NoCloud seed, DHCP, SSH (dropbear), stable volume names.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
log() { echo "CLOUD-TEST: $*"; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /run /tmp /var/log /var/run /root /mnt/seed /dev/disk/by-id
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
echo 1 > /proc/sys/kernel/printk 2>/dev/null
log "init started, kernel $(uname -r)"

loaded=""
while read -r m; do
  [ -n "$m" ] || continue
  if insmod "/lib/modules/$m.ko" 2>/dev/null; then loaded="$loaded $m"; fi
done < /etc/modules.order
log "modules loaded:$loaded"

# hotplug: Debian's kernel has no uevent helper, so listen on netlink (busybox uevent)
[ -e /proc/sys/kernel/hotplug ] && echo /sbin/hotplug > /proc/sys/kernel/hotplug
setsid uevent /sbin/hotplug </dev/null >/dev/null 2>&1 &
mdev -s
/sbin/disk-links
for l in /dev/disk/by-id/virtio-*; do
  [ -e "$l" ] && log "volume $l -> $(readlink "$l")"
done

# network: DHCP on eth0 (the udhcpc script logs the address)
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up
  udhcpc -i eth0 -s /etc/udhcpc.script -t 10 -T 2 -b -x hostname:"$(hostname)" >/dev/null 2>&1 \
    || log "dhcp: no lease yet (udhcpc keeps trying in the background)"
else
  log "no eth0"
fi

# NoCloud seed: an ISO9660 (or vfat) filesystem labelled cidata
seed=""
for i in 1 2 3 4 5 6 7 8 9 10; do
  for b in /sys/block/vd* /sys/block/sr* /sys/block/sd*; do
    [ -e "$b" ] || continue
    dev=/dev/${b##*/}
    [ -b "$dev" ] || mdev -s
    label=$(blkid "$dev" 2>/dev/null | sed -n 's/.*LABEL="\([^"]*\)".*/\1/p')
    case "$label" in cidata|CIDATA) ;; *) [ -z "$label" ] || continue ;; esac
    if mount -t iso9660 -o ro "$dev" /mnt/seed 2>/dev/null \
       || mount -t vfat -o ro "$dev" /mnt/seed 2>/dev/null; then
      if [ -f /mnt/seed/meta-data ]; then seed=$dev; break 2; fi
      umount /mnt/seed
    fi
  done
  sleep 1
done

val() { sed -n "s/^$1:[[:space:]]*//p" "$2" 2>/dev/null | head -n1 | tr -d "\"'\r" | sed 's/[[:space:]]*$//'; }
keys() {  # keys SECTION FILE: SSH keys listed (or mapped) under a top-level YAML key
  awk -v sec="$1" '
    index($0, sec ":") == 1 { insec = 1; line = substr($0, length(sec) + 2) }
    insec && index($0, sec ":") != 1 && /^[^ \t-]/ { insec = 0 }
    insec && index($0, sec ":") != 1 { line = $0 }
    insec && match(line, /(ssh-|ecdsa-|sk-)[^"\047\r]*/) {
      k = substr(line, RSTART, RLENGTH); sub(/[ \t]+$/, "", k); print k
    }
    { line = "" }' "$2" 2>/dev/null
}

mkdir -p /root/.ssh && chmod 700 /root /root/.ssh
: > /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys
if [ -n "$seed" ]; then
  log "seed found on $seed"
  iid=$(val instance-id /mnt/seed/meta-data)
  hn=$(val local-hostname /mnt/seed/meta-data)
  [ -n "$hn" ] || hn=$(val hostname /mnt/seed/meta-data)
  log "seed instance-id $iid"
  if [ -n "$hn" ]; then
    hostname "$hn"; echo "$hn" > /etc/hostname; touch /run/seed-hostname
    log "hostname $hn"
  fi
  keys public-keys /mnt/seed/meta-data >> /root/.ssh/authorized_keys
  if [ -f /mnt/seed/user-data ]; then
    if head -c 2 /mnt/seed/user-data | grep -q '^#!'; then
      cp /mnt/seed/user-data /run/user-data && chmod 700 /run/user-data
      log "user-data: script"
    elif head -n1 /mnt/seed/user-data | grep -q '^#cloud-config'; then
      keys ssh_authorized_keys /mnt/seed/user-data >> /root/.ssh/authorized_keys
      log "user-data: cloud-config"
    fi
  fi
  log "ssh keys installed: $(grep -c . /root/.ssh/authorized_keys)"
else
  log "no seed found"
fi

# SSH: dropbear with host keys generated on first boot. The public keys go to the console as
# cloud-init prints them, so that a client checks the key it is offered against them.
mkdir -p /etc/dropbear
for t in ed25519 ecdsa; do
  f=/etc/dropbear/dropbear_${t}_host_key
  [ -f "$f" ] || dropbearkey -t "$t" -f "$f" >/dev/null 2>&1
  log "host key $(dropbearkey -y -f "$f" 2>/dev/null | sed -n 's/^Fingerprint: //p')"
done
{
  echo "-----BEGIN SSH HOST KEY KEYS-----"
  for t in ed25519 ecdsa; do
    dropbearkey -y -f /etc/dropbear/dropbear_${t}_host_key 2>/dev/null | grep -E '^(ssh-|ecdsa-)'
  done
  echo "-----END SSH HOST KEY KEYS-----"
}
if dropbear -p 22 -r /etc/dropbear/dropbear_ed25519_host_key \
    -r /etc/dropbear/dropbear_ecdsa_host_key; then
  log "dropbear listening on port 22"
else
  log "dropbear failed"
fi

log "ready"
if [ -x /run/user-data ]; then
  ( /run/user-data; log "user-data exit $?" ) </dev/null &
fi
exec /sbin/init
"""

UDHCPC = r"""#!/bin/sh
# udhcpc event script: address, default route, DNS, hostname (unless the seed set one)
log() { echo "CLOUD-TEST: $*" > /dev/console; }
case "$1" in
  deconfig)
    ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
    if [ -n "$router" ]; then
      while route del default gw 0.0.0.0 dev "$interface" 2>/dev/null; do :; done
      for r in $router; do route add default gw "$r" dev "$interface"; break; done
    fi
    : > /etc/resolv.conf
    [ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    if [ -n "$hostname" ] && [ ! -e /run/seed-hostname ]; then hostname "$hostname"; fi
    [ "$1" = bound ] && log "got address $ip on $interface (router ${router:-none})" ;;
esac
exit 0
"""

HOTPLUG = r"""#!/bin/sh
# kernel hotplug helper: mdev, then refresh /dev/disk/by-id
/sbin/mdev "$@"
case "$DEVPATH" in */block/*) /sbin/disk-links --log ;; esac
exit 0
"""

DISK_LINKS = r"""#!/bin/sh
# /dev/disk/by-id/virtio-<serial> links (busybox has no udev)
mkdir -p /dev/disk/by-id
for l in /dev/disk/by-id/virtio-*; do
  if [ -L "$l" ] && [ ! -e "$l" ]; then
    rm -f "$l"
    [ "$1" = --log ] && echo "CLOUD-TEST: volume $l removed" > /dev/console
  fi
done
for b in /sys/block/vd*; do
  [ -e "$b/serial" ] || continue
  s=$(cat "$b/serial" 2>/dev/null)
  [ -n "$s" ] || continue
  l=/dev/disk/by-id/virtio-$s
  [ "$(readlink "$l")" = "../../${b##*/}" ] && continue
  ln -sfn "../../${b##*/}" "$l"
  [ "$1" = --log ] && echo "CLOUD-TEST: volume $l -> ../../${b##*/}" > /dev/console
done
exit 0
"""

INITTAB = """::respawn:/bin/cttyhack /bin/sh -l
::ctrlaltdel:/sbin/poweroff
::shutdown:/bin/umount -a -r
"""


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw).stdout


def depends(*pkgs):
    """{package: [direct Depends/PreDepends]} (one apt-cache call for all)."""
    out = run(["apt-cache", "depends", "--no-recommends", "--no-suggests", *pkgs])
    deps, cur = {}, None
    for line in out.splitlines():
        if not line.startswith(" "):
            cur = line.strip()
            deps[cur] = []
        elif m := re.match(r"\s+\|?(?:Pre)?Depends: ([^<\s]\S*)", line):
            deps[cur].append(m.group(1))
    return deps


def candidates(pkgs):
    out = run(["apt-cache", "policy", *pkgs])
    found = dict(
        re.findall(r"^(\S+):\n(?:\s+Installed: .*\n)?\s+Candidate: (\S+)", out, re.MULTILINE)
    )
    for p in pkgs:
        if found.get(p, "(none)") == "(none)":
            sys.exit(f"build-test-image: no candidate version for {p}")
    return {p: found[p] for p in pkgs}


def resolve_packages():
    first = depends("linux-image-amd64", "dropbear-bin")
    kernel_pkg = next(d for d in first["linux-image-amd64"] if d.startswith("linux-image-"))
    libs, level = set(), first["dropbear-bin"]
    while level:  # library packages, recursively (libtomcrypt1 brings libgmp10)
        level = [d for d in level if (d.startswith("lib") or d == "zlib1g") and d not in libs]
        libs.update(level)
        level = [d for ds in depends(*level).values() for d in ds] if level else []
    pkgs = ["linux-image-amd64", kernel_pkg, "busybox-static", "dropbear-bin"] + sorted(libs)
    return kernel_pkg, candidates(pkgs)


def download(pkgs, debdir):
    debdir.mkdir(parents=True, exist_ok=True)
    debs = {}
    for p, v in pkgs.items():
        fname = f"{p}_{v.replace(':', '%3a')}_amd64.deb"
        if not (debdir / fname).exists():
            subprocess.run(
                ["apt-get", "download", f"{p}={v}"],
                cwd=debdir,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        debs[p] = debdir / fname
    return debs


def modinfo_depends(data):
    m = re.search(rb"\x00depends=([^\x00]*)\x00", b"\x00" + data)
    return [d for d in m.group(1).decode().split(",") if d] if m else []


def read_ko(path):
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        data = lzma.decompress(data)
    elif path.name.endswith(".zst"):
        data = subprocess.run(["zstd", "-dc", str(path)], check=True, capture_output=True).stdout
    return data


def collect_modules(moddir):
    index = {}
    for p in moddir.rglob("*.ko*"):
        name = re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", "", p.name).replace("-", "_")
        index[name] = p
    order, seen, blobs = [], set(), {}

    def visit(name):
        name = name.replace("-", "_")
        if name in seen:
            return
        seen.add(name)
        if name not in index:
            return  # built into the kernel
        data = read_ko(index[name])
        for dep in modinfo_depends(data):
            visit(dep)
        order.append(name)
        blobs[name] = data

    for m in ROOT_MODULES:
        visit(m)
    return order, blobs


def needed_libs(binaries, root):
    """Shared libraries (resolved inside the unpacked packages) + the dynamic loader."""
    libs = {}
    for b in binaries:
        out = run(["ldd", str(b)])
        for line in out.splitlines():
            m = re.match(r"\s*(\S+) => (\S+)", line) or re.match(r"\s*(/\S+) \(", line)
            if not m:
                continue
            soname = os.path.basename(m.group(1))
            if soname.startswith("linux-vdso"):
                continue
            found = [p for p in root.rglob(soname) if not p.is_dir()]
            if not found:
                sys.exit(f"build-test-image: {soname} not found in the unpacked packages")
            libs[soname] = found[0]
    return libs


def cpio_newc(root):
    buf = io.BytesIO()
    ino = 1

    def entry(name, mode, data=b"", nlink=1):
        nonlocal ino
        nameb = name.encode() + b"\0"
        hdr = "070701" + "".join(
            f"{x:08x}" for x in (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(nameb), 0)
        )
        ino += 1
        buf.write(hdr.encode() + nameb)
        buf.write(b"\0" * (-(110 + len(nameb)) % 4))
        buf.write(data)
        buf.write(b"\0" * (-len(data) % 4))

    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        if rel != ".":
            entry(rel, stat.S_IFDIR | (os.stat(dirpath).st_mode & 0o7777), nlink=2)
        for f in sorted(filenames) + [
            d for d in dirnames if os.path.islink(os.path.join(dirpath, d))
        ]:
            p = os.path.join(dirpath, f)
            name = os.path.normpath(os.path.join(rel, f))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                entry(name, stat.S_IFLNK | 0o777, os.readlink(p).encode())
            else:
                entry(name, stat.S_IFREG | (st.st_mode & 0o7777), Path(p).read_bytes())
    entry("TRAILER!!!", 0)
    return buf.getvalue()


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build(out, force=False):
    out.mkdir(parents=True, exist_ok=True)
    kernel_pkg, pkgs = resolve_packages()
    key = hashlib.sha256(
        Path(__file__).read_bytes() + json.dumps(pkgs, sort_keys=True).encode()
    ).hexdigest()
    manifest_path = out / "manifest.json"
    if not force and manifest_path.exists():
        try:
            old = json.loads(manifest_path.read_text())
            if old.get("cache_key") == key and all(
                (out / f).exists() and sha256(out / f) == s for f, s in old["files"].items()
            ):
                return old, True
        except (ValueError, KeyError):
            pass

    debs = download(pkgs, out / "debs")
    with tempfile.TemporaryDirectory(prefix="test-image-") as tmp:
        tmp = Path(tmp)
        x = tmp / "x"
        for d in debs.values():
            subprocess.run(["dpkg", "-x", str(d), str(x)], check=True)
        kver = kernel_pkg[len("linux-image-") :]
        vmlinuz = x / "boot" / f"vmlinuz-{kver}"
        moddir = x / "lib" / "modules" / kver

        r = tmp / "root"
        for d in (
            "bin",
            "sbin",
            "usr/bin",
            "usr/sbin",
            "lib/modules",
            "lib64",
            "etc",
            "proc",
            "sys",
            "dev",
            "run",
            "tmp",
            "root",
            "mnt",
            "var/log",
        ):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "tmp", 0o1777)
        os.chmod(r / "root", 0o700)

        busybox = x / "bin" / "busybox"
        shutil.copy2(busybox, r / "bin" / "busybox")
        for applet in run([str(busybox), "--list-full"]).split():
            dst = r / applet
            if applet == "bin/busybox" or dst.exists() or dst.is_symlink():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to("/bin/busybox")

        bins = {
            "usr/sbin/dropbear": x / "usr/sbin/dropbear",
            "usr/bin/dropbearkey": x / "usr/bin/dropbearkey",
            "usr/bin/dbclient": x / "usr/bin/dbclient",
        }
        for rel, src in bins.items():
            shutil.copy2(src, r / rel)
        lib_dir = r / "lib" / "x86_64-linux-gnu"
        lib_dir.mkdir(parents=True, exist_ok=True)
        for soname, src in needed_libs(bins.values(), x).items():
            if soname.startswith("ld-linux"):
                shutil.copy2(src, r / "lib64" / soname)
            else:
                shutil.copy2(src, lib_dir / soname)
        (r / "bin" / "ssh").symlink_to("/usr/bin/dbclient")

        order, blobs = collect_modules(moddir)
        for name in order:
            (r / "lib" / "modules" / f"{name}.ko").write_bytes(blobs[name])
        (r / "etc" / "modules.order").write_text("\n".join(order) + "\n")

        files = {
            "init": (INIT, 0o755),
            "sbin/hotplug": (HOTPLUG, 0o755),
            "sbin/disk-links": (DISK_LINKS, 0o755),
            "etc/udhcpc.script": (UDHCPC, 0o755),
            "etc/inittab": (INITTAB, 0o644),
            "etc/passwd": ("root:x:0:0:root:/root:/bin/sh\n", 0o644),
            "etc/shadow": ("root:*:19000:0:99999:7:::\n", 0o600),
            "etc/group": ("root:x:0:\n", 0o644),
            "etc/shells": ("/bin/sh\n/bin/ash\n", 0o644),
            "etc/hostname": ("cloud-test\n", 0o644),
            "etc/hosts": ("127.0.0.1 localhost\n", 0o644),
            "etc/profile": (
                "export PATH=/sbin:/bin:/usr/sbin:/usr/bin\nexport PS1='\\h# '\n",
                0o644,
            ),
        }
        for rel, (text, mode) in files.items():
            p = r / rel
            if p.is_symlink():
                p.unlink()
            p.write_text(text)
            os.chmod(p, mode)

        initrd = gzip.compress(cpio_newc(r), compresslevel=6, mtime=0)
        (out / "initrd.img.tmp").write_bytes(initrd)
        shutil.copyfile(vmlinuz, out / "vmlinuz.tmp")
    os.replace(out / "initrd.img.tmp", out / "initrd.img")
    os.replace(out / "vmlinuz.tmp", out / "vmlinuz")

    manifest = {
        "cache_key": key,
        "kernel_version": kver,
        "packages": pkgs,
        "modules": order,
        "files": {f: sha256(out / f) for f in ("vmlinuz", "initrd.img")},
        "sizes": {f: (out / f).stat().st_size for f in ("vmlinuz", "initrd.img")},
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest, False


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    ap.add_argument("--force", action="store_true", help="rebuild even if cached")
    ap.add_argument("--json", action="store_true", help="print the manifest as JSON")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:  # builds started at once (test fixtures) take turns
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest, cached = build(out, args.force)
    if args.json:
        print(json.dumps(dict(manifest, out=str(out), cached=cached), indent=2))
    else:
        print(f"{'cached' if cached else 'built'}: kernel {manifest['kernel_version']}")
        for f in ("vmlinuz", "initrd.img", "manifest.json"):
            print(out / f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
