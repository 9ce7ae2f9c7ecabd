"""A snapshot Envoy rejects: logged as a NACK, not pushed again, last good config kept.

Drives the ADS server's store directly (no Consul), with a real Envoy on the other end.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.ads import XdsServer
from controlplane.resources import (
    CLUSTER_TYPE,
    Instance,
    Snapshot,
    content_version,
    make_snapshot,
)
from controlplane.store import SnapshotStore
from tests.controlplane.conftest import Envoy
from tests.support import wait_for

pytestmark = pytest.mark.slow

GOOD = {"good-svc": (Instance("good-1", "127.0.0.1", 1),)}


@pytest.fixture
def ads(tmp_path: Path) -> Iterator[tuple[SnapshotStore, Path]]:
    """An ADS server on its own socket, and the store that feeds it."""
    store = SnapshotStore()
    server = XdsServer(store, tmp_path / "xds" / "ads.sock")
    server.start()
    try:
        yield store, server.socket
    finally:
        server.stop(0.5)


def rejected_by_envoy() -> Snapshot:
    """GOOD plus a cluster whose connect timeout Envoy's validation refuses."""
    resources = make_snapshot(dict(GOOD, **{"bad-svc": (Instance("bad-1", "127.0.0.1", 2),)}))
    resources.resources[CLUSTER_TYPE]["bad-svc"].connect_timeout.seconds = -1
    versions = {
        type_url: content_version(by_name.values())
        for type_url, by_name in resources.resources.items()
    }
    return Snapshot(resources=resources.resources, versions=versions)


def records(caplog: pytest.LogCaptureFixture, event: str, version: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.getMessage() == event
        and getattr(r, "type", "") == "Cluster"
        and version in (getattr(r, "version", None), getattr(r, "rejected_version", None))
    ]


def cluster_versions(envoy: Envoy) -> dict[str, str]:
    dump = envoy.get("/config_dump?resource=dynamic_active_clusters").json()
    return {c["cluster"]["name"]: c["version_info"] for c in dump["configs"]}


def test_rejected_snapshot_is_not_resent_and_envoy_keeps_the_last_good_one(
    ads: tuple[SnapshotStore, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="controlplane")
    store, socket = ads
    good = make_snapshot(GOOD)
    store.set(good)
    envoy = Envoy(tmp_path / "envoy", socket)
    try:
        good_version = good.versions[CLUSTER_TYPE]
        wait_for(lambda: cluster_versions(envoy) == {"good-svc": good_version}, "good clusters")

        bad = rejected_by_envoy()
        store.set(bad)
        bad_version = bad.versions[CLUSTER_TYPE]
        [nack] = wait_for(lambda: records(caplog, "nack", bad_version), "envoy's NACK")
        assert "duration" in vars(nack)["error"]
        assert cluster_versions(envoy) == {"good-svc": good_version}

        fixed = make_snapshot(dict(GOOD, **{"bad-svc": (Instance("bad-1", "127.0.0.1", 2),)}))
        store.set(fixed)
        fixed_version = fixed.versions[CLUSTER_TYPE]
        wait_for(lambda: records(caplog, "ack", fixed_version), "envoy's ACK of the fix")
        # Envoy ACKs the clusters when it takes them; a new one is active only once it has
        # warmed with its endpoints, a moment later.
        wait_for(
            lambda: set(cluster_versions(envoy)) == {"good-svc", "bad-svc"},
            "the fixed cluster to be active",
        )
        assert len(records(caplog, "sent", bad_version)) == 1
    finally:
        envoy.stop()
