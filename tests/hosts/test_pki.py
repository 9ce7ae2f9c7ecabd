"""What `mesh.hosts` gives each host of the mesh's CA: an intermediate of its own, the
root bundle, and never the root's key; first from the files alone, then on running hosts."""

from __future__ import annotations

import socket
import ssl
import stat
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from controlplane.ca import INTERMEDIATE_CERT_FILE, INTERMEDIATE_KEY_FILE, ROOT_KEY_FILE, MeshCA
from controlplane.rotation import HostAuthority
from mesh import netns
from mesh.config import Ports
from mesh.hosts import HostsConfig, _provision_consul, _provision_pki, issue_intermediates
from tests.hosts.cluster import Cluster, NetnsClient


def _config(tmp_path: Path) -> HostsConfig:
    return HostsConfig.from_env({"MESH_VAR_DIR": str(tmp_path)})


def _verify(bundle: Path, chain: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(bundle), "-untrusted", str(chain), str(chain)],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip


def test_each_app_host_gets_its_own_intermediate_and_no_host_gets_the_root_key(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    hosts = config.plan()
    _provision_pki(config, hosts)
    _provision_consul(config, hosts)
    root = MeshCA.load_or_create(config.provision_dir / "ca")
    apps = [h for h in hosts if h.is_app]
    intermediates = [
        x509.load_pem_x509_certificate((h.cfg.pki_dir / "ca" / INTERMEDIATE_CERT_FILE).read_bytes())
        for h in apps
    ]
    keys = {
        c.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        for c in intermediates
    }
    assert len(keys) == len(apps)
    for host, cert in zip(apps, intermediates, strict=True):
        assert cert.issuer == root.cert.subject
        assert f"intermediate {host.name}" in cert.subject.rfc4514_string()
        key = host.cfg.pki_dir / "ca" / INTERMEDIATE_KEY_FILE
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    root_key = (config.provision_dir / "ca" / ROOT_KEY_FILE).read_bytes()
    for host in hosts:
        assert (host.cfg.pki_dir / "ca.pem").read_bytes() == root.bundle_pem
        found = [p for p in host.cfg.var_dir.rglob("*") if p.is_file()]
        assert not [p for p in found if p.name == ROOT_KEY_FILE or root_key in p.read_bytes()]
        # Consul's check certificate carries its chain and verifies against the bundle.
        consul = host.cfg.pki_dir / "consul"
        assert _verify(consul / "ca.pem", consul / "consul-health.pem").returncode == 0


def test_renewed_intermediates_are_picked_up_by_the_hosts_control_plane(tmp_path: Path) -> None:
    config = _config(tmp_path)
    hosts = config.plan()
    _provision_pki(config, hosts)
    host = hosts[1]
    authority = HostAuthority(host.cfg.pki_dir / "ca")
    assert not authority.holds_root
    first = authority.current.cert
    issue_intermediates(config, hosts)
    assert authority.refresh()
    assert authority.current.cert != first
    assert authority.current.cert.issuer == first.issuer


def _served_by_ca_endpoint(address: str, bundle: Path) -> x509.Certificate:
    """The leaf the CA endpoint at `address` serves, its chain checked against `bundle`."""
    context = ssl.create_default_context(cafile=bundle)
    with (
        socket.create_connection((address, Ports().ca), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=address) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_running_hosts_sign_with_their_own_intermediate_under_the_one_root(
    cluster: Cluster, client: NetnsClient
) -> None:
    """Real hosts: each control plane's certificate comes from its host's intermediate and
    verifies, from another machine, against the root bundle alone."""
    provision = Path(cluster.document["provision_dir"])
    root_key = (provision / "ca" / ROOT_KEY_FILE).read_bytes()
    issuers = {}
    for host in cluster.apps:
        bundle = Path(host["var_dir"]) / "pki" / "ca.pem"
        leaf = client.run(partial(_served_by_ca_endpoint, host["address"], bundle))
        issuers[host["name"]] = leaf.issuer.rfc4514_string()
        assert f"intermediate {host['name']} " in issuers[host["name"]]
    assert len(set(issuers.values())) == len(cluster.apps)
    for host in cluster.document["hosts"]:
        found = [p for p in Path(host["var_dir"]).rglob("*") if p.is_file()]
        assert not [p for p in found if p.name == ROOT_KEY_FILE or root_key in p.read_bytes()]


def _remote_successes(host: dict[str, Any]) -> dict[str, int]:
    """From inside `host`: its Envoy's successful requests to booking-svc per upstream address."""
    admin = f"http://127.0.0.1:{Ports().admin}/clusters"
    lines = netns.run_in(host["netns"], lambda: httpx.get(admin, timeout=5).text, timeout=10)
    counts: dict[str, int] = {}
    for line in lines.splitlines():
        parts = line.split("::")
        if parts[0] == "booking-svc" and len(parts) == 4 and parts[2] == "rq_success":
            address = parts[1].rsplit(":", 1)[0]
            counts[address] = counts.get(address, 0) + int(parts[3])
    return {a: n for a, n in counts.items() if a != host["address"]}


def test_every_edge_reaches_instances_on_other_hosts_over_mtls(
    cluster: Cluster, client: NetnsClient
) -> None:
    """Each edge balances over every host's booking-svc: its reads succeed, some answered by
    instances whose certificates come from another host's intermediate."""
    for host in cluster.apps:
        codes = [
            client.request(host["edge"], "GET", "/v1/flights?page_size=1").status_code
            for _ in range(12)
        ]
        assert codes == [200] * 12
        assert sum(_remote_successes(host).values()) > 0
