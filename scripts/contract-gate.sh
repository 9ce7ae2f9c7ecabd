#!/usr/bin/env bash
# The contract gate: fails when the contract changed since BASE_REF (a git ref, e.g. the
# last release tag) in a way that breaks its clients, unless the API version changed
# (airline.*.v1 -> v2 in the package names; docs/versioning.md).
#   scripts/contract-gate.sh [BASE_REF]
# Two checks: `buf breaking` (buf.yaml's FILE rules) on the descriptor set built from
# BASE_REF's protos against the current one (generated/airline.pb from `make gen`, or
# CURRENT_DESCRIPTOR), and contract/gate.py on the two OpenAPI documents.
set -euo pipefail
PY=${PY:-.venv/bin/python}
cd "$(dirname "$0")/.."
# The base: the argument, else CONTRACT_BASE, else the newest release in
# contract/RELEASES (a commit, so a clone without tags has it), else the last v* tag.
released=$(awk '!/^#/ && NF == 2 {commit = $2} END {print commit}' contract/RELEASES 2>/dev/null || true)
base=${1:-${CONTRACT_BASE:-${released:-$(git describe --tags --abbrev=0 --match 'v[0-9]*' 2>/dev/null || true)}}}
if [ -z "$base" ]; then
  echo "contract gate: no release yet, nothing to compare with"
  exit 0
fi
current=${CURRENT_DESCRIPTOR:-generated/airline.pb}
bin=$(dirname "$PY")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git archive "$base" proto | tar -x -C "$work"

# The same includes as scripts/gen.sh.
googleapis=$("$PY" -c 'import pathlib, google.api.annotations_pb2 as m; print(pathlib.Path(m.__file__).parents[2])')
wkt=$("$PY" -c 'import pathlib, grpc_tools; print(pathlib.Path(grpc_tools.__file__).parent / "_proto")')
mapfile -t protos < <(cd "$work/proto" && find airline -name '*.proto' | sort)
"$PY" -m grpc_tools.protoc -I"$work/proto" -I"$googleapis" -I"$wkt" \
  --descriptor_set_out="$work/base.pb" --include_imports --include_source_info \
  "${protos[@]/#/$work/proto/}"

# The current generator on both sides: what is compared is the contract, not the tool.
"$PY" -m contract.openapi "$work/base.pb" "$work/base.json"
"$PY" -m contract.openapi "$current" "$work/current.json"
version() { "$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["info"]["version"])' "$1"; }
base_version=$(version "$work/base.json")
current_version=$(version "$work/current.json")

status=0
echo "== buf breaking against $base (API $base_version -> $current_version)"
if ! "$bin/buf" breaking "$current#format=binpb" --against "$work/base.pb#format=binpb" \
    --config buf.yaml --path airline; then
  if [ "$base_version" = "$current_version" ]; then status=1; fi
fi
echo "== OpenAPI: removed paths, operations, fields"
"$PY" -m contract.gate "$work/base.json" "$work/current.json" || status=1
if [ "$status" = 0 ]; then echo "contract gate: passed"; else echo "contract gate: FAILED"; fi
exit "$status"
