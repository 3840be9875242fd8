# SPDX-License-Identifier: GPL-3.0-or-later
"""The Walrus peer watch: a SeaweedFS peer host that vanished silently is noticed in about a
second, and this host's weed processes are told at once.

    peer_watch.py [--interval S] [--fall N] [--port PORT] PEER...

SeaweedFS 4.x notices a lost peer only when a connection to it fails: a killed process
(connection refused or reset) at once, but a host cut off from the network (frames lost, no
reset) only by gRPC keepalive, which SeaweedFS hard-codes: a master keeps a silent volume
server in its writable topology for 10 s idle + 20 s ping timeout, a filer or volume server
waits 30 s + 20 s on a silent master. Meanwhile every write assigned to a volume with a
replica on the lost host fails (measured: S3 PUTs 20-58 s after a network cut).

Every INTERVAL this probes each PEER with a TCP connect to PORT: an answer or a refusal both
mean the host is there (a restarting service refuses). After FALL probes in a row that time
out, the peer is lost: every TCP socket of this host to it is destroyed (`ss -K`), so each
weed process gets an error at once and turns to the masters and volume servers left (the
master drops the lost volume server and its volumes from the writable ones). While the peer
stays lost this repeats each interval, so a new connection attempt to it fails at once
instead of waiting for a SYN timeout. A line is printed (the service's log) when a peer is
lost and when it is back. Nothing else is touched: the lost host's processes, and this
host's connections to other hosts, are left alone.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
import time


def answers(peer: str, port: int, timeout: float) -> bool:
    """The host is there: it accepted or refused the connection (a timeout: it is not)."""
    try:
        with socket.create_connection((peer, port), timeout=timeout):
            return True
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def destroy_sockets(peer: str) -> None:
    """Every TCP socket of this host to or from the peer, closed with an error (ss -K)."""
    subprocess.run(["ss", "-K", "-t", "-n", "dst", peer], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} peer_watch: {message}", flush=True)


def watch(peer: str, port: int, interval: float, fall: int) -> None:
    missed = 0
    while True:
        started = time.monotonic()
        if answers(peer, port, timeout=interval):
            if missed >= fall:
                log(f"{peer} answers again")
            missed = 0
        else:
            missed += 1
            if missed == fall:
                log(f"{peer} lost ({fall} probes unanswered): its connections closed")
            if missed >= fall:
                destroy_sockets(peer)
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between probes")
    parser.add_argument("--fall", type=int, default=2, help="unanswered probes: lost")
    parser.add_argument("--port", type=int, default=9333, help="TCP port probed")
    parser.add_argument("peers", nargs="+")
    args = parser.parse_args(argv)
    log(f"watching {', '.join(args.peers)} (tcp port {args.port}, every {args.interval} s, "
        f"lost after {args.fall})")  # fmt: skip
    threads = [threading.Thread(target=watch, args=(peer, args.port, args.interval, args.fall),
                                daemon=True) for peer in args.peers]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
