"""The cluster controllers an operation on a zone goes to, and the CC failures it survives.

A zone has one CC or a pair (HA). Both CCs of a pair hold the same DHCP reservations and
elastic-IP rules; the holder of the zone's gateway address serves them (keepalived moves it).
An operation therefore runs on every CC of its zones. As in Eucalyptus, where the secondary
carries on when the primary is gone, one CC of a pair failing (down, unreachable) does not
fail the operation when the other CC of each of its zones did the work: the failure is logged
with the host's name, and the CC is brought back in sync by `cloudctl reconcile --fix` (or the
next deploy) once it is back. A zone whose every CC failed fails the operation as before.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from cloudctl.cloudconfig import CloudConfig
from cloudctl.runner import PlayResult

log = logging.getLogger(__name__)


def zone_ccs(
    config: CloudConfig, records: Iterable[Mapping[str, Any]]
) -> dict[str, tuple[str, ...]]:
    """zone -> the CCs that hold its reservations and rules, for the records' zones."""
    return {r["zone"]: config.ccs_of(r) for r in records}


def hosts(zones: Mapping[str, Iterable[str]]) -> set[str]:
    """Every CC of the zones."""
    return {cc for ccs in zones.values() for cc in ccs}


def out_of_sync(result: PlayResult, zones: Mapping[str, Iterable[str]]) -> list:
    """The failures of CCs that the operation survives: every zone the CC holds in this
    operation has another CC that did not fail."""
    failed = {f.host for f in result.failures}
    survivable = []
    for failure in result.failures:
        served = [tuple(ccs) for ccs in zones.values() if failure.host in ccs]
        if served and all(any(cc not in failed for cc in ccs) for ccs in served):
            survivable.append(failure)
    return survivable


def tolerate(result: PlayResult, zones: Mapping[str, Iterable[str]]) -> PlayResult:
    """`result` without the failures of CCs whose zones another CC served (logged by name,
    to be fixed by reconcile); the same result when there are none."""
    survived = out_of_sync(result, zones)
    if not survived:
        return result
    for failure in survived:
        log.warning(
            "%s; the other CC of its zone did the work: run `cloudctl reconcile --fix` once "
            "%s is back to bring it in sync",
            failure,
            failure.host,
        )
    left = [f for f in result.failures if f not in survived]
    status = result.status
    if not left and status == "failed":  # the play failed only on those CCs
        status = "successful"
    return dataclasses.replace(result, failures=left, status=status)
