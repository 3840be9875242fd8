"""Who acts: accounts, users in accounts, and their access keys (IAM in miniature).

Every resource records its owner (account, user) (DESIGN.md, "Resources"). The code of a
command or an API request acts as one principal: `current_owner()` (a context variable; the
cloud administrator by default, which is what cloudctl on the CLC is). `acting_as(p)` sets it
for a block: the API sets it per request from the request's access key.

Tables: "accounts" (id = the account name, number: 12 digits as AWS's account ids), "users"
(id = "account/user"), "access_keys" (id = the access key id; account, user, status Active or
Inactive, secret encrypted). The admin account ("admin", user "admin") always exists: its users
see and act on every account's resources.

Secrets: SigV4 needs the secret itself (not a hash) to check a signature, so secrets are stored
encrypted (Fernet: AES-128-CBC + HMAC-SHA256) under a key kept beside the state, in
`<state file>.identity-key` (0600). A stolen state file alone reveals no secret. A secret is
shown once, when its key is created.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import secrets
import string
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.fernet import Fernet, InvalidToken

from cloudctl.errors import CloudError, InputError, NotFound
from cloudctl.state import StateError, Store, Transaction

ADMIN_ACCOUNT = "admin"
ACCOUNTS = "accounts"
USERS = "users"
KEYS = "access_keys"
MAX_KEYS_PER_USER = 2  # as Eucalyptus and AWS IAM
ACTIVE, INACTIVE = "Active", "Inactive"

# Eucalyptus account names: lowercase letters, digits and hyphens (DNS-safe, they name
# buckets' owners); IAM user names.
_ACCOUNT_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])$")
_USER_NAME = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,64}$")
_KEY_ALPHABET = string.ascii_uppercase + string.digits


class Principal(NamedTuple):
    account: str
    user: str

    @property
    def admin(self) -> bool:
        return self.account == ADMIN_ACCOUNT

    def __str__(self) -> str:
        return f"{self.account}/{self.user}"


Owner = Principal
ADMIN = Principal(ADMIN_ACCOUNT, "admin")

_CURRENT: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal", default=ADMIN)


def current_owner() -> Principal:
    """The account and user the running code acts as."""
    return _CURRENT.get()


@contextlib.contextmanager
def acting_as(principal: Principal) -> Iterator[Principal]:
    token = _CURRENT.set(principal)
    try:
        yield principal
    finally:
        _CURRENT.reset(token)


def visible(record: dict[str, Any], principal: Principal | None = None) -> bool:
    """Whether the principal may see (and act on) a record: its own account's, or any for
    the admin account."""
    principal = principal or current_owner()
    return principal.admin or record.get("account") == principal.account


def shared(record: dict[str, Any], principal: Principal | None = None) -> bool:
    """Whether the principal may use a record others may use too (images: the admin
    account's images are the cloud's catalogue, public to every account)."""
    return visible(record, principal) or record.get("account") == ADMIN_ACCOUNT


class UnknownAccessKey(CloudError):
    """No access key with this id."""


class InactiveAccessKey(CloudError):
    """The access key exists but is deactivated."""


def parse_principal(text: str) -> Principal:
    """'ACCOUNT/USER' (or 'ACCOUNT', meaning its user 'admin') -> Principal, validated."""
    account, _, user = text.partition("/")
    return Principal(validate_account(account), validate_user(user or "admin"))


def validate_account(name: str) -> str:
    if not _ACCOUNT_NAME.match(name or ""):
        raise InputError(
            f"bad account name {name!r}: 3 to 63 lowercase letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )
    return name


def validate_user(name: str) -> str:
    if not _USER_NAME.match(name or ""):
        raise InputError(f"bad user name {name!r}: 1 to 64 of A-Z a-z 0-9 + = , . @ _ -")
    return name


def _new_access_key_id() -> str:
    return "AKI" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(17))


def recrypt_secrets(
    old_key: Path, new_key: Path
) -> Callable[[str, dict[str, Any]], dict[str, Any]] | None:
    """For a state that moves under another identity key (cloudctl.state.migrate's recrypt):
    a function that re-encrypts an access key's secret from `old_key` to `new_key`. None
    when there is nothing to do (one key, or the state had none: it holds no secret)."""
    if not old_key.is_file() or old_key.read_bytes().strip() == new_key.read_bytes().strip():
        return None
    old, new = Fernet(old_key.read_bytes().strip()), Fernet(new_key.read_bytes().strip())

    def recrypt(table: str, doc: dict[str, Any]) -> dict[str, Any]:
        if table != KEYS:
            return doc
        try:
            secret = old.decrypt(doc["secret"].encode())
        except InvalidToken:
            raise StateError(
                f"access key {doc['id']}: its secret does not decrypt with {old_key}"
            ) from None
        return {**doc, "secret": new.encrypt(secret).decode()}

    return recrypt


def _new_secret() -> str:
    return secrets.token_urlsafe(30)  # 40 characters, as AWS's


class Identity:
    """Accounts, users and access keys of the cloud, in its state store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.key_path = store.key_path

    # --- accounts ------------------------------------------------------------------------

    def create_account(self, name: str) -> dict[str, Any]:
        validate_account(name)
        with self.store.transaction() as tx:
            _ensure_admin(tx)
            if tx.table(ACCOUNTS).get(name) is not None:
                raise InputError(f"account {name} already exists")
            numbers = {a["number"] for a in tx.table(ACCOUNTS).all()}
            account = tx.table(ACCOUNTS).insert(
                {"id": name, "name": name, "number": _account_number(numbers),
                 "account": name, "user": "admin"}
            )  # fmt: skip
            _insert_user(tx, name, "admin")
            return account

    def list_accounts(self) -> list[dict[str, Any]]:
        with self.store.snapshot() as snap:
            return sorted(_accounts(snap), key=lambda a: a["name"])

    def account(self, name: str) -> dict[str, Any]:
        with self.store.snapshot() as snap:
            for account in _accounts(snap):
                if account["name"] == name:
                    return account
        raise NotFound(f"account {name} does not exist")

    def delete_account(self, name: str) -> dict[str, Any]:
        """Delete an account with its users and keys; refused while it owns any resource."""
        if name == ADMIN_ACCOUNT:
            raise InputError("the admin account cannot be deleted")
        with self.store.transaction() as tx:
            account = tx.table(ACCOUNTS).get(name)
            if account is None:
                raise NotFound(f"account {name} does not exist")
            owned = _owned_resources(tx, name)
            if owned:
                raise InputError(f"account {name} still owns {', '.join(owned)}: delete them first")
            for group in tx.table("groups").search(account=name):  # the default group
                tx.table("groups").remove(group["id"])
            for key in tx.table(KEYS).search(account=name):
                tx.table(KEYS).remove(key["id"])
            for user in tx.table(USERS).search(account=name):
                tx.table(USERS).remove(user["id"])
            return tx.table(ACCOUNTS).remove(name)

    # --- users ---------------------------------------------------------------------------

    def create_user(self, principal: Principal) -> dict[str, Any]:
        with self.store.transaction() as tx:
            _ensure_admin(tx)
            _require_account(tx, principal.account)
            if tx.table(USERS).get(str(principal)) is not None:
                raise InputError(f"user {principal} already exists")
            return _insert_user(tx, principal.account, principal.user)

    def list_users(self, account: str | None = None) -> list[dict[str, Any]]:
        with self.store.snapshot() as snap:
            users = _users(snap)
        return sorted(
            (u for u in users if account is None or u["account"] == account),
            key=lambda u: u["id"],
        )

    def user(self, principal: Principal) -> dict[str, Any]:
        for user in self.list_users(principal.account):
            if user["id"] == str(principal):
                return user
        raise NotFound(f"user {principal} does not exist")

    def delete_user(self, principal: Principal) -> dict[str, Any]:
        """Delete a user and its keys (what it created stays its account's)."""
        if principal == ADMIN:
            raise InputError("the cloud administrator admin/admin cannot be deleted")
        with self.store.transaction() as tx:
            user = tx.table(USERS).get(str(principal))
            if user is None:
                raise NotFound(f"user {principal} does not exist")
            for key in tx.table(KEYS).search(account=principal.account, user=principal.user):
                tx.table(KEYS).remove(key["id"])
            return tx.table(USERS).remove(str(principal))

    # --- access keys ---------------------------------------------------------------------

    def create_key(self, principal: Principal) -> dict[str, Any]:
        """A new active key; the returned record holds the secret (shown this once)."""
        fernet = self._fernet(create=True)
        secret = _new_secret()
        with self.store.transaction() as tx:
            _ensure_admin(tx)
            if tx.table(USERS).get(str(principal)) is None:
                _require_account(tx, principal.account)
                raise NotFound(f"user {principal} does not exist")
            keys = tx.table(KEYS).search(account=principal.account, user=principal.user)
            if len(keys) >= MAX_KEYS_PER_USER:
                raise InputError(
                    f"user {principal} has {len(keys)} access keys already (at most "
                    f"{MAX_KEYS_PER_USER}): delete one first"
                )
            key_id = _new_access_key_id()
            record = tx.table(KEYS).insert(
                {"id": key_id, "account": principal.account, "user": principal.user,
                 "status": ACTIVE, "secret": fernet.encrypt(secret.encode()).decode()}
            )  # fmt: skip
        return {**key_view(record), "secret_access_key": secret}

    def list_keys(self, principal: Principal | None = None) -> list[dict[str, Any]]:
        with self.store.snapshot() as snap:
            keys = snap.table(KEYS).all()
        if principal is not None:
            keys = [k for k in keys if (k["account"], k["user"]) == principal]
        return sorted((key_view(k) for k in keys), key=lambda k: k["created"])

    def set_key_status(self, key_id: str, active: bool) -> dict[str, Any]:
        with self.store.transaction() as tx:
            if tx.table(KEYS).get(key_id) is None:
                raise NotFound(f"access key {key_id} does not exist")
            return key_view(tx.table(KEYS).update(key_id, status=ACTIVE if active else INACTIVE))

    def delete_key(self, key_id: str) -> dict[str, Any]:
        with self.store.transaction() as tx:
            if tx.table(KEYS).get(key_id) is None:
                raise NotFound(f"access key {key_id} does not exist")
            return key_view(tx.table(KEYS).remove(key_id))

    def authenticate(self, access_key_id: str) -> tuple[str, Principal]:
        """The secret of an active key and whom it belongs to."""
        record = self.store.get(KEYS, access_key_id) if access_key_id else None
        if record is None:
            raise UnknownAccessKey(f"access key {access_key_id!r} does not exist")
        if record["status"] != ACTIVE:
            raise InactiveAccessKey(f"access key {access_key_id} is inactive")
        try:
            secret = self._fernet().decrypt(record["secret"].encode()).decode()
        except InvalidToken:
            raise StateError(
                f"access key {access_key_id}: its secret does not decrypt with {self.key_path}"
            ) from None
        return secret, Principal(record["account"], record["user"])

    def _fernet(self, create: bool = False) -> Fernet:
        """The key that encrypts secrets, made (0600) on first need."""
        if self.key_path is None:
            raise StateError(f"no identity key for the state in {self.store.name}")
        try:
            return Fernet(self.key_path.read_bytes().strip())
        except FileNotFoundError:
            if not create:
                raise StateError(f"no identity key at {self.key_path}: no secret can be read")
        except (OSError, ValueError) as exc:
            raise StateError(f"cannot read the identity key {self.key_path}: {exc}") from None
        self.key_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.key_path.with_name(f".{self.key_path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key())
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # two processes at once: the first wins
            os.link(tmp, self.key_path)
        tmp.unlink()
        return Fernet(self.key_path.read_bytes().strip())


def key_view(record: dict[str, Any]) -> dict[str, Any]:
    """An access key as shown: never its secret."""
    return {
        "access_key_id": record["id"],
        "account": record["account"],
        "user": record["user"],
        "status": record["status"],
        "created": record["created"],
    }


def account_number(tx: Transaction, name: str) -> str:
    """The 12-digit id of an account (EC2's OwnerId)."""
    account = tx.table(ACCOUNTS).get(name)
    return account["number"] if account else _ADMIN_NUMBER if name == ADMIN_ACCOUNT else ""


_ADMIN_NUMBER = "000000000001"


def _account_number(taken: set[str]) -> str:
    while True:
        number = f"{secrets.randbelow(10**12 - 10**11) + 10**11:012d}"
        if number not in taken and number != _ADMIN_NUMBER:
            return number


def _admin_records() -> tuple[dict[str, Any], dict[str, Any]]:
    account = {"id": ADMIN_ACCOUNT, "name": ADMIN_ACCOUNT, "number": _ADMIN_NUMBER,
               "account": ADMIN_ACCOUNT, "user": "admin"}  # fmt: skip
    user = {"id": str(ADMIN), "name": "admin", "account": ADMIN_ACCOUNT, "user": "admin"}
    return account, user


def _ensure_admin(tx: Transaction) -> None:
    """The admin account and user exist in every state (written on the first identity change)."""
    account, user = _admin_records()
    if tx.table(ACCOUNTS).get(ADMIN_ACCOUNT) is None:
        tx.table(ACCOUNTS).insert(account)
    if tx.table(USERS).get(str(ADMIN)) is None:
        tx.table(USERS).insert(user)


def _accounts(snap: Transaction) -> list[dict[str, Any]]:
    accounts = snap.table(ACCOUNTS).all()
    if not any(a["id"] == ADMIN_ACCOUNT for a in accounts):
        accounts.append(_admin_records()[0])
    return accounts


def _users(snap: Transaction) -> list[dict[str, Any]]:
    users = snap.table(USERS).all()
    if not any(u["id"] == str(ADMIN) for u in users):
        users.append(_admin_records()[1])
    return users


def _require_account(tx: Transaction, name: str) -> None:
    if tx.table(ACCOUNTS).get(name) is None:
        raise NotFound(f"account {name} does not exist")


def _insert_user(tx: Transaction, account: str, user: str) -> dict[str, Any]:
    return tx.table(USERS).insert(
        {"id": f"{account}/{user}", "name": user, "account": account, "user": user}
    )


# Records that end a resource's life: they hold no data and do not keep an account alive.
_GONE = {"terminated", "deleted", "failed", "released"}
_NOT_RESOURCES = {ACCOUNTS, USERS, KEYS, "usage", "journal", "quotas", "scheduler"}


def _made_by_cloud(record: dict[str, Any]) -> bool:
    """Records that hold nothing of the account's: ended resources, its default group."""
    return record.get("state") in _GONE or (
        record["id"].startswith("sg-") and record.get("name") == "default"
    )


def _owned_resources(tx: Transaction, account: str) -> list[str]:
    """'N table' for every table where the account owns live records."""
    owned = []
    for table in sorted(tx.tables() - _NOT_RESOURCES):
        live = [r for r in tx.table(table).search(account=account) if not _made_by_cloud(r)]
        if live:
            owned.append(f"{len(live)} {table}")
    return owned


def credentials_files(
    directory: Path, principal: Principal, key: dict[str, Any], endpoints: dict[str, str],
    region: str, ca_bundle: str | None = None,
) -> list[Path]:  # fmt: skip
    """Write an AWS `credentials` + `config` pair (profile named after the cloud user) and a
    eucarc for a new key, each 0600; returns the paths."""
    profile = f"{principal.account}-{principal.user}"
    ca_line = f"ca_bundle = {ca_bundle}\n" if ca_bundle else ""
    services = "".join(
        f"{name} =\n  endpoint_url = {url}\n" for name, url in sorted(endpoints.items())
    )
    files = {
        "credentials": (
            f"[{profile}]\naws_access_key_id = {key['access_key_id']}\n"
            f"aws_secret_access_key = {key['secret_access_key']}\n"
        ),
        "config": (
            f"[profile {profile}]\nregion = {region}\n{ca_line}services = {profile}\n"
            # Walrus serves buckets by path (a host name endpoint would get virtual hosts).
            "s3 =\n  addressing_style = path\n\n"
            f"[services {profile}]\n{services}"
        ),
        "eucarc": (
            f"# cloudctl credentials of {principal} (source this file)\n"
            f"export AWS_ACCESS_KEY_ID={key['access_key_id']}\n"
            f"export AWS_SECRET_ACCESS_KEY={key['secret_access_key']}\n"
            f"export AWS_DEFAULT_REGION={region}\n"
            + "".join(
                f"export AWS_ENDPOINT_URL_{name.upper()}={url}\n"
                for name, url in sorted(endpoints.items())
            )
            + (f"export EC2_URL={endpoints['ec2']}\n" if "ec2" in endpoints else "")
            + (f"export S3_URL={endpoints['s3']}\n" if "s3" in endpoints else "")
            + (f"export AWS_CA_BUNDLE={ca_bundle}\n" if ca_bundle else "")
        ),
    }
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        written.append(path)
    return written
