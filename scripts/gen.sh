#!/usr/bin/env bash
# Generates Python modules (_pb2.py, _pb2_grpc.py), their typed stubs (mypy-protobuf) and the descriptor set Envoy's
# gRPC-JSON transcoder reads, from proto/; then the OpenAPI document and the /docs page. Output only: never edit generated/.
set -euo pipefail
PY=${PY:-.venv/bin/python}
cd "$(dirname "$0")/.."

# google/api/*.proto ship with googleapis-common-protos; google/protobuf/*.proto
# with grpcio-tools. google.api is a namespace package, so find it from a module.
googleapis=$("$PY" -c 'import pathlib, google.api.annotations_pb2 as m; print(pathlib.Path(m.__file__).parents[2])')
bin=$(dirname "$PY")
wkt=$("$PY" -c 'import pathlib, grpc_tools; print(pathlib.Path(grpc_tools.__file__).parent / "_proto")')

rm -rf generated.tmp && mkdir -p generated.tmp
mapfile -t protos < <(cd proto && find airline -name '*.proto' | sort)
"$PY" -m grpc_tools.protoc -Iproto -I"$googleapis" -I"$wkt" \
  --plugin=protoc-gen-mypy="$bin/protoc-gen-mypy" --plugin=protoc-gen-mypy_grpc="$bin/protoc-gen-mypy_grpc" \
  --python_out=generated.tmp --grpc_python_out=generated.tmp \
  --mypy_out=quiet:generated.tmp --mypy_grpc_out=quiet:generated.tmp \
  "${protos[@]/#/proto/}"
# The descriptor set Envoy transcodes with: the contracts and everything they import,
# plus the google.rpc error details the services send (ErrorInfo, BadRequest), which
# the transcoder must know to turn grpc-status-details-bin into JSON.
"$PY" -m grpc_tools.protoc -Iproto -I"$googleapis" -I"$wkt" \
  --descriptor_set_out=generated.tmp/airline.pb --include_imports --include_source_info \
  "${protos[@]/#/proto/}" google/rpc/status.proto google/rpc/error_details.proto
# Packages, so `from airline.user.v1 import user_pb2` also works for tools
# that do not follow namespace packages (mypy).
find generated.tmp/airline -type d -exec touch {}/__init__.py \;
# The REST contract as an OpenAPI 3.1 document, and the /docs page the edge serves.
"$PY" -m contract.openapi generated.tmp/airline.pb generated.tmp/openapi.json
"$PY" -m contract.docs generated.tmp/docs
rm -rf generated && mv generated.tmp generated
