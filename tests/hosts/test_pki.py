"""What `mesh.hosts` gives each host of the mesh's CA, without making any namespace:
an intermediate of its own, the root bundle, and never the root's key."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from controlplane.ca import INTERMEDIATE_CERT_FILE, INTERMEDIATE_KEY_FILE, ROOT_KEY_FILE, MeshCA
from controlplane.rotation import HostAuthority
from mesh.hosts import HostsConfig, _provision_pki, issue_intermediates


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
