#!/usr/bin/env python3
"""Renders Envoy's bootstrap (edge and mesh listeners) from envoy/bootstrap.yaml.

Run as a script, never imported (`envoy` is xds-protos' package name):

    python envoy/render.py [--out var/envoy.yaml] [options]        # ADS mode
    python envoy/render.py --static predict-svc=127.0.0.1:50051 ... # no control plane

Every option falls back to an environment variable, then to the default of
shared/API.md; `--help` lists them. Run it with the project's venv (it reads the
descriptor set with protobuf); it writes the bootstrap and, beside it, the
descriptor set the transcoder loads (OUT with .pb for .yaml).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import body_schema  # envoy/body_schema.py: this script's directory is on sys.path
import mesh_tls  # envoy/mesh_tls.py, likewise
import rate_limits  # envoy/rate_limits.py, the same
import yaml
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor
from google.rpc import error_details_pb2, status_pb2

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# The Consul service names; the control plane names its clusters the same.
SERVICES = ("auth-svc", "user-svc", "booking-svc", "predict-svc")
# What the edge transcodes: every public service, never UserInternalService.
PUBLIC_SERVICES = (
    "airline.auth.v1.AuthService",
    "airline.user.v1.UserService",
    "airline.booking.v1.BookingService",
    "airline.predict.v1.PredictionService",
)

# HTTP status of a reply Envoy makes itself -> the gRPC code in its JSON body.
# 413 is INVALID_ARGUMENT: the request is wrong as sent and retrying cannot help
# (RESOURCE_EXHAUSTED would read as "slow down", which API.md uses for 429).
LOCAL_REPLY_CODES: Mapping[int, int] = {
    400: 3,  # INVALID_ARGUMENT: bad JSON, unknown field or query parameter
    401: 16,  # UNAUTHENTICATED
    404: 5,  # NOT_FOUND: no such path
    405: 12,  # UNIMPLEMENTED
    408: 4,  # DEADLINE_EXCEEDED: the request itself was too slow to arrive
    413: 3,  # INVALID_ARGUMENT: body over the limit
    414: 3,  # INVALID_ARGUMENT: URL over the limit (edge.lua)
    429: 8,  # RESOURCE_EXHAUSTED
    431: 3,  # INVALID_ARGUMENT: headers too large
    500: 13,  # INTERNAL
    501: 12,  # UNIMPLEMENTED
    502: 14,  # UNAVAILABLE
    503: 14,  # UNAVAILABLE: no healthy upstream, /healthz failing
    504: 4,  # DEADLINE_EXCEEDED
}
UNKNOWN = 2


class RenderError(ValueError):
    """An option holds a value the bootstrap cannot be rendered with."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, *, allow_zero: bool = False) -> Address:
        host, sep, port = text.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit():
            raise RenderError(f"{text!r} is not HOST:PORT")
        number = int(port)
        if not (0 if allow_zero else 1) <= number <= 65535:
            raise RenderError(f"{text!r}: port out of range")
        return cls(host, number)

    @property
    def reachable_host(self) -> str:
        """The host to connect to when this is a listening address."""
        return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)

    @property
    def authority(self) -> str:
        host = self.reachable_host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    """Everything the bootstrap varies by; defaults are API.md's."""

    out: Path = ROOT / "var" / "envoy.yaml"
    edge: Address = Address("127.0.0.1", 8080)
    mesh: Address = Address("127.0.0.1", 15001)
    admin: Address = Address("127.0.0.1", 9901)
    xds: Address = Address("127.0.0.1", 18000)
    # Service name -> instance addresses; non-empty means no control plane.
    static: Mapping[str, tuple[Address, ...]] = field(default_factory=dict)
    descriptor: Path = ROOT / "generated" / "airline.pb"
    cors_origins: tuple[str, ...] = ()
    token_limit: int = 10
    token_window_seconds: int = 60
    token_clients: int = 10_000
    signup_limit: int = 10
    signup_window_seconds: int = 60
    # The rate limit service's instances; empty means this Envoy counts alone.
    ratelimit: tuple[Address, ...] = ()
    ratelimit_domain: str = "airline-edge"
    # Reads counted globally too (descriptor `api`): a call to the service per read.
    reads_limited: bool = False
    edge_timeout_seconds: float = 15.0
    mesh_timeout_seconds: float = 15.0
    per_try_timeout_seconds: float = 10.0
    max_client_timeout_seconds: float = 60.0
    max_request_bytes: int = 1_048_576
    max_connections: int = 50_000
    jwt_issuer: str = "airline-auth"
    jwt_audience: str = "airline-api"
    # auth-svc signs with a new key as soon as it rotates: the edge learns it this late.
    jwks_cache_seconds: int = 60
    xff_trusted_hops: int = 0
    access_log: str = "/dev/stdout"
    node_id: str = "airline-envoy"
    node_cluster: str = "airline-edge"
    # Mutual TLS on the mesh listener with the RBAC filter from the policy file;
    # with it, the edge's TLS listener (when edge_tls is set).
    mesh_tls: bool = False
    policy: Path = ROOT / "mesh" / "policy.toml"
    edge_tls: Address | None = None
    edge_tls_cert: Path | None = None
    edge_tls_key: Path | None = None


def _env(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    d = Settings()
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )

    def opt(flag: str, names: tuple[str, ...], default: object, help_: str) -> None:
        value = _env(env, *names)
        p.add_argument(
            flag,
            default=value if value is not None else default,
            help=f"{help_} [env {' or '.join(names)}]",
        )

    xds_default = f"127.0.0.1:{_env(env, 'XDS_PORT') or d.xds.port}"
    opt("--out", ("ENVOY_CONFIG",), str(d.out), "where to write the bootstrap")
    opt("--edge", ("ENVOY_EDGE_ADDR",), "127.0.0.1:8080", "edge listener HOST:PORT")
    opt("--mesh", ("ENVOY_MESH_ADDR", "MESH_ADDR"), "127.0.0.1:15001", "mesh listener HOST:PORT")
    opt("--admin", ("ENVOY_ADMIN_ADDR",), "127.0.0.1:9901", "admin HOST:PORT")
    opt("--xds", ("XDS_ADDR",), xds_default, "control plane's ADS HOST:PORT")
    opt("--descriptor", ("ENVOY_DESCRIPTOR",), str(d.descriptor), "descriptor set (make gen)")
    opt("--cors-origins", ("CORS_ORIGINS",), "", "comma-separated allowed origins (exact)")
    opt("--token-limit", ("TOKEN_RATE_LIMIT",), d.token_limit, "POST /v1/auth/token per client")
    opt(
        "--token-window",
        ("TOKEN_RATE_WINDOW_SECONDS",),
        d.token_window_seconds,
        "seconds in which --token-limit calls are allowed",
    )
    opt("--signup-limit", ("SIGNUP_RATE_LIMIT",), d.signup_limit, "POST /v1/users per client")
    opt(
        "--signup-window",
        ("SIGNUP_RATE_WINDOW_SECONDS",),
        d.signup_window_seconds,
        "seconds in which --signup-limit calls are allowed",
    )
    opt(
        "--ratelimit",
        ("RATELIMIT_ADDR",),
        "",
        "rate limit service HOST:PORT[,HOST:PORT]: limits count across every edge "
        "(empty: this Envoy counts alone)",
    )
    opt(
        "--read-limit",
        ("READ_RATE_LIMIT",),
        "",
        "with --ratelimit: every other route counted per client too (limits.toml's `api`; "
        "empty: reads are not counted and cost no call)",
    )
    opt(
        "--ratelimit-domain",
        ("RATELIMIT_DOMAIN",),
        rate_limits.default_domain(),
        "rate limit domain (ratelimit/limits.toml's)",
    )
    opt("--token-clients", ("TOKEN_RATE_CLIENTS",), d.token_clients, "client buckets kept (LRU)")
    opt(
        "--edge-timeout",
        ("ENVOY_EDGE_TIMEOUT_SECONDS",),
        d.edge_timeout_seconds,
        "deadline of an edge call that names none",
    )
    opt(
        "--mesh-timeout",
        ("ENVOY_MESH_TIMEOUT_SECONDS",),
        d.mesh_timeout_seconds,
        "deadline of a mesh call without grpc-timeout",
    )
    opt(
        "--per-try-timeout",
        ("ENVOY_PER_TRY_TIMEOUT_SECONDS",),
        d.per_try_timeout_seconds,
        "one attempt's limit",
    )
    opt(
        "--max-client-timeout",
        ("ENVOY_MAX_CLIENT_TIMEOUT_SECONDS",),
        d.max_client_timeout_seconds,
        "cap on a caller's grpc-timeout / x-envoy-upstream-rq-timeout-ms",
    )
    opt("--max-request-bytes", ("ENVOY_MAX_REQUEST_BYTES",), d.max_request_bytes, "else 413")
    opt("--max-connections", ("ENVOY_MAX_CONNECTIONS",), d.max_connections, "downstream, all")
    opt("--jwt-issuer", ("JWT_ISSUER",), d.jwt_issuer, "access tokens' iss")
    opt("--jwt-audience", ("JWT_AUDIENCE",), d.jwt_audience, "access tokens' aud")
    opt("--jwks-cache-seconds", ("JWKS_CACHE_SECONDS",), d.jwks_cache_seconds, "JWKS refetch")
    opt("--xff-trusted-hops", ("ENVOY_XFF_TRUSTED_HOPS",), d.xff_trusted_hops, "proxies in front")
    opt("--access-log", ("ENVOY_ACCESS_LOG",), d.access_log, "JSON access log file")
    opt("--node-id", ("ENVOY_NODE_ID",), d.node_id, "node id sent to the control plane")
    opt("--mesh-tls", ("ENVOY_MESH_TLS",), "0", "1: mTLS and RBAC on the mesh listener (SDS)")
    opt("--policy", ("MESH_POLICY_FILE",), str(d.policy), "the mesh policy the RBAC is made of")
    opt("--edge-tls", ("ENVOY_EDGE_TLS_ADDR",), "", "edge TLS listener HOST:PORT (--mesh-tls)")
    opt("--edge-tls-cert", ("EDGE_TLS_CERT_FILE",), "", "edge TLS certificate (else SDS)")
    opt("--edge-tls-key", ("EDGE_TLS_KEY_FILE",), "", "edge TLS private key (else SDS)")
    p.add_argument(
        "--static",
        action="append",
        default=[],
        metavar="SERVICE=HOST:PORT[,HOST:PORT]",
        help="static cluster instead of ADS (repeat per service) [env ENVOY_STATIC_CLUSTERS, "
        "';'-separated]",
    )
    p.add_argument(
        "--validate", action="store_true", help="run `envoy --mode validate` on the result"
    )
    return p


def _static(entries: Sequence[str]) -> dict[str, tuple[Address, ...]]:
    clusters: dict[str, tuple[Address, ...]] = {}
    for entry in entries:
        name, sep, addresses = entry.partition("=")
        name = name.strip()
        if not sep or name not in SERVICES:
            raise RenderError(
                f"--static {entry!r}: expected one of {', '.join(SERVICES)}=HOST:PORT"
            )
        clusters[name] = tuple(Address.parse(a) for a in addresses.split(",") if a.strip())
        if not clusters[name]:
            raise RenderError(f"--static {entry!r}: no address")
    return clusters


def _positive(name: str, value: object, kind: type[int] | type[float] = int) -> int | float:
    try:
        number = kind(str(value))
    except ValueError:
        raise RenderError(f"{name}={value!r} is not a number") from None
    if number <= 0:
        raise RenderError(f"{name}={value!r} must be above zero")
    return number


def settings_from(argv: Sequence[str], env: Mapping[str, str]) -> tuple[Settings, bool]:
    """The settings named by the command line, then the environment; and --validate."""
    args = _parser(env).parse_args(argv)
    static_entries = args.static or [
        e for e in (_env(env, "ENVOY_STATIC_CLUSTERS") or "").split(";") if e.strip()
    ]
    descriptor = Path(args.descriptor).resolve()
    if not descriptor.is_file():
        raise RenderError(f"descriptor set {descriptor} not found (run `make gen`)")
    settings = Settings(
        out=Path(args.out),
        edge=Address.parse(args.edge),
        mesh=Address.parse(args.mesh),
        admin=Address.parse(args.admin, allow_zero=True),
        xds=Address.parse(args.xds),
        static=_static(static_entries),
        descriptor=descriptor,
        cors_origins=tuple(o.strip() for o in str(args.cors_origins).split(",") if o.strip()),
        token_limit=int(_positive("--token-limit", args.token_limit)),
        token_window_seconds=int(_positive("--token-window", args.token_window)),
        token_clients=int(_positive("--token-clients", args.token_clients)),
        signup_limit=int(_positive("--signup-limit", args.signup_limit)),
        signup_window_seconds=int(_positive("--signup-window", args.signup_window)),
        ratelimit=tuple(Address.parse(a) for a in str(args.ratelimit).split(",") if a.strip()),
        ratelimit_domain=str(args.ratelimit_domain),
        reads_limited=bool(str(args.read_limit).strip()),
        edge_timeout_seconds=_positive("--edge-timeout", args.edge_timeout, float),
        mesh_timeout_seconds=_positive("--mesh-timeout", args.mesh_timeout, float),
        per_try_timeout_seconds=_positive("--per-try-timeout", args.per_try_timeout, float),
        max_client_timeout_seconds=_positive(
            "--max-client-timeout", args.max_client_timeout, float
        ),
        max_request_bytes=int(_positive("--max-request-bytes", args.max_request_bytes)),
        max_connections=int(_positive("--max-connections", args.max_connections)),
        jwt_issuer=str(args.jwt_issuer),
        jwt_audience=str(args.jwt_audience),
        jwks_cache_seconds=int(_positive("--jwks-cache-seconds", args.jwks_cache_seconds)),
        xff_trusted_hops=int(args.xff_trusted_hops),
        access_log=str(args.access_log),
        node_id=str(args.node_id),
        mesh_tls=str(args.mesh_tls).strip().lower() in ("1", "true"),
        policy=Path(args.policy).resolve(),
        edge_tls=Address.parse(args.edge_tls) if args.edge_tls else None,
        edge_tls_cert=Path(args.edge_tls_cert).resolve() if args.edge_tls_cert else None,
        edge_tls_key=Path(args.edge_tls_key).resolve() if args.edge_tls_key else None,
    )
    if bool(settings.edge_tls_cert) != bool(settings.edge_tls_key):
        raise RenderError("--edge-tls-cert and --edge-tls-key go together")
    return settings, bool(args.validate)


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def _block(text: str, indent: int) -> str:
    """`text` for a placeholder indented by `indent`: every line after the first indented."""
    pad = " " * indent
    return "\n".join(
        line if i == 0 or not line else pad + line for i, line in enumerate(text.splitlines())
    )


def local_reply_mappers() -> list[dict[str, object]]:
    """JSON google.rpc.Status bodies for Envoy's own replies to REST requests.

    Envoy answers a request in the protocol it arrived in: a gRPC client gets a
    grpc-status, anyone else an HTTP status and a body. The transcoder makes a REST
    request look like gRPC (content-type, path) but leaves x-envoy-original-method
    behind, which is how a transcoded request is still told apart.
    """
    not_grpc = {
        "header_filter": {
            "header": {
                "name": "content-type",
                "string_match": {"prefix": "application/grpc"},
                "invert_match": True,
                # A GET has no content-type; without this it would match nothing.
                "treat_missing_header_as_empty": True,
            }
        }
    }
    transcoded = {
        "header_filter": {"header": {"name": "x-envoy-original-method", "present_match": True}}
    }
    rest = {"or_filter": {"filters": [not_grpc, transcoded]}}

    def mapper(op: str, status: int, code: int, rewrite: int | None = None) -> dict[str, object]:
        status_filter = {
            "status_code_filter": {
                "comparison": {
                    "op": op,
                    "value": {"default_value": status, "runtime_key": f"edge.local_reply.{status}"},
                }
            }
        }
        rewritten = {"status_code": rewrite} if rewrite else {}
        return {
            "filter": {"and_filter": {"filters": [status_filter, rest]}},
            **rewritten,
            "body_format_override": {
                "json_format": {"code": code, "message": "%LOCAL_REPLY_BODY%"},
                "content_type": "application/json",
            },
        }

    # edge.lua's 400 for unknown JSON keys already is a google.rpc.Status (with a
    # BadRequest detail): passed on as it is.
    lua_status = {
        "filter": {
            "metadata_filter": {
                "matcher": {
                    "filter": "envoy.filters.http.lua",
                    "path": [{"key": "status_body"}],
                    "value": {"bool_match": True},
                },
                "match_if_key_not_found": False,
            }
        },
        "body_format_override": {
            "text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"},
            "content_type": "application/json",
        },
    }
    # jwt_authn answers 403 for a token of another audience (the only 403 Envoy
    # makes here; a service's PERMISSION_DENIED is no local reply). API.md: a token
    # that is not valid for this API is 401 (with the WWW-Authenticate it has).
    wrong_audience = mapper("EQ", 403, LOCAL_REPLY_CODES[401], rewrite=401)
    # The same for gRPC clients: the rewritten status becomes grpc-status
    # UNAUTHENTICATED (their body stays the message, no JSON).
    forbidden = {"op": "EQ", "value": {"default_value": 403, "runtime_key": "edge.grpc_403"}}
    grpc_wrong_audience = {
        "filter": {"status_code_filter": {"comparison": forbidden}},
        "status_code": 401,
    }
    mappers = [mapper("EQ", status, code) for status, code in LOCAL_REPLY_CODES.items()]
    return [lua_status, wrong_audience, grpc_wrong_audience, *mappers, mapper("GE", 400, UNKNOWN)]


# The /docs page's files by suffix, for their content-type.
_CONTENT_TYPES = {
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css",
    ".js": "text/javascript",
    ".png": "image/png",
}


def docs_routes(generated: Path) -> list[dict[str, object]]:
    """Direct responses for GET /openapi.json, /docs and the page's assets (`make gen`'s files)."""
    files = {
        "/openapi.json": generated / "openapi.json",
        "/docs": generated / "docs" / "index.html",
    }
    for asset in sorted((generated / "docs").glob("*")):
        if asset.name != "index.html":
            files[f"/docs/{asset.name}"] = asset
    routes: list[dict[str, object]] = []
    for path, file in files.items():
        if not file.is_file():
            raise RenderError(f"{file} not found (run `make gen`)")
        routes.append(
            {
                "match": {
                    "path": path,
                    "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
                },
                "direct_response": {"status": 200, "body": {"filename": str(file.resolve())}},
                "response_headers_to_add": [
                    {
                        "header": {"key": "content-type", "value": _CONTENT_TYPES[file.suffix]},
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                    }
                ],
                "typed_per_filter_config": {
                    "envoy.filters.http.grpc_json_transcoder": {
                        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                        "disabled": True,
                    }
                },
            }
        )
    return routes


def _static_clusters(settings: Settings) -> str:
    template = Template((HERE / "static-cluster.yaml").read_text())
    rendered = []
    for name, addresses in settings.static.items():
        endpoints = [
            {"endpoint": {"address": {"socket_address": {"address": a.host, "port_value": a.port}}}}
            for a in addresses
        ]
        rendered.append(template.substitute(name=name, endpoints=json.dumps(endpoints)))
    return "".join(rendered)


def _descriptor_set(path: Path) -> descriptor_pb2.FileDescriptorSet:
    return descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())


def transcoder_descriptor(source: Path, target: Path) -> None:
    """`source` plus the google.rpc error detail types, written to `target`.

    The transcoder turns a gRPC error into JSON from grpc-status-details-bin, and
    gives up (empty body) when a detail's type (ErrorInfo, BadRequest) is not in
    its descriptor set; `make gen` only includes what the contracts import.
    """
    files = _descriptor_set(source)
    known = {f.name for f in files.file}

    def add(file: FileDescriptor) -> None:  # dependencies first: Envoy builds in order
        for dependency in file.dependencies:
            add(dependency)
        if file.name not in known:
            known.add(file.name)
            file.CopyToProto(files.file.add())

    add(status_pb2.DESCRIPTOR)
    add(error_details_pb2.DESCRIPTOR)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(files.SerializeToString())


def render(settings: Settings) -> str:
    """The bootstrap YAML for `settings`."""
    lua = body_schema.generate(_descriptor_set(settings.descriptor), PUBLIC_SERVICES)
    lua += (HERE / "edge.lua").read_text()
    dynamic = "" if settings.static else (HERE / "ads.yaml").read_text()
    # Envoy truncates the percentage to a whole number and fails a cluster when
    # 100 * healthy < instances * percent: 1% is "at least one healthy instance"
    # (for up to 100 instances of a service).
    healthz = {name: {"value": 1} for name in SERVICES}
    values = {
        "node_id": json.dumps(settings.node_id),
        "node_cluster": json.dumps(settings.node_cluster),
        "admin_host": settings.admin.host,
        "admin_port": settings.admin.port,
        "dynamic_resources": dynamic,
        "edge_host": settings.edge.host,
        "edge_port": settings.edge.port,
        "edge_self_host": settings.edge.reachable_host,
        "mesh_host": settings.mesh.host,
        "mesh_port": settings.mesh.port,
        "xds_host": settings.xds.host,
        "xds_port": settings.xds.port,
        "xff_num_trusted_hops": settings.xff_trusted_hops,
        "access_log_path": json.dumps(settings.access_log),
        "local_reply_mappers": json.dumps(local_reply_mappers()),
        "per_try_timeout": _duration(settings.per_try_timeout_seconds),
        "cors_origins": json.dumps([{"exact": origin} for origin in settings.cors_origins]),
        "edge_timeout": _duration(settings.edge_timeout_seconds),
        "mesh_timeout": _duration(settings.mesh_timeout_seconds),
        "max_client_timeout": _duration(settings.max_client_timeout_seconds),
        "create_token_ratelimit": _block(
            rate_limits.route_config(
                "create_token",
                settings.token_limit,
                settings.token_window_seconds,
                settings.token_clients,
                is_global=bool(settings.ratelimit),
            ),
            28,
        ),
        "create_user_ratelimit": _block(
            rate_limits.route_config(
                "create_user",
                settings.signup_limit,
                settings.signup_window_seconds,
                settings.token_clients,
                is_global=bool(settings.ratelimit),
            ),
            28,
        ),
        "read_ratelimit": rate_limits.read_route_config(
            is_global=bool(settings.ratelimit), reads_limited=settings.reads_limited
        ),
        "ratelimit_filters": _block(
            rate_limits.filters(settings.ratelimit_domain, is_global=bool(settings.ratelimit)),
            18,
        ),
        "ratelimit_cluster": rate_limits.cluster(settings.ratelimit),
        "healthz_clusters": json.dumps(healthz),
        "max_request_bytes": settings.max_request_bytes,
        "max_connections": settings.max_connections,
        "lua_code": _block(lua, 26),
        "descriptor_path": json.dumps(str(transcoder_descriptor_path(settings))),
        "public_services": json.dumps(list(PUBLIC_SERVICES)),
        "jwt_issuer": json.dumps(settings.jwt_issuer),
        "jwt_audience": json.dumps(settings.jwt_audience),
        "jwks_authority": settings.edge.authority,
        "jwks_cache_duration": _duration(settings.jwks_cache_seconds),
        "static_clusters": _static_clusters(settings),
        "docs_routes": _block(
            "\n".join(f"- {json.dumps(r)}" for r in docs_routes(settings.descriptor.parent)), 24
        ),
    }
    text = Template((HERE / "bootstrap.yaml").read_text()).substitute(values)
    if not settings.mesh_tls:
        return text
    edge_tls = (settings.edge_tls.host, settings.edge_tls.port) if settings.edge_tls else None
    secured = mesh_tls.apply(
        yaml.safe_load(text),
        _rbac_filter(settings.policy),
        edge_tls,
        settings.edge_tls_cert,
        settings.edge_tls_key,
    )
    return yaml.safe_dump(secured, sort_keys=False, width=1000)


def _rbac_filter(policy: Path) -> dict[str, object]:
    """The mesh policy as the RBAC filter (controlplane/rbac.py renders it, one source)."""
    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))  # after site-packages: envoy/ must not shadow xds-protos
    from controlplane.rbac import rbac_filter
    from services.runtime.authz import PolicyError, load_policy

    try:
        return rbac_filter(load_policy(policy))
    except PolicyError as err:
        raise RenderError(str(err)) from None


def validate(path: Path) -> None:
    """Envoy's own check of the rendered file; raises if Envoy rejects it."""
    envoy = shutil.which("envoy") or str(Path(sys.executable).parent / "envoy")
    subprocess.run([envoy, "--mode", "validate", "-c", str(path), "-l", "warning"], check=True)  # noqa: S603


def transcoder_descriptor_path(settings: Settings) -> Path:
    """Where the transcoder's descriptor set is written: beside the bootstrap."""
    return (settings.out.parent / f"{settings.out.stem}.pb").resolve()


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    try:
        settings, check = settings_from(sys.argv[1:] if argv is None else argv, env or os.environ)
    except RenderError as err:
        print(f"render.py: {err}", file=sys.stderr)
        return 2
    settings.out.parent.mkdir(parents=True, exist_ok=True)
    transcoder_descriptor(settings.descriptor, transcoder_descriptor_path(settings))
    settings.out.write_text(render(settings))
    if check:
        validate(settings.out)
    print(settings.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
