#!/usr/bin/env bash
# yamllint on the repository's YAML (.yamllint), then on Envoy's bootstrap as
# envoy_bootstrap renders it (ADS, and static clusters with a rate limit service):
# envoy/bootstrap.yaml is a template that becomes YAML only then. The rendered file
# holds generated JSON and Lua on long lines, so line length is not judged there.
set -euo pipefail
PY=${PY:-.venv/bin/python}
cd "$(dirname "$0")/.."
bin=$(dirname "$PY")

"$bin/yamllint" --strict .

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ENVOY_CONFIG="$work/ads.yaml" "$PY" -m envoy_bootstrap >/dev/null
ENVOY_CONFIG="$work/static.yaml" ENVOY_STATIC_CLUSTERS="auth-svc=127.0.0.1:1" \
  RATELIMIT_ADDR=127.0.0.1:1 "$PY" -m envoy_bootstrap >/dev/null
"$bin/yamllint" --strict \
  -d '{extends: default, rules: {line-length: disable, document-start: disable}}' \
  "$work/ads.yaml" "$work/static.yaml"
