"""The chain root -> host intermediate -> workload: what verifies against the root bundle
(checked with `openssl verify`: cryptography's verifier does not evaluate URI name
constraints), how the intermediate is limited, how it is renewed, and the three steps
of a root rotation."""

from __future__ import annotations

import datetime
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from controlplane import pki
from controlplane.ca import (
    BUNDLE_FILE,
    INTERMEDIATE_KEY_FILE,
    ROOT_CERT_FILE,
    ROOT_KEY_FILE,
    MeshCA,
)
from controlplane.rotation import (
    NEXT_ROOT_CERT_FILE,
    HostAuthority,
    RotationError,
    activate_next_root,
    add_next_root,
    finish_rotation,
)
from services.runtime.identity import CredentialFiles, read_credentials


def leaf_pem(chain_pem: bytes) -> bytes:
    end = b"-----END CERTIFICATE-----\n"
    return chain_pem.split(end)[0] + end


def openssl_verify(
    tmp: Path, chain_pem: bytes, bundle_pem: bytes
) -> subprocess.CompletedProcess[str]:
    """`openssl verify` of the chain's leaf, with the chain as untrusted, against the bundle."""
    certs = x509.load_pem_x509_certificates(chain_pem)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "bundle.pem").write_bytes(bundle_pem)
    (tmp / "leaf.pem").write_bytes(leaf_pem(chain_pem))
    untrusted = ["-untrusted", str(tmp / "chain.pem")] if len(certs) > 1 else []
    (tmp / "chain.pem").write_bytes(chain_pem)
    return subprocess.run(
        ["openssl", "verify", "-purpose", "sslclient", "-CAfile", str(tmp / "bundle.pem"),
         *untrusted, str(tmp / "leaf.pem")],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip


def verifies(tmp: Path, chain_pem: bytes, bundle_pem: bytes) -> bool:
    return openssl_verify(tmp, chain_pem, bundle_pem).returncode == 0


@pytest.fixture
def root() -> MeshCA:
    return MeshCA.create()


def test_a_workload_presents_leaf_then_intermediate_and_verifies_against_the_root_only(
    root: MeshCA, tmp_path: Path
) -> None:
    intermediate = root.intermediate("host-1")
    issued = intermediate.issue("user-svc", ip_addresses=["127.0.0.1"])
    leaf, chain = x509.load_pem_x509_certificates(issued.cert_pem)
    assert chain == intermediate.cert
    assert leaf.issuer == intermediate.cert.subject
    assert issued.ca_pem == root.cert_pem
    assert verifies(tmp_path, issued.cert_pem, issued.ca_pem)


def test_the_leaf_alone_does_not_verify_against_the_root(root: MeshCA, tmp_path: Path) -> None:
    issued = root.intermediate("host-1").issue("user-svc")
    assert not verifies(tmp_path, leaf_pem(issued.cert_pem), root.cert_pem)


def test_an_intermediate_has_path_length_zero_and_only_the_trust_domain(root: MeshCA) -> None:
    cert = root.intermediate("host-1").cert
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert basic.value.ca
    assert basic.value.path_length == 0
    names = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert names.critical
    assert names.value.permitted_subtrees == [x509.UniformResourceIdentifier("airline.local")]


def test_a_ca_under_an_intermediate_does_not_verify(root: MeshCA, tmp_path: Path) -> None:
    """Path length 0: a stolen host key cannot mint a CA of its own."""
    intermediate = root.intermediate("host-1")
    rogue = intermediate.intermediate("rogue")
    issued = rogue.issue("user-svc")
    chain = issued.cert_pem + intermediate.cert_pem
    assert not verifies(tmp_path, chain, root.cert_pem)


def test_an_identity_outside_the_trust_domain_does_not_verify(root: MeshCA, tmp_path: Path) -> None:
    intermediate = root.intermediate("host-1")
    good = intermediate.issue("user-svc")
    assert verifies(tmp_path / "good", good.cert_pem, root.cert_pem)
    # A URI SAN of another domain, signed by the intermediate's key.
    cert = _sign_foreign_uri(intermediate)
    assert not verifies(tmp_path / "bad", cert + intermediate.cert_pem, root.cert_pem)


def _sign_foreign_uri(intermediate: MeshCA) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(intermediate.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://evil.example/svc/user-svc")]
            ),
            critical=True,
        )
        .sign(intermediate._key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_a_workload_certificate_never_outlives_its_intermediate(root: MeshCA) -> None:
    intermediate = root.intermediate("host-1", lifetime=datetime.timedelta(hours=1))
    issued = intermediate.issue("edge", lifetime=datetime.timedelta(days=1))
    assert issued.not_after == intermediate.cert.not_valid_after_utc


def test_the_control_plane_keeps_its_intermediate_key_in_memory_only(tmp_path: Path) -> None:
    authority = HostAuthority(tmp_path / "ca")
    names = sorted(path.name for path in (tmp_path / "ca").iterdir())
    assert names == [BUNDLE_FILE, ROOT_KEY_FILE, ROOT_CERT_FILE]
    assert (
        authority.current.cert.issuer
        == x509.load_pem_x509_certificate((tmp_path / "ca" / ROOT_CERT_FILE).read_bytes()).subject
    )


def test_a_due_intermediate_is_renewed_with_a_new_key(tmp_path: Path) -> None:
    now = [datetime.datetime.now(datetime.UTC)]
    authority = HostAuthority(
        tmp_path / "ca", lifetime=datetime.timedelta(days=3), clock=lambda: now[0]
    )
    first = authority.current
    assert not authority.refresh()
    now[0] += datetime.timedelta(days=2, hours=1)  # past two thirds of three days
    assert authority.refresh()
    second = authority.current
    assert second.cert.public_key() != first.cert.public_key()
    assert second.cert.not_valid_after_utc > first.cert.not_valid_after_utc


def test_a_host_without_the_root_reloads_the_intermediate_its_provisioner_renews(
    root: MeshCA, tmp_path: Path
) -> None:
    folder = tmp_path / "host-2" / "ca"
    root.intermediate("host-2").save_intermediate(folder)
    assert stat.S_IMODE((folder / INTERMEDIATE_KEY_FILE).stat().st_mode) == 0o600
    authority = HostAuthority(folder)
    assert not authority.holds_root
    first = authority.current.cert
    root.intermediate("host-2").save_intermediate(folder)
    assert authority.refresh()
    assert authority.current.cert != first
    assert not (folder / ROOT_KEY_FILE).exists()


def test_root_rotation_adds_then_activates_then_drops(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    pki.mint(folder, [])
    authority = HostAuthority(folder / "ca")
    old_root = authority.current.roots[0]
    old_chain = authority.issue("edge")

    pki.rotate_root(folder, "add")
    assert authority.refresh()
    roots = authority.current.roots
    assert len(roots) == 2
    assert roots[0] == old_root
    assert authority.current.cert.issuer == old_root.subject  # still signing under the old
    assert (folder / "ca.pem").read_bytes() == authority.bundle_pem

    pki.rotate_root(folder, "activate")
    assert authority.refresh()
    new_root = authority.current.roots[1]
    assert authority.current.cert.issuer == new_root.subject
    new_chain = authority.issue("edge")
    for name, chain in (("old", old_chain), ("new", new_chain)):
        assert verifies(tmp_path / name, chain.cert_pem, authority.bundle_pem)

    pki.rotate_root(folder, "finish")
    assert authority.refresh()
    assert authority.current.roots == (new_root,)
    assert verifies(tmp_path / "after", authority.issue("edge").cert_pem, authority.bundle_pem)
    assert not verifies(tmp_path / "stale", old_chain.cert_pem, authority.bundle_pem)


def test_rotation_steps_out_of_order_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ca"
    MeshCA.load_or_create(folder)
    with pytest.raises(RotationError):
        activate_next_root(folder)
    add_next_root(folder)
    with pytest.raises(RotationError):
        add_next_root(folder)
    with pytest.raises(RotationError):
        finish_rotation(folder)
    activate_next_root(folder)
    assert not (folder / NEXT_ROOT_CERT_FILE).exists()
    assert stat.S_IMODE((folder / ROOT_KEY_FILE).stat().st_mode) == 0o600


def test_rotation_of_a_folder_without_a_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        pki.main(["rotate-root", str(tmp_path), "add"])


def test_minted_files_hold_the_chain_and_the_bundle(tmp_path: Path) -> None:
    pki.mint(tmp_path, ["predict-svc"])
    files = CredentialFiles(
        tmp_path / "predict-svc.pem", tmp_path / "predict-svc-key.pem", tmp_path / "ca.pem"
    )
    read_credentials(files)  # The key belongs to the first certificate of the chain.
    assert len(x509.load_pem_x509_certificates(files.cert.read_bytes())) == 2
    assert files.ca.read_bytes() == (tmp_path / "ca" / BUNDLE_FILE).read_bytes()
    assert verifies(tmp_path / "v", files.cert.read_bytes(), files.ca.read_bytes())
