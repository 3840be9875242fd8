#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Keep a private key and an X.509 certificate: a self-signed CA, or one issued by a CA."""

from __future__ import annotations

DOCUMENTATION = r"""
module: tls_certificate
short_description: Keep a TLS private key and certificate, self-signed CA or issued by one
description:
  - Keeps a private key (EC P-256, PEM, mode 0600) and a certificate (PEM, mode 0644) in
    files. A key that exists and can be read is never replaced.
  - With O(ca=true), a self-signed CA certificate. It is made once and kept while it matches
    the key and has not expired, whatever O(common_name) says later, so that clients which
    trust it keep trusting the certificates it issues.
  - Otherwise a certificate issued by the CA in O(ca_path) and O(ca_key_path), with
    O(common_name), O(subject_alt_names) and O(extended_key_usage). It is issued again (with the
    same key) when it is missing, does not match the key, was not issued by that CA, names other
    names, has other usages, or expires within O(renew_days) days.
  - Check mode reports whether anything would change and why; diff mode shows the
    certificate's subject, issuer, names and validity before and after.
requirements:
  - cryptography (Debian C(python3-cryptography)) on the host
options:
  path:
    description: The certificate file (PEM).
    type: path
    required: true
  key_path:
    description: The private key file (PEM, unencrypted, mode 0600). Made when missing.
    type: path
    required: true
  common_name:
    description: The certificate's subject common name.
    type: str
    required: true
  subject_alt_names:
    description:
      - Host names and IP addresses the certificate is valid for (subjectAltName). An entry
        that parses as an IPv4 or IPv6 address is an IP address, anything else a DNS name.
      - Ignored with O(ca=true).
    type: list
    elements: str
    default: []
  extended_key_usage:
    description:
      - What the certificate may be used for. C(server_auth) for a TLS server, C(client_auth)
        for a TLS client certificate; both for a daemon that is both, such as an etcd member
        (its peers authenticate each other with the same certificate).
      - Ignored with O(ca=true).
    type: list
    elements: str
    choices: [server_auth, client_auth]
    default: [server_auth]
  ca:
    description: Make a self-signed CA certificate instead of a certificate issued by O(ca_path).
    type: bool
    default: false
  ca_path:
    description: The issuing CA's certificate (PEM). Required unless O(ca=true).
    type: path
  ca_key_path:
    description: The issuing CA's private key (PEM, unencrypted). Required unless O(ca=true).
    type: path
  valid_days:
    description: Days a newly issued certificate is valid.
    type: int
    default: 825
  renew_days:
    description: Issue a certificate again when it expires within this many days (not a CA).
    type: int
    default: 30
notes:
  - The files are written atomically (a temporary file in the same directory, then renamed),
    owned by the user the module runs as.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports what would change and why, and changes nothing.
  diff_mode:
    support: full
    details: Shows the certificate's subject, issuer, names and validity before and after.
  platform:
    platforms: posix
author:
  - cloudctl developers (@cloudctl)
"""

EXAMPLES = r"""
- name: Make the cloud's CA once
  cloudctl.cloud.tls_certificate:
    path: /etc/cloud/clc/tls/ca.crt
    key_path: /etc/cloud/clc/tls/ca.key
    common_name: ciab cloud CA
    ca: true
    valid_days: 3650

- name: Issue the API service's certificate for the CLC's names and addresses
  cloudctl.cloud.tls_certificate:
    path: /etc/cloud/clc/tls/api.crt
    key_path: /etc/cloud/clc/tls/api.key
    common_name: clc1
    subject_alt_names: [clc1, 10.213.0.10, 127.0.0.1]
    ca_path: /etc/cloud/clc/tls/ca.crt
    ca_key_path: /etc/cloud/clc/tls/ca.key
"""

RETURN = r"""
subject:
  description: The certificate's subject common name.
  type: str
  returned: always
  sample: clc1
issuer:
  description: The common name of the certificate's issuer (its own for a CA).
  type: str
  returned: always
  sample: ciab cloud CA
subject_alt_names:
  description: The names the certificate is valid for (C(DNS:...), C(IP:...)).
  type: list
  elements: str
  returned: always
  sample: ["DNS:clc1", "IP:10.213.0.10", "IP:127.0.0.1"]
not_after:
  description: End of the certificate's validity (UTC, ISO 8601), null when a new one would be issued in check mode.
  type: str
  returned: always
  sample: "2029-03-10T12:00:00+00:00"
sha256_fingerprint:
  description: SHA-256 of the certificate (DER, hex), null when a new one would be issued in check mode.
  type: str
  returned: always
issued:
  description: Whether the certificate was (or would be) issued by this task.
  type: bool
  returned: always
key_created:
  description: Whether the private key was (or would be) made by this task.
  type: bool
  returned: always
reasons:
  description: Why the certificate was (or would be) issued; empty when it was kept.
  type: list
  elements: str
  returned: always
  sample: ["the names differ: had DNS:clc1, wants DNS:clc1, IP:10.213.0.10"]
"""

import datetime
import ipaddress
import os
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_ERROR = traceback.format_exc()
else:
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_ERROR = None

KEY_MODE = 0o600
CERT_MODE = 0o644
BACKDATE = datetime.timedelta(minutes=5)  # clients whose clock is a little behind accept it
USAGE_OIDS = {"server_auth": "SERVER_AUTH", "client_auth": "CLIENT_AUTH"}  # ExtendedKeyUsageOID


# -- pure functions (unit tested) ------------------------------------------------------------


def general_names(names: list[str]) -> list:
    """subjectAltName entries: an IP address where the text parses as one, else a DNS name."""
    out = []
    for name in names:
        text = name.strip()
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(text)))
        except ValueError:
            out.append(x509.DNSName(text.lower()))
    return out


def name_text(name) -> str:
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    return f"DNS:{name.value}"


def cert_names(cert) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [name_text(n) for n in ext.value]


def cert_usages(cert) -> list[str]:
    """The extended key usages (server_auth, client_auth) of a certificate, sorted."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        return []
    by_oid = {getattr(ExtendedKeyUsageOID, oid): name for name, oid in USAGE_OIDS.items()}
    return sorted(by_oid.get(oid, oid.dotted_string) for oid in ext.value)


def common_name(name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def not_after(cert) -> datetime.datetime:
    """The end of validity, timezone-aware (cryptography < 42 has only the naive UTC one)."""
    aware = getattr(cert, "not_valid_after_utc", None)
    return aware or cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


def is_ca(cert) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def public_der(key) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def signed_by(cert, issuer_cert) -> bool:
    """Whether issuer_cert's key signed cert (and its subject is cert's issuer)."""
    if cert.issuer != issuer_cert.subject:
        return False
    key = issuer_cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(
                cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
            )
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(
                cert.signature,
                cert.tbs_certificate_bytes,
                padding.PKCS1v15(),
                cert.signature_hash_algorithm,
            )
        else:
            return False
    except InvalidSignature:
        return False
    return True


def reissue_reasons(cert, key, *, ca: bool, now, renew_days: int, wanted_cn: str = "",
                    wanted_names: list[str] | None = None, issuer_cert=None,
                    wanted_usages: list[str] | None = None) -> list[str]:  # fmt: skip
    """Why the certificate must be issued (again); [] when it is kept."""
    if cert is None:
        return ["there is no certificate"]
    if key is None or public_der(cert.public_key()) != public_der(key.public_key()):
        return ["the certificate does not match the key"]
    reasons = []
    if not_after(cert) <= now:
        reasons.append(f"it expired on {not_after(cert).isoformat()}")
    if ca:
        if not is_ca(cert):
            reasons.append("it is not a CA certificate")
        return reasons
    if not signed_by(cert, issuer_cert):
        reasons.append(f"it was not issued by the CA {common_name(issuer_cert.subject)}")
    if common_name(cert.subject) != wanted_cn:
        reasons.append(
            f"the common name differs: had {common_name(cert.subject)}, wants {wanted_cn}"
        )
    had = sorted(cert_names(cert))
    if had != sorted(wanted_names or []):
        reasons.append(
            f"the names differ: had {', '.join(had) or 'none'}, wants {', '.join(sorted(wanted_names or []))}"
        )
    wanted_usages = sorted(set(wanted_usages or ["server_auth"]))
    if cert_usages(cert) != wanted_usages:
        reasons.append(
            f"the usages differ: had {', '.join(cert_usages(cert)) or 'none'}, wants {', '.join(wanted_usages)}"
        )
    if not reasons and not_after(cert) - now < datetime.timedelta(days=renew_days):
        reasons.append(f"it expires on {not_after(cert).isoformat()}, within {renew_days} days")
    return reasons


def build_certificate(key, *, cn: str, names: list[str], days: int, now, ca: bool,
                      issuer_cert=None, issuer_key=None, usages: list[str] | None = None):  # fmt: skip
    """A CA certificate signed by its own key, or a server certificate signed by the issuer."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    signer = key if ca else issuer_key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if ca else issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=0), critical=True
        ).add_extension(key_usage(cert_sign=True), critical=True)
    else:
        builder = (
            builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(key_usage(cert_sign=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [
                        getattr(ExtendedKeyUsageOID, USAGE_OIDS[u])
                        for u in sorted(set(usages or ["server_auth"]))
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(general_names(names)), critical=False)
        )
    return builder.sign(signer, hashes.SHA256())


def key_usage(cert_sign: bool):
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not cert_sign,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def describe(cert) -> str:
    """What diff mode shows of a certificate."""
    if cert is None:
        return ""
    lines = [
        f"subject: CN={common_name(cert.subject)}",
        f"issuer: CN={common_name(cert.issuer)}",
        f"ca: {str(is_ca(cert)).lower()}",
        f"names: {', '.join(cert_names(cert)) or 'none'}",
        f"not_after: {not_after(cert).isoformat()}",
        f"sha256: {cert.fingerprint(hashes.SHA256()).hex()}",
    ]
    return "\n".join(lines) + "\n"


# -- files -----------------------------------------------------------------------------------


def read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def load_key(data: bytes | None):
    if data is None:
        return None
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        return None


def load_cert(data: bytes | None):
    if data is None:
        return None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        return None


def write_file(path: str, data: bytes, mode: int) -> None:
    """Write under a temporary name born with `mode`, then rename into place (same directory:
    atomic). Not module.atomic_move: it gives a new file the umask's mode, a key 0644 a moment."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits away
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def file_mode(path: str) -> int | None:
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return None


def core(module: AnsibleModule) -> dict:
    p = module.params
    now = datetime.datetime.now(datetime.timezone.utc)
    if not p["ca"]:
        for option in ("ca_path", "ca_key_path"):
            if not os.path.isfile(p[option]):
                module.fail_json(msg=f"{option}: {p[option]} does not exist (make the CA first)")
    issuer_cert = None if p["ca"] else load_cert(read_bytes(p["ca_path"]))
    issuer_key = None if p["ca"] else load_key(read_bytes(p["ca_key_path"]))
    if not p["ca"]:
        if issuer_cert is None:
            module.fail_json(msg=f"ca_path: {p['ca_path']} is not a PEM certificate")
        if issuer_key is None:
            module.fail_json(msg=f"ca_key_path: {p['ca_key_path']} is not an unencrypted PEM key")
        if public_der(issuer_cert.public_key()) != public_der(issuer_key.public_key()):
            module.fail_json(
                msg=f"ca_key_path: {p['ca_key_path']} is not the key of {p['ca_path']}"
            )
    if not p["common_name"].strip():
        module.fail_json(msg="common_name: must not be empty")
    names = [] if p["ca"] else [n.strip() for n in p["subject_alt_names"] if n.strip()]
    wanted_names = [name_text(n) for n in general_names(names)]

    key = load_key(read_bytes(p["key_path"]))
    key_created = key is None
    if key_created:
        key = ec.generate_private_key(ec.SECP256R1())
    cert = load_cert(read_bytes(p["path"]))
    reasons = reissue_reasons(
        cert, None if key_created else key, ca=p["ca"], now=now, renew_days=p["renew_days"],
        wanted_cn=p["common_name"], wanted_names=wanted_names, issuer_cert=issuer_cert,
        wanted_usages=p["extended_key_usage"],
    )  # fmt: skip
    new_cert = None
    if reasons:
        new_cert = build_certificate(
            key, cn=p["common_name"], names=names, days=p["valid_days"], now=now, ca=p["ca"],
            issuer_cert=issuer_cert, issuer_key=issuer_key, usages=p["extended_key_usage"],
        )  # fmt: skip
    fix_key_mode = not key_created and file_mode(p["key_path"]) != KEY_MODE
    fix_cert_mode = not reasons and file_mode(p["path"]) != CERT_MODE

    if not module.check_mode:
        if key_created:
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            write_file(p["key_path"], pem, KEY_MODE)
        if new_cert is not None:
            write_file(p["path"], new_cert.public_bytes(serialization.Encoding.PEM), CERT_MODE)
        if fix_key_mode:
            os.chmod(p["key_path"], KEY_MODE)
        if fix_cert_mode:
            os.chmod(p["path"], CERT_MODE)

    result_cert = new_cert or cert
    predicted = module.check_mode and new_cert is not None  # a new serial and validity
    result = {
        "changed": bool(key_created or reasons or fix_key_mode or fix_cert_mode),
        "subject": common_name(result_cert.subject),
        "issuer": common_name(result_cert.issuer),
        "subject_alt_names": cert_names(result_cert),
        "not_after": None if predicted else not_after(result_cert).isoformat(),
        "sha256_fingerprint": None if predicted else result_cert.fingerprint(hashes.SHA256()).hex(),
        "issued": bool(reasons),
        "key_created": key_created,
        "reasons": reasons,
    }
    if module._diff:
        result["diff"] = {
            "before_header": p["path"],
            "after_header": p["path"],
            "before": describe(cert) + (f"mode: {file_mode(p['path']) or 0:04o}\n" if cert else ""),
            "after": describe(result_cert) + f"mode: {CERT_MODE:04o}\n",
        }
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "key_path": {"type": "path", "required": True},
            "common_name": {"type": "str", "required": True},
            "subject_alt_names": {"type": "list", "elements": "str", "default": []},
            "extended_key_usage": {
                "type": "list",
                "elements": "str",
                "default": ["server_auth"],
                "choices": ["server_auth", "client_auth"],
            },
            "ca": {"type": "bool", "default": False},
            "ca_path": {"type": "path"},
            "ca_key_path": {"type": "path"},
            "valid_days": {"type": "int", "default": 825},
            "renew_days": {"type": "int", "default": 30},
        },
        required_if=[("ca", False, ("ca_path", "ca_key_path"))],
        supports_check_mode=True,
    )
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(
            msg=missing_required_lib("cryptography (Debian python3-cryptography)"),
            exception=CRYPTOGRAPHY_ERROR,
        )
    module.exit_json(**core(module))


if __name__ == "__main__":
    main()
