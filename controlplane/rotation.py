"""Keeping a host's CA current: its intermediate renewed before it expires, and the root
rotated through a bundle that trusts two roots for a while.

A CA folder (`<pki>/ca/`, 0700) holds, where the root is kept (the operator's or the
first host's): `root.pem` and `root-key.pem` (the root that signs intermediates),
`bundle.pem` (every root trusted) and, during a rotation, `next-root.pem` and
`next-root-key.pem`. A host given only an intermediate by its provisioner holds
`intermediate.pem`, `intermediate-key.pem` and `bundle.pem`, and no root key.

Rotating the root takes three steps, each safe once the one before has spread
(`python -m controlplane.pki rotate-root DIR add|activate|finish`):

1. add: a new root joins the bundle, not signing yet. Control planes push the bundle
   to Envoy at once; workloads take it with their next certificate. Wait one workload
   certificate lifetime: then every verifier trusts both roots.
2. activate: the new root signs; each control plane takes a new intermediate under
   it, and every certificate it issues from then on chains to the new root. Chains to
   the old root still verify. Wait one workload lifetime: then none is left in use.
3. finish: the old root leaves the bundle (and the folder).
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography import x509

from controlplane.ca import (
    BUNDLE_FILE,
    DEFAULT_CA_LIFETIME,
    DEFAULT_INTERMEDIATE_LIFETIME,
    DEFAULT_WORKLOAD_LIFETIME,
    INTERMEDIATE_CERT_FILE,
    INTERMEDIATE_KEY_FILE,
    ROOT_CERT_FILE,
    ROOT_KEY_FILE,
    IssuedCertificate,
    MeshCA,
    bundle_pem,
    load_roots,
    private_dir,
    write_private,
)

log = logging.getLogger(__name__)

NEXT_ROOT_CERT_FILE = "next-root.pem"
NEXT_ROOT_KEY_FILE = "next-root-key.pem"
_WATCHED = (
    ROOT_CERT_FILE,
    ROOT_KEY_FILE,
    BUNDLE_FILE,
    INTERMEDIATE_CERT_FILE,
    INTERMEDIATE_KEY_FILE,
)


class RotationError(RuntimeError):
    """A rotation step asked for out of order."""


def add_next_root(directory: Path, lifetime: datetime.timedelta = DEFAULT_CA_LIFETIME) -> MeshCA:
    """Step 1: a new root, trusted beside the current one, not signing yet; the current."""
    current = _root(directory)
    if (directory / NEXT_ROOT_CERT_FILE).exists():
        raise RotationError("a new root was added already: activate it next")
    new = MeshCA.create(lifetime)
    write_private(directory / NEXT_ROOT_CERT_FILE, new.cert_pem, 0o644)
    new.save_key(directory / NEXT_ROOT_KEY_FILE)
    _write_bundle(directory, [*current.roots, new.cert])
    return MeshCA.load_or_create(directory)


def activate_next_root(directory: Path) -> MeshCA:
    """Step 2: the added root becomes the one that signs intermediates."""
    _root(directory)
    cert_path, key_path = directory / NEXT_ROOT_CERT_FILE, directory / NEXT_ROOT_KEY_FILE
    if not cert_path.exists():
        raise RotationError("no new root to activate: add one first")
    bundle = load_roots(directory / BUNDLE_FILE)
    new = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if new not in bundle:
        raise RotationError("the new root is not in the bundle yet: add it again")
    # Key first: a reader seeing the new key with the old certificate refuses the pair
    # and reads again; it never signs with a mismatched one.
    write_private(directory / ROOT_KEY_FILE, key_path.read_bytes())
    write_private(directory / ROOT_CERT_FILE, cert_path.read_bytes(), 0o644)
    key_path.unlink()
    cert_path.unlink()
    return MeshCA.load_or_create(directory)


def finish_rotation(directory: Path) -> MeshCA:
    """Step 3: only the signing root stays in the bundle."""
    root = _root(directory)
    if (directory / NEXT_ROOT_CERT_FILE).exists():
        raise RotationError("a new root is added but not active: activate it first")
    _write_bundle(directory, [root.cert])
    return MeshCA.load_or_create(directory)


def _root(directory: Path) -> MeshCA:
    if not (directory / ROOT_KEY_FILE).exists():
        raise RotationError(f"{directory} holds no root CA")
    return MeshCA.load_or_create(directory)


def _write_bundle(directory: Path, roots: Iterable[x509.Certificate]) -> None:
    write_private(directory / BUNDLE_FILE, bundle_pem(roots), 0o644)


class HostAuthority:
    """The intermediate this host's control plane signs with, kept current.

    With the root in its folder it issues its own intermediate (in memory only) and
    renews it at two thirds of its life; with only an intermediate (given by a
    provisioner, which renews it) it reloads the files when they change. Either way a
    change of the bundle or the root is picked up by `refresh()`. It signs like a
    `MeshCA`: the current intermediate does.
    """

    def __init__(
        self,
        directory: Path,
        host: str = "local",
        lifetime: datetime.timedelta = DEFAULT_INTERMEDIATE_LIFETIME,
        clock: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        self._dir = private_dir(directory)
        self._host = host
        self._lifetime = lifetime
        self._clock = clock or (lambda: datetime.datetime.now(datetime.UTC))
        self._lock = threading.Lock()
        self._current = self._load()
        self._seen = self._version()
        self._overdue = False

    @property
    def current(self) -> MeshCA:
        with self._lock:
            return self._current

    @property
    def holds_root(self) -> bool:
        return (self._dir / ROOT_KEY_FILE).exists()

    @property
    def bundle_pem(self) -> bytes:
        return self.current.bundle_pem

    def issue(
        self,
        name: str,
        *,
        dns_names: Iterable[str] = (),
        ip_addresses: Iterable[str] = (),
        lifetime: datetime.timedelta = DEFAULT_WORKLOAD_LIFETIME,
    ) -> IssuedCertificate:
        return self.current.issue(
            name, dns_names=dns_names, ip_addresses=ip_addresses, lifetime=lifetime
        )

    def refresh(self) -> bool:
        """Reloads a changed folder, renews a due intermediate; True when the CA changed."""
        version = self._version()
        due = self._clock() >= self.current.renew_at
        if version == self._seen and not (due and self.holds_root):
            if due and not self._overdue:
                self._overdue = True  # Said once per intermediate, not every second.
                log.warning("intermediate due and not renewed by the provisioner")
            return False
        try:
            replacement = self._load()
        except (OSError, ValueError) as exc:
            # Mid-rotation (a key written before its certificate): the next try sees both.
            log.warning("CA folder not reloaded", extra={"error": str(exc)})
            return False
        with self._lock:
            self._current, self._seen = replacement, version
        self._overdue = False
        log.info(
            "intermediate CA replaced",
            extra={
                "not_after": replacement.cert.not_valid_after_utc.isoformat(),
                "roots": len(replacement.roots),
            },
        )
        return True

    def _load(self) -> MeshCA:
        if self.holds_root or not (self._dir / INTERMEDIATE_CERT_FILE).exists():
            root = MeshCA.load_or_create(self._dir)
            return root.intermediate(self._host, lifetime=self._lifetime, now=self._clock())
        return MeshCA.load_intermediate(self._dir)

    def _version(self) -> tuple[tuple[int, int, int] | None, ...]:
        def stat(name: str) -> tuple[int, int, int] | None:
            try:
                st = (self._dir / name).stat()
            except FileNotFoundError:
                return None
            return st.st_ino, st.st_mtime_ns, st.st_size

        return tuple(stat(name) for name in _WATCHED)
