"""The operator's CA commands: credentials for services run alone, and root rotation.

    python -m controlplane.pki DIR predict-svc [more workload names]
    python -m controlplane.pki rotate-root DIR add|activate|finish

The first: DIR (made 0700) gets the root in `ca/` (`root.pem`, `root-key.pem` 0600,
`bundle.pem`; reused when already there), `ca.pem` (the root bundle, what every
verifier trusts), `operator.pem` and `operator-key.pem` (for grpcurl's -cert/-key),
and `<name>.pem` and `<name>-key.pem` per workload (for TLS_CERT_FILE / TLS_KEY_FILE),
every key 0600. Certificates are issued by an intermediate the root signs for this
run and carry it after the leaf. Workload certificates name `localhost` and 127.0.0.1
too, so clients that check the address they dialled accept them. Running it again
renews them: servers reload.

rotate-root: the three steps of rotation.py on the root in DIR/ca (the mesh's
`var/pki`); each step also rewrites DIR/ca.pem. A running control plane picks each
step up within a second.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Sequence
from pathlib import Path

from controlplane.ca import CA_CERT_FILE, MeshCA, write_credentials, write_private
from controlplane.rotation import (
    HostAuthority,
    RotationError,
    activate_next_root,
    add_next_root,
    finish_rotation,
)
from services.runtime.identity import IdentityError, validate_workload_name

DEFAULT_DAYS = 7
ROTATION_STEPS = {"add": add_next_root, "activate": activate_next_root, "finish": finish_rotation}


def mint(directory: Path, workloads: Sequence[str], days: int = DEFAULT_DAYS) -> list[Path]:
    """Writes the root (if new), the operator's and each workload's credentials; their paths."""
    for name in workloads:
        validate_workload_name(name)
    lifetime = datetime.timedelta(days=days)
    ca = HostAuthority(directory / "ca", host="pki", lifetime=lifetime * 2).current
    written = [write_credentials(ca.issue("operator", lifetime=lifetime), directory).cert]
    for name in workloads:
        issued = ca.issue(
            name, dns_names=["localhost"], ip_addresses=["127.0.0.1", "::1"], lifetime=lifetime
        )
        written.append(write_credentials(issued, directory).cert)
    return written


def rotate_root(directory: Path, step: str) -> MeshCA:
    """One rotation step on DIR/ca; DIR/ca.pem is the bundle after it."""
    root = ROTATION_STEPS[step](directory / "ca")
    bundle = (directory / "ca" / "bundle.pem").read_bytes()
    write_private(directory / CA_CERT_FILE, bundle)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["rotate-root"]:
        return _rotate_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m controlplane.pki",
        description="Mint a CA, the operator's and workloads' certificates into a folder.",
        epilog="Root rotation: python -m controlplane.pki rotate-root DIR add|activate|finish",
    )
    parser.add_argument("directory", type=Path, help="where to write them (made 0700)")
    parser.add_argument("workloads", nargs="*", help="workload names, e.g. predict-svc")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help="certificate lifetime")
    args = parser.parse_args(argv)
    if args.days < 1:
        parser.error("--days must be at least 1")
    try:
        written = mint(args.directory, args.workloads, args.days)
    except IdentityError as exc:
        parser.error(str(exc))
    for path in written:
        sys.stdout.write(f"{path}\n")
    return 0


def _rotate_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m controlplane.pki rotate-root",
        description="Rotate the mesh's root CA in three steps (docs/trust.md).",
    )
    parser.add_argument("directory", type=Path, help="the mesh's pki folder (var/pki)")
    parser.add_argument("step", choices=sorted(ROTATION_STEPS), help="add, activate, finish")
    args = parser.parse_args(argv)
    try:
        root = rotate_root(args.directory, args.step)
    except RotationError as exc:
        parser.error(str(exc))
    subject = root.cert.subject.rfc4514_string()
    sys.stdout.write(f"{args.step}: signing root {subject}, {len(root.roots)} root(s) trusted\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
