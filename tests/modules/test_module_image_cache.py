"""modules/image_cache.py run through ansible-playbook against a real HTTP server.

The test serves image files over HTTP on 127.0.0.1 (http.server in a thread) and counts the
GETs: hit and miss, bad checksum and size, one download for two concurrent runs, LRU
eviction past a small cap that skips images used by instances, check mode, state=absent.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import modhelpers
import pytest

pytestmark = modhelpers.needs_root
KIB = 1024
SECRET_QUERY = "X-Amz-Signature=0123456789secret"


class ImageServer:
    """Serves ``files`` (path -> bytes) on 127.0.0.1; counts GETs; can hold responses back."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.gets: dict[str, int] = {}
        self.release = threading.Event()
        self.release.set()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?")[0]
                server.gets[path] = server.gets.get(path, 0) + 1
                server.release.wait(60)  # held back by the concurrency test
                body = server.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, data: bytes, path: str | None = None) -> tuple[str, str]:
        """Serve ``data``; return (sha256, presigned-looking URL)."""
        sha = hashlib.sha256(data).hexdigest()
        path = path or f"/images/{sha}"
        self.files[path] = data
        port = self.httpd.server_address[1]
        return sha, f"http://127.0.0.1:{port}{path}?{SECRET_QUERY}"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = ImageServer()
    yield srv
    srv.close()


@pytest.fixture
def node(tmp_path):
    """node.json with a cache dir (root:kvm 0750 as the nc role makes it) and a 1 MB cap."""
    cache = tmp_path / "cache"
    instances = tmp_path / "instances"
    for d in (cache, instances):
        d.mkdir()
        shutil.chown(d, "root", "kvm")
        d.chmod(0o750)
    cfg = tmp_path / "node.json"
    cfg.write_text(
        json.dumps({"cache_dir": str(cache), "cache_max_mb": 1, "instances_dir": str(instances)})
    )
    return {"config": str(cfg), "cache": cache, "instances": instances}


def run(tmp_path, node, check=False, **args):
    return modhelpers.run_module(
        tmp_path, "image_cache", {"node_config": node["config"], **args}, check=check
    )


def blob(n: int, seed: int) -> bytes:
    return bytes([seed]) * n + os.urandom(16)


def test_miss_then_hit(tmp_path, node, server):
    data = blob(300 * KIB, 1)
    sha, url = server.add(data)
    stale = node["cache"] / f".{sha}.dead1234.part"  # left by a run that died half-way
    stale.write_bytes(b"partial")
    first = run(tmp_path, node, sha256=sha, url=url, size=len(data))
    assert not first["failed"], first["msg"]
    assert first["changed"] and not first["hit"]
    assert first["downloaded_bytes"] == len(data)
    assert first["diff"] == {
        "before": {"path": first["path"], "cached": False},
        "after": {"path": first["path"], "cached": True},
    }
    path = node["cache"] / sha
    assert first["path"] == str(path)
    assert path.read_bytes() == data
    st = path.stat()
    assert st.st_mode & 0o777 == 0o644
    assert st.st_gid == node["cache"].stat().st_gid
    assert server.gets == {f"/images/{sha}": 1}
    assert sorted(p.name for p in node["cache"].iterdir()) == [f".{sha}.lock", sha]
    assert SECRET_QUERY not in first["_stdout"]

    os.utime(path, (1000, 1000))
    second = run(tmp_path, node, sha256=sha, url=url)
    assert not second["changed"] and second["hit"]
    assert second["downloaded_bytes"] == 0 and second["evicted"] == []
    assert server.gets == {f"/images/{sha}": 1}
    assert path.stat().st_mtime > time.time() - 120  # the LRU clock moved

    # no URL is needed for a cached file
    third = run(tmp_path, node, sha256=sha)
    assert not third["failed"] and third["hit"]


def test_bad_checksum_and_size_leave_nothing(tmp_path, node, server):
    data = blob(100 * KIB, 2)
    good_sha = hashlib.sha256(b"something else").hexdigest()
    _, url = server.add(data, "/images/wrong")
    res = run(tmp_path, node, sha256=good_sha, url=url)
    assert res["failed"]
    actual = hashlib.sha256(data).hexdigest()
    assert "checksum mismatch" in res["msg"]
    assert good_sha in res["msg"] and actual in res["msg"]
    assert SECRET_QUERY not in res["msg"] and SECRET_QUERY not in res["_stdout"]
    assert [p.name for p in node["cache"].iterdir()] == [f".{good_sha}.lock"]

    sha, url = server.add(data)
    res = run(tmp_path, node, sha256=sha, url=url, size=len(data) + 1)
    assert res["failed"] and "size mismatch" in res["msg"], res["msg"]
    assert not (node["cache"] / sha).exists()
    assert not [p for p in node["cache"].iterdir() if p.name.endswith(".part")]

    res = run(tmp_path, node, sha256=sha, url=url.replace("/images/", "/missing/"))
    assert res["failed"] and "HTTP 404" in res["msg"], res["msg"]

    res = run(tmp_path, node, sha256=sha)
    assert res["failed"] and "not cached on this node and no url" in res["msg"]

    res = run(tmp_path, node, sha256="abc", url=url)
    assert res["failed"] and "64 hex digits" in res["msg"]


def blocked_lock_waiters(lock: Path) -> int:
    """Processes waiting (``->``) for a lock on ``lock``'s inode, from /proc/locks."""
    ino = lock.stat().st_ino
    count = 0
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and fields[-3].split(":")[-1] == str(ino):
            count += 1
    return count


def test_concurrent_runs_download_once(tmp_path, node, server):
    data = blob(500 * KIB, 3)
    sha, url = server.add(data)
    lock = node["cache"] / f".{sha}.lock"
    server.release.clear()  # hold the first download until the second run waits on the lock
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(run, tmp_path, node, sha256=sha, url=url) for _ in range(2)]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if server.gets and lock.exists() and blocked_lock_waiters(lock) >= 1:
                break
            time.sleep(0.1)
        waited = blocked_lock_waiters(lock) if lock.exists() else 0
        server.release.set()
        results = [f.result() for f in futures]
    assert waited == 1, "the second run never waited on the download lock"
    for res in results:
        assert not res["failed"], res.get("msg")
    assert server.gets == {f"/images/{sha}": 1}
    assert sorted(r["hit"] for r in results) == [False, True]
    assert sorted(r["downloaded_bytes"] for r in results) == [0, len(data)]
    assert (node["cache"] / sha).read_bytes() == data


def put_cached(node, data: bytes, mtime: float) -> str:
    sha = hashlib.sha256(data).hexdigest()
    path = node["cache"] / sha
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return sha


def use_images(node, name: str, *shas: str) -> None:
    d = node["instances"] / name
    d.mkdir()
    (d / "instance.json").write_text(json.dumps({"name": name, "images": list(shas)}))


def test_lru_eviction_skips_images_in_use(tmp_path, node, server):
    old = time.time() - 3600
    a = put_cached(node, blob(400 * KIB, 4), old)  # oldest, but used by an instance
    b = put_cached(node, blob(400 * KIB, 5), old + 10)
    c = put_cached(node, blob(400 * KIB, 6), old + 20)
    recent = put_cached(node, blob(10 * KIB, 7), time.time() - 5)  # within evict_grace
    use_images(node, "i-0000aaaa", a)
    data = blob(300 * KIB, 8)
    d, url = server.add(data)

    res = run(tmp_path, node, sha256=d, url=url)
    assert not res["failed"], res["msg"]
    # 1.5 MiB cached, cap 1 MiB: b then c go (LRU); a is in use; d was just ensured
    assert res["evicted"] == [b, c]
    left = {p.name for p in node["cache"].iterdir() if not p.name.startswith(".")}
    assert left == {a, d, recent}
    assert res["cache_bytes"] == sum((node["cache"] / s).stat().st_size for s in left)
    assert not res.get("warnings")

    # still over the cap with nothing evictable: a warning, not a failure
    e = put_cached(node, blob(600 * KIB, 9), old)
    use_images(node, "i-0000bbbb", e, d)
    res = run(tmp_path, node, sha256=a)
    assert not res["failed"] and res["hit"]
    assert res["evicted"] == []
    assert any("over its cap" in w for w in res.get("warnings", [])), res


def test_check_mode_changes_nothing(tmp_path, node, server):
    data = blob(200 * KIB, 10)
    sha, url = server.add(data)
    res = run(tmp_path, node, check=True, sha256=sha, url=url)
    assert not res["failed"], res["msg"]
    assert res["changed"] and res["would_download"] and not res["hit"]
    assert server.gets == {}
    assert list(node["cache"].iterdir()) == []

    path = node["cache"] / put_cached(node, data, 1000)
    res = run(tmp_path, node, check=True, sha256=sha)
    assert not res["changed"] and res["hit"]
    assert path.stat().st_mtime == 1000

    res = run(tmp_path, node, check=True, sha256=sha, state="absent")
    assert res["changed"] and path.exists()


def test_absent_refuses_an_image_in_use(tmp_path, node):
    data = blob(50 * KIB, 11)
    sha = put_cached(node, data, time.time())
    use_images(node, "i-0000cccc", sha)
    res = run(tmp_path, node, sha256=sha, state="absent")
    assert res["failed"] and "i-0000cccc" in res["msg"], res.get("msg")
    assert (node["cache"] / sha).exists()

    shutil.rmtree(node["instances"] / "i-0000cccc")
    res = run(tmp_path, node, sha256=sha, state="absent")
    assert not res["failed"] and res["changed"]
    assert not (node["cache"] / sha).exists()
    res = run(tmp_path, node, sha256=sha, state="absent")
    assert not res["failed"] and not res["changed"]
