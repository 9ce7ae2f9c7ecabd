"""Credentials for running services alone, without the mesh's CA endpoint: a CA, the
operator's certificate and one certificate per named workload, minted into a folder.

    python -m controlplane.pki DIR predict-svc [more workload names]

DIR (made 0700) gets `ca.pem` and `ca-key.pem` (the CA, reused when already there),
`operator.pem` and `operator-key.pem` (for grpcurl's -cert/-key), and `<name>.pem` and
`<name>-key.pem` per workload (for TLS_CERT_FILE / TLS_KEY_FILE), every key 0600.
Workload certificates name `localhost` and 127.0.0.1 too, so clients that check the
address they dialled accept them. Running it again renews them: servers reload.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Sequence
from pathlib import Path

from controlplane.ca import MeshCA, write_credentials
from services.runtime.identity import IdentityError, validate_workload_name

DEFAULT_DAYS = 7


def mint(directory: Path, workloads: Sequence[str], days: int = DEFAULT_DAYS) -> list[Path]:
    """Writes the CA (if new), the operator's and each workload's credentials; their paths."""
    for name in workloads:
        validate_workload_name(name)
    ca = MeshCA.load_or_create(directory)
    lifetime = datetime.timedelta(days=days)
    written = [write_credentials(ca.issue("operator", lifetime=lifetime), directory).cert]
    for name in workloads:
        issued = ca.issue(
            name, dns_names=["localhost"], ip_addresses=["127.0.0.1", "::1"], lifetime=lifetime
        )
        written.append(write_credentials(issued, directory).cert)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m controlplane.pki",
        description="Mint a CA, the operator's and workloads' certificates into a folder.",
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


if __name__ == "__main__":
    sys.exit(main())
