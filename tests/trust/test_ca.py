"""The mesh CA: what it writes to disk, and what its certificates say and verify as."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification

from controlplane.ca import (
    BUNDLE_FILE,
    ROOT_CERT_FILE,
    ROOT_KEY_FILE,
    IssuedCertificate,
    MeshCA,
    write_operator_credentials,
)
from services.runtime.identity import IdentityError, read_credentials

NOW = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def verify(issued: IssuedCertificate, ca: MeshCA, at: datetime.datetime) -> list[x509.GeneralName]:
    """Verifies `issued` as a TLS client certificate chaining to `ca` at time `at`."""
    store = verification.Store([ca.cert])
    verifier = verification.PolicyBuilder().store(store).time(at).build_client_verifier()
    leaf = x509.load_pem_x509_certificate(issued.cert_pem)
    return list(verifier.verify(leaf, []).subjects or [])


@pytest.fixture(scope="module")
def ca() -> MeshCA:
    return MeshCA.create(now=NOW - datetime.timedelta(days=1))


def test_workload_certificate_chains_to_the_ca_with_its_spiffe_id(ca: MeshCA) -> None:
    issued = ca.issue("user-svc", now=NOW)
    sans = verify(issued, ca, NOW)
    assert x509.UniformResourceIdentifier("spiffe://airline.local/svc/user-svc") in sans
    assert issued.spiffe_id == "spiffe://airline.local/svc/user-svc"


def test_certificate_carries_the_dns_and_ip_names_asked_for(ca: MeshCA) -> None:
    issued = ca.issue("booking-svc", dns_names=["localhost"], ip_addresses=["127.0.0.1"], now=NOW)
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://airline.local/svc/booking-svc"
    ]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


def test_key_is_ecdsa_p256_and_matches_the_certificate(ca: MeshCA, tmp_path: Path) -> None:
    issued = ca.issue("edge", now=NOW)
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp256r1"
    files = write_operator_credentials(ca, tmp_path)
    read_credentials(files)  # Raises when key and certificate do not belong together.


def test_certificate_expires_after_its_lifetime_and_not_later_than_the_ca(ca: MeshCA) -> None:
    issued = ca.issue("auth-svc", lifetime=datetime.timedelta(hours=1), now=NOW)
    verify(issued, ca, NOW + datetime.timedelta(minutes=59))
    with pytest.raises(verification.VerificationError):
        verify(issued, ca, NOW + datetime.timedelta(minutes=61))
    forever = ca.issue("auth-svc", lifetime=datetime.timedelta(days=10_000), now=NOW)
    assert forever.not_after == ca.cert.not_valid_after_utc


def test_default_certificate_lives_a_day_and_is_renewed_at_two_thirds(ca: MeshCA) -> None:
    issued = ca.issue("predict-svc", now=NOW)
    assert issued.not_after == NOW + datetime.timedelta(hours=24)
    assert issued.renew_at == NOW + datetime.timedelta(hours=16)
    assert NOW + datetime.timedelta(hours=15) < issued.renew_at < issued.not_after


def test_a_short_lived_certificate_is_due_after_it_was_issued(ca: MeshCA) -> None:
    """not_before is backdated a minute for clock skew; renewal counts from issue."""
    issued = ca.issue("predict-svc", lifetime=datetime.timedelta(seconds=20), now=NOW)
    assert issued.renew_at == NOW + datetime.timedelta(seconds=20) * 2 / 3


def test_certificate_of_another_ca_does_not_verify(ca: MeshCA) -> None:
    stranger = MeshCA.create(now=NOW - datetime.timedelta(days=1))
    forged = stranger.issue("user-svc", now=NOW)
    with pytest.raises(verification.VerificationError):
        verify(forged, ca, NOW)


def test_names_that_are_not_workload_names_are_refused(ca: MeshCA) -> None:
    for bad in ("", "User-Svc", "svc/../edge", "a" * 64, "user svc"):
        with pytest.raises(IdentityError):
            ca.issue(bad, now=NOW)


def test_ca_directory_is_private_and_the_key_is_0600(tmp_path: Path) -> None:
    directory = tmp_path / "ca"
    MeshCA.load_or_create(directory)
    assert mode(directory) == 0o700
    assert mode(directory / ROOT_KEY_FILE) == 0o600
    assert mode(directory / ROOT_CERT_FILE) == 0o644
    assert (directory / BUNDLE_FILE).read_bytes() == (directory / ROOT_CERT_FILE).read_bytes()


def test_ca_is_loaded_again_from_its_directory(tmp_path: Path) -> None:
    first = MeshCA.load_or_create(tmp_path / "ca")
    second = MeshCA.load_or_create(tmp_path / "ca")
    assert second.cert == first.cert
    verify(second.issue("edge"), first, datetime.datetime.now(datetime.UTC))


def test_operator_files_are_written_0600_in_a_0700_directory(ca: MeshCA, tmp_path: Path) -> None:
    pki = tmp_path / "var" / "pki"
    files = write_operator_credentials(ca, pki)
    assert (files.ca.name, files.cert.name, files.key.name) == (
        "ca.pem",
        "operator.pem",
        "operator-key.pem",
    )
    assert mode(pki) == 0o700
    assert [mode(path) for path in (files.ca, files.cert, files.key)] == [0o600] * 3
    assert sorted(path.name for path in pki.iterdir()) == [
        "ca.pem",
        "operator-key.pem",
        "operator.pem",
    ]
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://airline.local/svc/operator"
    ]


def test_operator_renewal_keeps_the_key_so_a_reader_never_sees_a_mismatched_pair(
    ca: MeshCA, tmp_path: Path
) -> None:
    """The control plane rewrites the operator's files whenever the CA changes; grpcurl
    or a script reading them meanwhile opens the certificate, then the key. Seen in CI
    before: a new key beside the old certificate (ssl: KEY_VALUES_MISMATCH)."""
    pki = tmp_path / "pki"
    first = write_operator_credentials(ca, pki)
    key = first.key.read_bytes()
    serials: set[int] = set()
    stop = threading.Event()
    mismatches: list[str] = []

    def read_pairs() -> None:
        while not stop.is_set():
            try:
                ssl.create_default_context().load_cert_chain(first.cert, first.key)
            except ssl.SSLError as error:
                mismatches.append(str(error))

    reader = threading.Thread(target=read_pairs)
    reader.start()
    try:
        for _ in range(100):
            files = write_operator_credentials(ca, pki)
            cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
            serials.add(cert.serial_number)
    finally:
        stop.set()
        reader.join(timeout=10)
    assert mismatches == []
    assert len(serials) == 100  # Every renewal is a new certificate ...
    assert first.key.read_bytes() == key  # ... of the same key.
    read_credentials(first)


def test_operator_key_that_is_not_an_ec_key_is_replaced(ca: MeshCA, tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    pki.mkdir(mode=0o700)
    (pki / "operator-key.pem").write_bytes(b"not a key")
    files = write_operator_credentials(ca, pki)
    read_credentials(files)
    assert mode(files.key) == 0o600


def test_repr_never_shows_a_key(ca: MeshCA) -> None:
    issued = ca.issue("user-svc", now=NOW)
    assert b"PRIVATE KEY" in issued.key_pem
    assert "PRIVATE" not in repr(issued)
    assert "PRIVATE" not in repr(ca)
