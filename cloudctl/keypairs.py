"""Key pairs: SSH public keys by name, kept only in the state store (no Ansible play).

Table "keypairs"; key pairs are named per account, as EC2's (they have no generated id): a
record's `id` is "ACCOUNT:NAME" (records of clouds from before accounts have the bare name; they
are found by name and account all the same). A record holds the name, the key type, the
public key (one OpenSSH line), its fingerprint as OpenSSH prints it (`SHA256:<base64>`), the
owner (account, user) and the store's `created`/`updated` stamps.

`create` generates an ed25519 key and hands the private key (OpenSSH PEM) to the caller once:
it is never stored and never logged. `import_` stores a public key given by the operator:
ssh-ed25519, ssh-rsa of at least 2048 bits, or ecdsa-sha2-nistp256.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from cloudctl.errors import InputError
from cloudctl.identity import current_owner, visible
from cloudctl.state import Store

TABLE = "keypairs"
MAX_NAME = 255
MIN_RSA_BITS = 2048
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256")


class KeyPairNotFound(InputError):
    """A key pair named by the operator does not exist."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"key pair {name!r} does not exist")


def validate_name(name: str) -> str:
    """1-255 printable ASCII characters, no leading or trailing space."""
    if not 1 <= len(name) <= MAX_NAME:
        raise InputError(f"bad key pair name {name!r}: must be 1 to {MAX_NAME} characters")
    if not all(" " <= ch <= "~" for ch in name):
        raise InputError(f"bad key pair name {name!r}: only printable ASCII characters")
    if name != name.strip(" "):
        raise InputError(f"bad key pair name {name!r}: no leading or trailing space")
    return name


def fingerprint(public_line: str) -> str:
    """SHA256 fingerprint of an OpenSSH public key line, as `ssh-keygen -l` prints it."""
    blob = base64.b64decode(public_line.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def parse_public_key(text: str, source: str = "public key") -> tuple[str, str]:
    """Validate one OpenSSH public key line; returns (key type, normalized line).

    Raises InputError with one line naming `source` and the problem.
    """
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise InputError(f"{source}: empty, expected one OpenSSH public key line")
    if len(lines) > 1:
        raise InputError(f"{source}: {len(lines)} lines, expected one OpenSSH public key line")
    fields = lines[0].split(None, 2)
    if len(fields) < 2:
        raise InputError(f"{source}: not an OpenSSH public key line ('TYPE BASE64 [COMMENT]')")
    key_type, b64 = fields[0], fields[1]
    if key_type not in KEY_TYPES:
        if key_type.startswith("-----BEGIN"):
            raise InputError(f"{source}: a PEM block, expected an OpenSSH public key line")
        raise InputError(
            f"{source}: key type {key_type[:40]!r} not supported (expected {', '.join(KEY_TYPES)})"
        )
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{source}: {key_type} key data is not valid base64") from None
    try:
        key = serialization.load_ssh_public_key(f"{key_type} {b64}".encode())
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        reason = " ".join(str(exc).split()) or "malformed"
        raise InputError(
            f"{source}: {key_type} key data is truncated or malformed ({reason})"
        ) from None
    if key_type == "ssh-rsa":
        assert isinstance(key, rsa.RSAPublicKey)
        if key.key_size < MIN_RSA_BITS:
            raise InputError(
                f"{source}: RSA key of {key.key_size} bits is too weak (at least {MIN_RSA_BITS})"
            )
    elif key_type == "ssh-ed25519":
        assert isinstance(key, ed25519.Ed25519PublicKey)
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    # Re-encode from the blob: drops odd whitespace, keeps the operator's comment.
    line = f"{key_type} {base64.b64encode(blob).decode()}"
    if len(fields) == 3:
        line += f" {fields[2].strip()}"
    return key_type, line


def find(tx: Any, name: str) -> dict[str, Any]:
    """The acting account's key pair NAME (names are per account, as EC2's)."""
    for record in tx.table(TABLE).search(name=name, account=current_owner().account):
        return record
    raise KeyPairNotFound(name)


class KeyPairs:
    """The key pair service over a state store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create(
        self, name: str, deliver: Callable[[str], None] | None = None
    ) -> tuple[dict[str, Any], str]:
        """Generate an ed25519 key pair; store the public key, return (record, private key).

        `deliver(private_key)` runs inside the transaction: when it raises (a file cannot be
        written) nothing is stored. The private key is returned once and kept nowhere.
        """
        validate_name(name)
        key = ed25519.Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ).decode()
        public = (
            key.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
        with self.store.transaction() as tx:
            record = self._insert(tx, name, "ssh-ed25519", public)
            if deliver is not None:
                deliver(private)
        return record, private

    def import_(self, name: str, public_key_text: str, source: str = "public key") -> dict:
        """Store an operator's OpenSSH public key under a name."""
        validate_name(name)
        key_type, line = parse_public_key(public_key_text, source)
        with self.store.transaction() as tx:
            return self._insert(tx, name, key_type, line)

    def list(self) -> list[dict[str, Any]]:
        records = [r for r in self.store.all(TABLE) if visible(r)]
        return sorted(records, key=lambda r: (r["name"], r["account"]))

    def show(self, name: str) -> dict[str, Any]:
        with self.store.snapshot() as snap:
            return find(snap, name)

    def delete(self, name: str) -> dict[str, Any]:
        """Remove a key pair; a missing one is an error (unlike EC2, which ignores it)."""
        with self.store.transaction() as tx:
            return tx.table(TABLE).remove(find(tx, name)["id"])

    @staticmethod
    def _insert(tx: Any, name: str, key_type: str, public_line: str) -> dict[str, Any]:
        table = tx.table(TABLE)
        owner = current_owner()
        if table.search(name=name, account=owner.account):
            raise InputError(f"key pair {name!r} already exists")
        return table.insert(
            {
                "id": f"{owner.account}:{name}",
                "name": name,
                "type": key_type,
                "fingerprint": fingerprint(public_line),
                "public_key": public_line,
                "account": owner.account,
                "user": owner.user,
            }
        )
