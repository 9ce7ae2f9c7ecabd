"""The mesh's certificate authority: its key and self-signed certificate, and the
short-lived workload certificates it issues.

A workload's identity is the one URI SAN of its certificate,
`spiffe://airline.local/svc/<name>` (SPIFFE X509-SVID). The CA key lives in one
file (0600) in a directory only its owner may enter (0700); it is never logged and
never leaves this process except to that file.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.runtime.identity import CredentialFiles, spiffe_id, validate_workload_name

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
DEFAULT_CA_LIFETIME = datetime.timedelta(days=365)
DEFAULT_WORKLOAD_LIFETIME = datetime.timedelta(hours=24)
# Renew at two thirds of a certificate's life: a missed renewal still leaves a third
# of it (8 h of a 24 h certificate) to try again before anything fails.
RENEW_FRACTION = 2 / 3
# Issued slightly in the past, so a peer whose clock is a little behind accepts it.
CLOCK_SKEW = datetime.timedelta(minutes=1)
_ORGANIZATION = "airline-mesh"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Writes `data` to `path` atomically, with `mode` from its first byte.

    The file is created beside its target with the final mode and renamed over it, so a
    reader (a server reloading its certificate) sees the old file or the new one, never
    half of one, and a key is never readable by others, not even for a moment.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def private_dir(path: Path) -> Path:
    """Creates `path` (and its parents) if needed and makes it 0700."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


@dataclass(frozen=True)
class IssuedCertificate:
    """A workload's certificate, its private key and the CA that vouches for it (PEM)."""

    name: str
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    not_before: datetime.datetime
    not_after: datetime.datetime

    @property
    def spiffe_id(self) -> str:
        return spiffe_id(self.name)

    @property
    def renew_at(self) -> datetime.datetime:
        """When to replace it: at `RENEW_FRACTION` of its life."""
        return renew_time(self.not_before, self.not_after)

    def __repr__(self) -> str:
        # The key must not reach a log line through a stray `%r`.
        return f"IssuedCertificate(name={self.name!r}, not_after={self.not_after.isoformat()})"


class MeshCA:
    """Signs workload certificates with the mesh's CA key."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self._key = key
        self.cert = cert
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)

    def __repr__(self) -> str:
        return f"MeshCA(subject={self.cert.subject.rfc4514_string()!r})"

    @classmethod
    def create(
        cls,
        lifetime: datetime.timedelta = DEFAULT_CA_LIFETIME,
        now: datetime.datetime | None = None,
    ) -> MeshCA:
        """A new CA key and self-signed certificate, in memory only."""
        now = now or _now()
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
                x509.NameAttribute(NameOID.COMMON_NAME, "airline-mesh CA"),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + lifetime)
            # Signs workload certificates only, never another CA.
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def load_or_create(
        cls, directory: Path, lifetime: datetime.timedelta = DEFAULT_CA_LIFETIME
    ) -> MeshCA:
        """The CA kept in `directory` (made 0700), created there on first use (key 0600)."""
        private_dir(directory)
        key_path, cert_path = directory / CA_KEY_FILE, directory / CA_CERT_FILE
        if key_path.exists() and cert_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_path} does not hold an EC private key")
            key_path.chmod(0o600)  # An older or hand-copied file is made private again.
            return cls(key, x509.load_pem_x509_certificate(cert_path.read_bytes()))
        ca = cls.create(lifetime)
        # Certificate first: a key without its certificate would be unusable, a
        # certificate without its key is overwritten by the next start.
        write_private(cert_path, ca.cert_pem, 0o644)
        write_private(key_path, _key_pem(ca._key))
        return ca

    def issue(
        self,
        name: str,
        *,
        dns_names: Iterable[str] = (),
        ip_addresses: Iterable[str] = (),
        lifetime: datetime.timedelta = DEFAULT_WORKLOAD_LIFETIME,
        now: datetime.datetime | None = None,
    ) -> IssuedCertificate:
        """A fresh P-256 key and a certificate for workload `name`, valid for `lifetime`.

        DNS and IP SANs are for peers that check the address they dialled (gRPC
        clients, Consul's checks of the IP an instance registered).
        """
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self.sign(
            name,
            key.public_key(),
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            lifetime=lifetime,
            now=now,
        )
        return IssuedCertificate(
            name=name,
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=_key_pem(key),
            ca_pem=self.cert_pem,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )

    def sign(
        self,
        name: str,
        public_key: ec.EllipticCurvePublicKey,
        *,
        dns_names: Iterable[str] = (),
        ip_addresses: Iterable[str] = (),
        lifetime: datetime.timedelta = DEFAULT_WORKLOAD_LIFETIME,
        now: datetime.datetime | None = None,
    ) -> x509.Certificate:
        """A certificate for a key its workload keeps (it never reaches the CA)."""
        validate_workload_name(name)
        if lifetime <= datetime.timedelta(0):
            raise ValueError("a certificate lifetime must be positive")
        now = now or _now()
        # Never outlives the CA: a chain with an expired root does not verify anyway.
        not_after = min(now + lifetime, self.cert.not_valid_after_utc)
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id(name))]
        sans += [x509.DNSName(dns) for dns in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        return (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
                        x509.NameAttribute(NameOID.COMMON_NAME, name),
                    ]
                )
            )
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            # Every workload is both: it serves calls and makes them.
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )

    def _public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()


def renew_time(not_before: datetime.datetime, not_after: datetime.datetime) -> datetime.datetime:
    """`RENEW_FRACTION` into a certificate's life, counted from when it was issued.

    `not_before` is backdated by CLOCK_SKEW; counting from it, a short-lived
    certificate (20 s in tests) would be due before it was issued.
    """
    issued = not_before + CLOCK_SKEW
    return issued + max(not_after - issued, datetime.timedelta(0)) * RENEW_FRACTION


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_credentials(
    issued: IssuedCertificate, directory: Path, stem: str | None = None
) -> CredentialFiles:
    """Writes `<stem>.pem`, `<stem>-key.pem` and `ca.pem` into `directory` (0700), all 0600.

    Each file is replaced atomically; the certificate goes last, so a reader that
    reloads when the certificate changes finds the matching key already there.
    """
    stem = stem or issued.name
    private_dir(directory)
    files = CredentialFiles(
        cert=directory / f"{stem}.pem",
        key=directory / f"{stem}-key.pem",
        ca=directory / CA_CERT_FILE,
    )
    write_private(files.ca, issued.ca_pem)
    write_private(files.key, issued.key_pem)
    write_private(files.cert, issued.cert_pem)
    return files


def write_operator_credentials(
    ca: MeshCA, pki_dir: Path, lifetime: datetime.timedelta = DEFAULT_WORKLOAD_LIFETIME
) -> CredentialFiles:
    """`ca.pem`, `operator.pem`, `operator-key.pem` for grpcurl, in `var/pki` (0600 each)."""
    issued = ca.issue("operator", lifetime=lifetime)
    return write_credentials(issued, pki_dir, "operator")
