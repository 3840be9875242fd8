"""The tls_certificate module through ansible-playbook, checked by a real TLS handshake.

A CA is made once and kept; a server certificate issued by it is kept while it matches, and
issued again (same key) when its names or its CA change. Python's ssl module (OpenSSL) is the
client that must accept it for its names, and refuse it for others.
"""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest
from modhelpers import run_module


@pytest.fixture
def tls(tmp_path):
    d = tmp_path / "tls"
    d.mkdir()
    ca = {"path": str(d / "ca.crt"), "key_path": str(d / "ca.key"), "common_name": "test CA",
          "ca": True, "valid_days": 3650}  # fmt: skip
    server = {"path": str(d / "api.crt"), "key_path": str(d / "api.key"), "common_name": "clc1",
              "subject_alt_names": ["clc1", "127.0.0.1"], "ca_path": ca["path"],
              "ca_key_path": ca["key_path"]}  # fmt: skip
    return d, ca, server


def handshake(cert: str, key: str, cafile: str, server_hostname: str,
              client_cert: tuple[str, str] | None = None) -> None:  # fmt: skip
    """One TLS handshake on loopback: a server with cert/key, a client trusting only cafile
    and checking server_hostname. Raises ssl.SSLCertVerificationError when refused.
    With client_cert (cert, key), the server requires a client certificate from cafile and
    the client presents it; a refused one makes the client's first read fail."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=cafile)
    if client_cert:
        server_ctx.load_verify_locations(cafile)
        server_ctx.verify_mode = ssl.CERT_REQUIRED
        client_ctx.load_cert_chain(*client_cert)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve():
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.recv(1)
                    tls_conn.sendall(b"y")
            except (ssl.SSLError, OSError):
                pass  # one side refused the other's certificate

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls_conn,
            ):
                tls_conn.sendall(b"x")
                if tls_conn.recv(1) != b"y":  # TLS 1.3: a refused client learns it here
                    raise ssl.SSLError("the server closed the connection")
        finally:
            thread.join(timeout=10)


def test_ca_is_made_once_and_kept(tmp_path, tls):
    d, ca, _ = tls
    made = run_module(tmp_path, "tls_certificate", ca)
    assert made["changed"] and made["key_created"] and made["issued"], made
    assert made["subject"] == made["issuer"] == "test CA"
    assert (d / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (d / "ca.crt").stat().st_mode & 0o777 == 0o644
    pem = (d / "ca.crt").read_bytes()

    again = run_module(tmp_path, "tls_certificate", ca)
    assert not again["changed"] and again["reasons"] == [], again
    # Never made again, even when its name would now be another one.
    renamed = run_module(tmp_path, "tls_certificate", {**ca, "common_name": "other CA"})
    assert not renamed["changed"], renamed
    assert (d / "ca.crt").read_bytes() == pem


def test_server_certificate_issued_checked_and_kept(tmp_path, tls):
    d, ca, server = tls
    run_module(tmp_path, "tls_certificate", ca)

    predicted = run_module(tmp_path, "tls_certificate", server, check=True)
    assert predicted["changed"] and predicted["issued"], predicted
    assert predicted["reasons"] == ["there is no certificate"]
    assert "names: DNS:clc1, IP:127.0.0.1" in predicted["diff"]["after"]
    assert not (d / "api.crt").exists() and not (d / "api.key").exists()

    issued = run_module(tmp_path, "tls_certificate", server)
    assert issued["changed"] and issued["issuer"] == "test CA", issued
    assert issued["subject_alt_names"] == ["DNS:clc1", "IP:127.0.0.1"]
    assert (d / "api.key").stat().st_mode & 0o777 == 0o600
    for name in ("clc1", "127.0.0.1"):
        handshake(server["path"], server["key_path"], ca["path"], name)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server["path"], server["key_path"], ca["path"], "elsewhere")

    kept = run_module(tmp_path, "tls_certificate", server)
    assert not kept["changed"], kept
    assert kept["sha256_fingerprint"] == issued["sha256_fingerprint"]
    assert not run_module(tmp_path, "tls_certificate", server, check=True)["changed"]


def test_server_certificate_follows_its_names_and_its_ca(tmp_path, tls):
    d, ca, server = tls
    run_module(tmp_path, "tls_certificate", ca)
    first = run_module(tmp_path, "tls_certificate", server)
    key = (d / "api.key").read_bytes()

    more = {**server, "subject_alt_names": [*server["subject_alt_names"], "10.213.0.10"]}
    renamed = run_module(tmp_path, "tls_certificate", more)
    assert renamed["changed"] and not renamed["key_created"], renamed
    assert renamed["reasons"] == [
        "the names differ: had DNS:clc1, IP:127.0.0.1, wants DNS:clc1, IP:10.213.0.10, IP:127.0.0.1"
    ]
    assert "IP:10.213.0.10" in renamed["diff"]["after"]
    assert "IP:10.213.0.10" not in renamed["diff"]["before"]
    assert (d / "api.key").read_bytes() == key  # the same key
    handshake(server["path"], server["key_path"], ca["path"], "10.213.0.10")

    # Another CA (its files removed and made again): the certificate is issued by the new one.
    Path(ca["path"]).unlink()
    Path(ca["key_path"]).unlink()
    run_module(tmp_path, "tls_certificate", ca)
    reissued = run_module(tmp_path, "tls_certificate", more)
    assert reissued["reasons"] == ["it was not issued by the CA test CA"], reissued
    assert reissued["sha256_fingerprint"] != first["sha256_fingerprint"]
    handshake(server["path"], server["key_path"], ca["path"], "clc1")


def test_client_certificate_for_mutual_tls(tmp_path, tls):
    """A member's certificate for both usages (etcd peers present theirs as clients): a server
    that requires a client certificate from the CA refuses a server-only one and accepts it."""
    _, ca, server = tls
    run_module(tmp_path, "tls_certificate", ca)
    run_module(tmp_path, "tls_certificate", server)
    with pytest.raises(ssl.SSLError):
        handshake(server["path"], server["key_path"], ca["path"], "clc1",
                  client_cert=(server["path"], server["key_path"]))  # fmt: skip

    both = {**server, "extended_key_usage": ["client_auth", "server_auth"]}
    result = run_module(tmp_path, "tls_certificate", both)
    assert result["reasons"] == [
        "the usages differ: had server_auth, wants client_auth, server_auth"
    ]
    handshake(server["path"], server["key_path"], ca["path"], "clc1",
              client_cert=(server["path"], server["key_path"]))  # fmt: skip
    assert not run_module(tmp_path, "tls_certificate", both)["changed"]


def test_missing_ca_fails_with_one_line(tmp_path, tls):
    _, _, server = tls
    result = run_module(tmp_path, "tls_certificate", server)
    assert result["failed"], result
    assert result["msg"] == f"ca_path: {server['ca_path']} does not exist (make the CA first)"
