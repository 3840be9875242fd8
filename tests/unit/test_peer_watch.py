"""The walrus role's peer watch: which answers mean a peer host is there (loopback only)."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.conftest import load_file

COLLECTION = Path(__file__).resolve().parents[2] / "collections/ansible_collections/cloudctl/cloud"
peer_watch = load_file("peer_watch", COLLECTION / "roles/walrus/files/peer_watch.py")


def test_a_listening_or_refusing_host_is_there():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert peer_watch.answers("127.0.0.1", port, timeout=1)
    # Closed now: the kernel refuses, so the host is there (a service restarting).
    assert peer_watch.answers("127.0.0.1", port, timeout=1)


def test_an_unreachable_host_is_not():
    # Refused locally (no route for TCP to the broadcast address): nothing leaves the host.
    assert not peer_watch.answers("255.255.255.255", 9333, timeout=0.5)
