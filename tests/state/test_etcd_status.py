"""`cloudctl service status`'s etcd rows, as the members of a real 3-member cluster answer
(tests/state/conftest.py), and a member that does not answer."""

from __future__ import annotations

from dataclasses import replace

from cloudctl.health import etcd_statuses
from tests.state.conftest import etcd_state
from tests.state.etcd_cluster import free_port


def test_one_row_per_member_one_leader(etcd_cluster):
    config = etcd_state(etcd_cluster)
    gone = f"http://127.0.0.1:{free_port()}"
    config = replace(config, endpoints=(*config.endpoints, gone))
    rows = etcd_statuses(config, {"127.0.0.1": "lab"})
    assert [(r.host, r.component) for r in rows] == [("lab", "etcd")] * 4
    answering, silent = rows[:3], rows[3]
    assert all(r.status == "healthy" for r in answering), answering
    assert [r.detail.split(";")[0] for r in answering].count("leader") == 1
    assert all("3 of 4 members answer" in r.detail for r in answering)
    followers = [r.detail for r in answering if r.detail.startswith("follower")]
    assert len(followers) == 2 and all("(leader lab)" in d for d in followers)
    assert silent.status == "unhealthy" and silent.detail.startswith(f"{gone} does not answer")
