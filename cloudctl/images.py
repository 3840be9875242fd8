"""Images: machine images (EMI) and their kernels (EKI) and ramdisks (ERI).

Table "images". Every image file is stored once in the Walrus bucket `images` under its
sha256 (the object key), so registering the same file twice uploads it once. A record holds:
id (emi-/eki-/eri-), name, kind (machine | kernel | ramdisk), format (qcow2 | raw), size,
sha256, kernel_id, ramdisk_id, description, state ("available"), the owner (account, user)
and the store's created/updated stamps.

`register` validates everything and uploads first, then records in one transaction: when
an upload fails nothing is recorded. A kernel or ramdisk file already registered by the
same owner (same sha256) is reused instead of recorded again. Names are unique per owner
among machine images; kernels and ramdisks are named after their file.

`register_stored` registers a machine image whose file a user already put in Walrus through
the S3 gateway (EC2's RegisterImage with an ImageLocation "bucket/key"): the object is copied
inside Walrus (server side) to a staging key of `images`, read once from there to hash it (a
copy nobody else writes, so the hash is the content's), and copied again under its sha256. The
user must own the bucket (cloudctl.buckets, as the S3 gateway decides); the record keeps the
location it came from.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudctl import buckets, quotas, walrus
from cloudctl.errors import InputError, NotFound
from cloudctl.identity import Principal, current_owner, shared, visible
from cloudctl.ids import kind_of, new_id, parse_id
from cloudctl.state import Store
from cloudctl.walrus import IMAGES, WalrusError

TABLE = "images"
KINDS = ("machine", "kernel", "ramdisk")
ID_KIND = {"machine": "image", "kernel": "kernel", "ramdisk": "ramdisk"}  # -> ids.PREFIXES
QCOW2_MAGIC = b"QFI\xfb"
CHUNK = 1024 * 1024  # bytes read at a time: hashing takes constant memory
MAX_NAME = 255
URL_EXPIRES = 3600  # seconds a presigned image URL stays valid
STAGING = "staging/"  # keys of `images` that hold a stored object's copy while it is hashed

# progress(label, total bytes, bytes done since the last call)
Progress = Callable[[str, int, int], None]


class ImageNotFound(InputError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"image {ref!r} does not exist")


class ImageNameTaken(InputError):
    def __init__(self, name: str) -> None:
        super().__init__(f"image name {name!r} is already taken")


class LocationUnreadable(InputError):
    """An image location that is not an object of one of the caller's buckets (or none)."""


@dataclass(frozen=True)
class ImageFile:
    """What one read of a file tells: its size, sha256 and disk format."""

    path: Path
    size: int
    sha256: str
    format: str  # qcow2 | raw


@dataclass
class RegisterResult:
    image: dict[str, Any]  # the EMI record
    # one row per file: kind, id, file, size, sha256, object (uploaded | reused),
    # record (new | reused)
    files: list[dict[str, Any]] = field(default_factory=list)


def detect_format(head: bytes) -> str:
    """qcow2 by its magic "QFI\\xfb", anything else is a raw disk."""
    return "qcow2" if head.startswith(QCOW2_MAGIC) else "raw"


def inspect_file(path: str | os.PathLike[str], progress: Progress | None = None) -> ImageFile:
    """Read a file once: size, sha256 and format. One clear line on a file that cannot be."""
    path = Path(path)
    try:
        # O_NONBLOCK: a FIFO must not block the open (it is refused below)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    info = os.fstat(fd)
    problem = ""
    if stat.S_ISDIR(info.st_mode):
        problem = "is a directory"
    elif not stat.S_ISREG(info.st_mode):
        problem = "is not a regular file"
    elif info.st_size == 0:
        problem = "is empty"
    if problem:
        os.close(fd)
        raise InputError(f"{path} {problem}, expected an image file")
    with os.fdopen(fd, "rb") as fh:
        digest = hashlib.sha256()
        head = b""
        size = 0
        try:
            while chunk := fh.read(CHUNK):
                if size == 0:
                    head = chunk[: len(QCOW2_MAGIC)]
                digest.update(chunk)
                size += len(chunk)
                if progress is not None:
                    progress(f"reading {path.name}", info.st_size, len(chunk))
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from None
    if size == 0:
        raise InputError(f"{path} is empty, expected an image file")
    return ImageFile(path=path, size=size, sha256=digest.hexdigest(), format=detect_format(head))


def validate_name(name: str) -> str:
    """1-255 printable ASCII characters, no leading or trailing space (as EC2 image names)."""
    if not 1 <= len(name) <= MAX_NAME:
        raise InputError(f"bad image name {name!r}: must be 1 to {MAX_NAME} characters")
    if not all(" " <= ch <= "~" for ch in name):
        raise InputError(f"bad image name {name!r}: only printable ASCII characters")
    if name != name.strip(" "):
        raise InputError(f"bad image name {name!r}: no leading or trailing space")
    if kind_of(name) is not None:
        raise InputError(f"bad image name {name!r}: looks like a resource id")
    return name


class Images:
    """The image service over a state store and, for what touches objects, Walrus."""

    def __init__(self, store: Store, s3: walrus.Client | None = None) -> None:
        self.store = store
        self._s3 = s3

    @property
    def s3(self) -> walrus.Client:
        if self._s3 is None:
            raise RuntimeError("this operation needs Walrus: pass a walrus.Client")
        return self._s3

    # --- register ------------------------------------------------------------------------

    def register(
        self,
        name: str,
        file: str | os.PathLike[str],
        kernel: str | os.PathLike[str] | None = None,
        ramdisk: str | os.PathLike[str] | None = None,
        description: str = "",
        progress: Progress | None = None,
    ) -> RegisterResult:
        """Upload the files (those Walrus lacks) and record the image and its kernel/ramdisk."""
        validate_name(name)
        owner = current_owner()
        with self.store.snapshot() as snap:  # before uploading; checked again to record
            self._check_new_machine(snap, name, owner)
        files = {"machine": inspect_file(file, progress)}
        if kernel is not None:
            files["kernel"] = inspect_file(kernel, progress)
        if ramdisk is not None:
            files["ramdisk"] = inspect_file(ramdisk, progress)

        uploaded = {f.sha256 for f in files.values() if self._ensure_object(f, progress)}
        with self.store.transaction() as tx:
            table = tx.table(TABLE)
            self._check_new_machine(tx, name, owner)
            # A concurrent deregister may have deleted a reused object since: check under
            # the lock (deregister deletes objects under it), upload again if so.
            for f in files.values():
                if f.sha256 not in uploaded and self._ensure_object(f, progress):
                    uploaded.add(f.sha256)
            rows, ids = [], {}
            for kind in ("kernel", "ramdisk"):
                if kind in files:
                    record, new = self._kernel_or_ramdisk(table, kind, files[kind], owner)
                    ids[kind] = record["id"]
                    rows.append(_row(record, files[kind], uploaded, new))
            image = table.insert(
                _record(
                    new_id("image"),
                    name,
                    "machine",
                    files["machine"],
                    owner,
                    kernel_id=ids.get("kernel"),
                    ramdisk_id=ids.get("ramdisk"),
                    description=description,
                )
            )
            rows.insert(0, _row(image, files["machine"], uploaded, True))
        return RegisterResult(image=image, files=rows)

    def _ensure_object(self, f: ImageFile, progress: Progress | None) -> bool:
        """Upload a file under its sha256 unless Walrus holds it; True when uploaded."""
        if walrus.object_exists(self.s3, IMAGES, f.sha256):
            return False
        report = None
        if progress is not None:

            def report(n: int) -> None:
                progress(f"uploading {f.path.name}", f.size, n)

        walrus.upload_file(
            self.s3, IMAGES, f.sha256, f.path, progress=report, metadata={"sha256": f.sha256}
        )
        # The key promises the content: a file that changed since it was hashed must not
        # stay under it (a size check catches truncation and growth).
        head = walrus.head_object(self.s3, IMAGES, f.sha256)
        stored = None if head is None else int(head.get("ContentLength", -1))
        if stored != f.size:
            if head is not None:
                walrus.delete_object(self.s3, IMAGES, f.sha256)
            raise InputError(
                f"{f.path} changed while it was uploaded ({f.size} bytes hashed, "
                f"{stored} stored): register it again"
            )
        return True

    def register_stored(
        self,
        name: str,
        bucket: str,
        key: str,
        kernel_id: str | None = None,
        ramdisk_id: str | None = None,
        description: str = "",
    ) -> dict[str, Any]:
        """Register the object `bucket/key` of Walrus as a machine image of the caller, with
        an existing kernel and ramdisk (by id); returns the record. Refused (before anything is
        copied) when the caller does not own the bucket or the object does not exist."""
        validate_name(name)
        owner = current_owner()
        location = f"{bucket}/{key}"
        with self.store.snapshot() as snap:  # before copying; checked again to record
            self._check_new_machine(snap, name, owner)
            _check_linked(snap.table(TABLE), kernel_id, ramdisk_id)
            readable = _bucket_readable(snap, bucket, owner)
        if not readable or walrus.head_object(self.s3, bucket, key) is None:
            account = owner.account
            raise LocationUnreadable(f"{location}: no such object in a bucket of {account}")
        staging = STAGING + secrets.token_hex(8)
        walrus.copy_object(self.s3, bucket, key, IMAGES, staging)
        try:
            f = self._inspect_object(staging, location)
            self._ensure_copy(staging, f)
            with self.store.transaction() as tx:
                self._check_new_machine(tx, name, owner)
                _check_linked(tx.table(TABLE), kernel_id, ramdisk_id)
                self._ensure_copy(staging, f)  # a concurrent deregister may have deleted it
                record = _record(
                    new_id("image"), name, "machine", f, owner,
                    kernel_id=kernel_id, ramdisk_id=ramdisk_id, description=description,
                )  # fmt: skip
                return tx.table(TABLE).insert({**record, "location": location})
        finally:
            walrus.delete_object(self.s3, IMAGES, staging)

    def _inspect_object(self, key: str, location: str) -> ImageFile:
        """Size, sha256 and format of an object of `images`, read once."""
        digest = hashlib.sha256()
        head = b""
        size = 0
        for chunk in walrus.read_object(self.s3, IMAGES, key, CHUNK):
            if size == 0:
                head = chunk[: len(QCOW2_MAGIC)]
            digest.update(chunk)
            size += len(chunk)
        if size == 0:
            raise InputError(f"{location}: the object is empty, expected an image file")
        return ImageFile(Path(location), size, digest.hexdigest(), detect_format(head))

    def _ensure_copy(self, staging: str, f: ImageFile) -> None:
        """The staged object under its sha256, unless Walrus holds it already."""
        if not walrus.object_exists(self.s3, IMAGES, f.sha256):
            walrus.copy_object(
                self.s3, IMAGES, staging, IMAGES, f.sha256, metadata={"sha256": f.sha256}
            )

    def _check_new_machine(self, tx: Any, name: str, owner: Principal) -> None:
        """The owner may record one more machine image of this name (unique, within quota)."""
        if self._machine_named(tx.table(TABLE).all(), name, owner) is not None:
            raise ImageNameTaken(name)
        quotas.check(tx, owner, {"ec2:quota-imagenumber": 1})

    @staticmethod
    def _machine_named(records: list[dict], name: str, owner: Any) -> dict | None:
        for r in records:
            if (r["kind"], r["name"], r["account"], r["user"]) == ("machine", name, *owner):
                return r
        return None

    @staticmethod
    def _kernel_or_ramdisk(table: Any, kind: str, f: ImageFile, owner: Any) -> tuple[dict, bool]:
        """The owner's record of this kernel/ramdisk file, inserted when there is none."""
        same = table.search(kind=kind, sha256=f.sha256, account=owner.account, user=owner.user)
        if same:
            return min(same, key=lambda r: r["created"]), False
        record = _record(new_id(ID_KIND[kind]), f.path.name, kind, f, owner, fmt="raw")
        return table.insert(record), True

    # --- read ----------------------------------------------------------------------------

    def list(self, kind: str | None = None) -> list[dict[str, Any]]:
        if kind is not None and kind not in KINDS:
            raise InputError(f"bad image kind {kind!r}: expected {', '.join(KINDS)}")
        records = self.store.search(TABLE, **({"kind": kind} if kind else {}))
        records = [r for r in records if shared(r)]
        return sorted(records, key=lambda r: (KINDS.index(r["kind"]), r["name"], r["id"]))

    def show(self, ref: str) -> dict[str, Any]:
        """An image by id (emi-/eki-/eri-) or by the name of one of the caller's images."""
        with self.store.snapshot() as snap:
            return self._find(snap.table(TABLE), ref)

    @staticmethod
    def _find(table: Any, ref: str) -> dict[str, Any]:
        if kind_of(ref.strip().lower()) in ID_KIND.values():
            record = table.get(parse_id(ref, list(ID_KIND.values())))
            if record is None or not shared(record):
                raise ImageNotFound(ref)
            return record
        owner = current_owner()
        record = Images._machine_named(table.all(), ref, owner)
        if record is None:
            raise ImageNotFound(ref)
        return record

    # --- deregister ----------------------------------------------------------------------

    def deregister(self, image_id: str) -> dict[str, Any]:
        """Remove an image record; delete its object when no other record uses it.

        A kernel or ramdisk still used by a machine image is refused. The object is deleted
        under the store's lock, before the commit: when Walrus fails, the record stays.
        Returns the removed record with `object_deleted` (bool).
        """
        image_id = parse_id(image_id, list(ID_KIND.values()))
        with self.store.transaction() as tx:
            table = tx.table(TABLE)
            record = table.get(image_id)
            if record is None or not visible(record):
                raise ImageNotFound(image_id)
            if record["kind"] != "machine":
                users = sorted(r["id"] for r in table.search(**{f"{record['kind']}_id": image_id}))
                if users:
                    raise InputError(
                        f"{record['kind']} {image_id} is used by {', '.join(users)}: "
                        "deregister those first"
                    )
            table.remove(image_id)
            same_object = table.search(sha256=record["sha256"])
            if not same_object:
                try:
                    walrus.delete_object(self.s3, IMAGES, record["sha256"])
                except WalrusError as exc:
                    raise type(exc)(f"{image_id} not deregistered: {exc}") from None
        return {**record, "object_deleted": not same_object}

    # --- for other services --------------------------------------------------------------

    def image_urls(self, image: str | dict[str, Any], expires: int = URL_EXPIRES) -> dict:
        """Presigned GET URLs of a machine image and its kernel/ramdisk, for hosts to fetch.

        Returns {"image": SOURCE, "kernel": SOURCE | None, "ramdisk": SOURCE | None}, where
        SOURCE = {id, kind, format, size, sha256, url}: JSON, ready for extravars.
        """
        with self.store.snapshot() as snap:
            table = snap.table(TABLE)
            record = self._find(table, image) if isinstance(image, str) else image
            linked = {}
            for kind in ("kernel", "ramdisk"):
                ref = record.get(f"{kind}_id")
                linked[kind] = self._find(table, ref) if ref else None

        def source(r: dict[str, Any] | None) -> dict[str, Any] | None:
            if r is None:
                return None
            url = walrus.presigned_get(self.s3, IMAGES, r["sha256"], expires)
            keys = ("id", "kind", "format", "size", "sha256")
            return {**{k: r[k] for k in keys}, "url": url}

        return {"image": source(record), **{k: source(v) for k, v in linked.items()}}


def _check_linked(table: Any, kernel_id: str | None, ramdisk_id: str | None) -> None:
    """A kernel and a ramdisk (by id) that exist and the caller may use."""
    for kind, ref in (("kernel", kernel_id), ("ramdisk", ramdisk_id)):
        if ref is None:
            continue
        record = table.get(ref)
        if record is None or record["kind"] != kind or not shared(record):
            raise NotFound(f"{kind} {ref} does not exist")


def _bucket_readable(tx: Any, bucket: str, owner: Principal) -> bool:
    """The S3 gateway's rule (cloudctl.api.s3): an account reaches its own buckets, the
    admin account every bucket."""
    record = tx.table(buckets.TABLE).get(bucket)
    return owner.admin or (record is not None and record["account"] == owner.account)


def _record(
    image_id: str,
    name: str,
    kind: str,
    f: ImageFile,
    owner: Any,
    fmt: str | None = None,
    kernel_id: str | None = None,
    ramdisk_id: str | None = None,
    description: str = "",
) -> dict[str, Any]:
    return {
        "id": image_id,
        "name": name,
        "kind": kind,
        "format": fmt or f.format,
        "size": f.size,
        "sha256": f.sha256,
        "kernel_id": kernel_id,
        "ramdisk_id": ramdisk_id,
        "description": description,
        "state": "available",
        "account": owner.account,
        "user": owner.user,
    }


def _row(record: dict[str, Any], f: ImageFile, uploaded: set[str], new: bool) -> dict:
    return {
        "kind": record["kind"],
        "id": record["id"],
        "file": str(f.path),
        "size": f.size,
        "sha256": f.sha256,
        "object": "uploaded" if f.sha256 in uploaded else "reused",
        "record": "new" if new else "reused",
    }
