"""The mesh's certificate authorities: a self-signed root, the intermediate CA of each
host it signs, and the short-lived workload certificates an intermediate issues.

A workload's identity is the one URI SAN of its certificate,
`spiffe://airline.local/svc/<name>` (SPIFFE X509-SVID). A workload presents its
certificate followed by its host's intermediate; every verifier trusts only the root
bundle (`ca.pem`: one root, two while the root rotates, `rotation.py`). An intermediate
may sign workloads only (path length 0) and only SPIFFE ids of this trust domain (a
URI name constraint). Keys live in files (0600) in directories only their owner may
enter (0700); they are never logged and never leave their process except to those files.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.runtime.identity import (
    TRUST_DOMAIN,
    CredentialFiles,
    spiffe_id,
    validate_workload_name,
)

# In a workload's credential folder: the root bundle it trusts.
CA_CERT_FILE = "ca.pem"
# In a CA folder (`<pki>/ca/`): the root (only where it is kept), the trusted roots,
# and this host's intermediate.
ROOT_CERT_FILE = "root.pem"
ROOT_KEY_FILE = "root-key.pem"
BUNDLE_FILE = "bundle.pem"
INTERMEDIATE_CERT_FILE = "intermediate.pem"
INTERMEDIATE_KEY_FILE = "intermediate-key.pem"
DEFAULT_CA_LIFETIME = datetime.timedelta(days=365)
# An intermediate lives days and is renewed at two thirds: a host whose intermediate
# is not renewed (a retired or compromised one) stops issuing within days.
DEFAULT_INTERMEDIATE_LIFETIME = datetime.timedelta(days=7)
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
    """A workload's certificate chain (leaf first, then its intermediate), its private
    key and the root bundle that vouches for it (PEM)."""

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
    """Signs with one CA key: a root (signs intermediates) or a host's intermediate
    (signs workloads, and sends itself along as their chain)."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        cert: x509.Certificate,
        chain: Sequence[x509.Certificate] = (),
        roots: Sequence[x509.Certificate] = (),
    ) -> None:
        self._key = key
        self.cert = cert
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        # What follows a certificate this CA signs, up to (not including) a root.
        self.chain = tuple(chain)
        self.chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        self.roots = tuple(roots) or (cert,)
        self.bundle_pem = bundle_pem(self.roots)

    def __repr__(self) -> str:
        return f"MeshCA(subject={self.cert.subject.rfc4514_string()!r})"

    @property
    def current(self) -> MeshCA:
        """Itself: a fixed CA signs like a `HostAuthority` (rotation.py) that is not renewed."""
        return self

    @property
    def renew_at(self) -> datetime.datetime:
        """When to replace this CA's certificate (an intermediate's): at two thirds."""
        return renew_time(self.cert.not_valid_before_utc, self.cert.not_valid_after_utc)

    @classmethod
    def create(
        cls,
        lifetime: datetime.timedelta = DEFAULT_CA_LIFETIME,
        now: datetime.datetime | None = None,
    ) -> MeshCA:
        """A new root key and self-signed certificate, in memory only."""
        now = now or _now()
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name(f"airline-mesh root {now:%Y-%m-%d %H:%M:%S}")
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + lifetime)
            # Root -> host intermediate -> workload: one CA below it, no more.
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def intermediate(
        self,
        host: str,
        *,
        lifetime: datetime.timedelta = DEFAULT_INTERMEDIATE_LIFETIME,
        roots: Sequence[x509.Certificate] = (),
        now: datetime.datetime | None = None,
    ) -> MeshCA:
        """A new key and an intermediate CA certificate for `host`, signed by this root.

        Path length 0 (it signs workloads, never another CA) and a URI name constraint
        (it signs SPIFFE ids of this trust domain only), so a host's key is worth its
        own mesh's workload certificates and nothing else. `roots`: the bundle its
        workloads will trust (default: this root alone).
        """
        validate_workload_name(host)
        now = now or _now()
        key = ec.generate_private_key(ec.SECP256R1())
        public = key.public_key()
        constraints = x509.NameConstraints(
            permitted_subtrees=[x509.UniformResourceIdentifier(TRUST_DOMAIN)],
            excluded_subtrees=None,
        )
        cert = (
            x509.CertificateBuilder()
            # Named for its host and its time: which intermediate signed a leaf is in
            # the leaf's issuer, for operators and tests.
            .subject_name(_name(f"airline-mesh intermediate {host} {now:%Y-%m-%dT%H:%M:%S.%f}"))
            .issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(min(now + lifetime, self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            # RFC 5280: name constraints are critical.
            .add_extension(constraints, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return MeshCA(key, cert, chain=(cert,), roots=roots or self.roots)

    def with_roots(self, roots: Sequence[x509.Certificate]) -> MeshCA:
        """The same signer, trusting another root bundle (while the root rotates)."""
        return MeshCA(self._key, self.cert, self.chain, roots)

    @classmethod
    def load_or_create(
        cls, directory: Path, lifetime: datetime.timedelta = DEFAULT_CA_LIFETIME
    ) -> MeshCA:
        """The root kept in `directory` (made 0700), created there on first use (key 0600),
        with the bundle of roots trusted (`bundle.pem`, this root alone at first)."""
        private_dir(directory)
        key_path, cert_path = directory / ROOT_KEY_FILE, directory / ROOT_CERT_FILE
        bundle_path = directory / BUNDLE_FILE
        if key_path.exists() and cert_path.exists():
            key = load_key(key_path)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if cert.public_key() != key.public_key():
                raise ValueError(f"{directory} holds a root key of another certificate")
            roots = load_roots(bundle_path) if bundle_path.exists() else [cert]
            return cls(key, cert, roots=roots)
        ca = cls.create(lifetime)
        # Certificate first: a key without its certificate would be unusable, a
        # certificate without its key is overwritten by the next start.
        write_private(cert_path, ca.cert_pem, 0o644)
        write_private(bundle_path, ca.bundle_pem, 0o644)
        write_private(key_path, _key_pem(ca._key))
        return ca

    def save_key(self, path: Path) -> None:
        """This CA's private key, to a 0600 file."""
        write_private(path, _key_pem(self._key))

    def save_intermediate(self, directory: Path) -> None:
        """Writes this intermediate (key 0600) and its root bundle into `directory`."""
        private_dir(directory)
        write_private(directory / BUNDLE_FILE, self.bundle_pem, 0o644)
        write_private(directory / INTERMEDIATE_KEY_FILE, _key_pem(self._key))
        write_private(directory / INTERMEDIATE_CERT_FILE, self.cert_pem, 0o644)

    @classmethod
    def load_intermediate(cls, directory: Path) -> MeshCA:
        """The intermediate kept in `directory`, trusting its `bundle.pem`."""
        cert = x509.load_pem_x509_certificate((directory / INTERMEDIATE_CERT_FILE).read_bytes())
        key = load_key(directory / INTERMEDIATE_KEY_FILE)
        if cert.public_key() != key.public_key():
            raise ValueError(f"{directory} holds an intermediate key of another certificate")
        return cls(key, cert, chain=(cert,), roots=load_roots(directory / BUNDLE_FILE))

    def issue(
        self,
        name: str,
        *,
        dns_names: Iterable[str] = (),
        ip_addresses: Iterable[str] = (),
        lifetime: datetime.timedelta = DEFAULT_WORKLOAD_LIFETIME,
        now: datetime.datetime | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> IssuedCertificate:
        """A certificate for workload `name`, valid for `lifetime`, and its key: `key`
        when given (a renewal that keeps it), else a fresh P-256 one.

        DNS and IP SANs are for peers that check the address they dialled (gRPC
        clients, Consul's checks of the IP an instance registered).
        """
        key = key or ec.generate_private_key(ec.SECP256R1())
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
            cert_pem=cert.public_bytes(serialization.Encoding.PEM) + self.chain_pem,
            key_pem=_key_pem(key),
            ca_pem=self.bundle_pem,
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


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def bundle_pem(roots: Iterable[x509.Certificate]) -> bytes:
    return b"".join(root.public_bytes(serialization.Encoding.PEM) for root in roots)


def load_roots(path: Path) -> list[x509.Certificate]:
    roots = x509.load_pem_x509_certificates(path.read_bytes())
    if not roots:
        raise ValueError(f"{path} holds no certificate")
    return roots


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """An EC private key from a PEM file, which is made 0600 again if it was not."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} does not hold an EC private key")
    path.chmod(0o600)  # An older or hand-copied file is made private again.
    return key


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
    """`ca.pem`, `operator.pem`, `operator-key.pem` for grpcurl, in `var/pki` (0600 each).

    A renewal keeps the key already there: the certificate and the key are two files,
    and a reader (grpcurl, an operator's script) that opens one, then the other, while
    they are rewritten must still get a matching pair. Only the certificate changes.
    """
    key_file = pki_dir / "operator-key.pem"
    key = None
    if key_file.exists():
        try:
            key = load_key(key_file)
        except (ValueError, TypeError):
            key = None  # Not a plain EC key of ours: a fresh one replaces it.
    issued = ca.issue("operator", lifetime=lifetime, key=key)
    return write_credentials(issued, pki_dir, "operator")
