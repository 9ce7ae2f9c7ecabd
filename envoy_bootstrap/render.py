"""Renders Envoy's bootstrap (edge and mesh listeners) from envoy/bootstrap.yaml.

`python -m envoy_bootstrap` reads its `Settings` from the environment once, like every
other process (the table is `Settings.from_env`'s), and writes the bootstrap and,
beside it, the descriptor set the transcoder loads (ENVOY_CONFIG with .pb for .yaml).
Callers in Python build `Settings` themselves and call `write`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import yaml
from google.protobuf import descriptor_pb2

from contract import routes
from controlplane.config import ConfigError, xds_socket
from controlplane.rbac import rbac_filter
from envoy_bootstrap import body_schema, mesh_tls, rate_limits, service_routes
from services.runtime.authz import PolicyError, load_policy

ROOT = Path(__file__).resolve().parents[1]
# Envoy's own files: the templates filled in here, and edge.lua.
TEMPLATES = ROOT / "envoy"

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
    # The control plane's ADS socket (controlplane/config.py's XDS_SOCKET).
    xds_socket: Path = ROOT / "var" / "xds" / "ads.sock"
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
    # Run `envoy --mode validate` on what was written.
    validate: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """The settings the environment names; API.md's defaults for the rest.

        ENVOY_CONFIG (var/envoy.yaml: where the bootstrap is written); ENVOY_EDGE_ADDR,
        ENVOY_MESH_ADDR or MESH_ADDR, ENVOY_ADMIN_ADDR (127.0.0.1: 8080, 15001, 9901);
        XDS_SOCKET (the control plane's ADS socket: $MESH_VAR_DIR/xds/ads.sock);
        ENVOY_STATIC_CLUSTERS (unset: ADS; else `SERVICE=HOST:PORT[,HOST:PORT];...`);
        ENVOY_DESCRIPTOR (generated/airline.pb);
        CORS_ORIGINS (comma-separated, exact); TOKEN_RATE_LIMIT, TOKEN_RATE_WINDOW_SECONDS,
        TOKEN_RATE_CLIENTS (10, 60, 10000); SIGNUP_RATE_LIMIT, SIGNUP_RATE_WINDOW_SECONDS
        (10, 60); RATELIMIT_ADDR (unset: this Envoy counts alone), RATELIMIT_DOMAIN
        (limits.toml's), READ_RATE_LIMIT (set: reads counted too); ENVOY_EDGE_TIMEOUT_SECONDS,
        ENVOY_MESH_TIMEOUT_SECONDS, ENVOY_PER_TRY_TIMEOUT_SECONDS,
        ENVOY_MAX_CLIENT_TIMEOUT_SECONDS (15, 15, 10, 60); ENVOY_MAX_REQUEST_BYTES,
        ENVOY_MAX_CONNECTIONS; JWT_ISSUER, JWT_AUDIENCE, JWKS_CACHE_SECONDS;
        ENVOY_XFF_TRUSTED_HOPS, ENVOY_ACCESS_LOG, ENVOY_NODE_ID; ENVOY_VALIDATE (`1`: run
        `envoy --mode validate` on the result); ENVOY_MESH_TLS (`1`: mTLS and RBAC on the
        mesh listener, certificates over SDS), MESH_POLICY_FILE (mesh/policy.toml),
        ENVOY_EDGE_TLS_ADDR (the edge's TLS listener), EDGE_TLS_CERT_FILE and
        EDGE_TLS_KEY_FILE (an operator's certificate; else the mesh CA's over SDS).
        """
        d = cls()

        def get(default: object, *names: str) -> str:
            value = _env(env, *names)
            return value if value is not None else str(default)

        def count(name: str, default: int) -> int:
            return int(_positive(name, get(default, name)))

        def seconds(name: str, default: float) -> float:
            return float(_positive(name, get(default, name), float))

        descriptor = Path(get(d.descriptor, "ENVOY_DESCRIPTOR")).resolve()
        if not descriptor.is_file():
            raise RenderError(f"descriptor set {descriptor} not found (run `make gen`)")
        workloads = routes.load(descriptor).workloads
        settings = cls(
            out=Path(get(d.out, "ENVOY_CONFIG")),
            edge=Address.parse(get("127.0.0.1:8080", "ENVOY_EDGE_ADDR")),
            mesh=Address.parse(get("127.0.0.1:15001", "ENVOY_MESH_ADDR", "MESH_ADDR")),
            admin=Address.parse(get("127.0.0.1:9901", "ENVOY_ADMIN_ADDR"), allow_zero=True),
            xds_socket=_xds_socket(env),
            static=_static(
                [e for e in get("", "ENVOY_STATIC_CLUSTERS").split(";") if e.strip()], workloads
            ),
            descriptor=descriptor,
            cors_origins=tuple(o.strip() for o in get("", "CORS_ORIGINS").split(",") if o.strip()),
            token_limit=count("TOKEN_RATE_LIMIT", d.token_limit),
            token_window_seconds=count("TOKEN_RATE_WINDOW_SECONDS", d.token_window_seconds),
            token_clients=count("TOKEN_RATE_CLIENTS", d.token_clients),
            signup_limit=count("SIGNUP_RATE_LIMIT", d.signup_limit),
            signup_window_seconds=count("SIGNUP_RATE_WINDOW_SECONDS", d.signup_window_seconds),
            ratelimit=tuple(
                Address.parse(a) for a in get("", "RATELIMIT_ADDR").split(",") if a.strip()
            ),
            ratelimit_domain=_env(env, "RATELIMIT_DOMAIN") or rate_limits.default_domain(),
            reads_limited=bool(get("", "READ_RATE_LIMIT")),
            edge_timeout_seconds=seconds("ENVOY_EDGE_TIMEOUT_SECONDS", d.edge_timeout_seconds),
            mesh_timeout_seconds=seconds("ENVOY_MESH_TIMEOUT_SECONDS", d.mesh_timeout_seconds),
            per_try_timeout_seconds=seconds(
                "ENVOY_PER_TRY_TIMEOUT_SECONDS", d.per_try_timeout_seconds
            ),
            max_client_timeout_seconds=seconds(
                "ENVOY_MAX_CLIENT_TIMEOUT_SECONDS", d.max_client_timeout_seconds
            ),
            max_request_bytes=count("ENVOY_MAX_REQUEST_BYTES", d.max_request_bytes),
            max_connections=count("ENVOY_MAX_CONNECTIONS", d.max_connections),
            jwt_issuer=get(d.jwt_issuer, "JWT_ISSUER"),
            jwt_audience=get(d.jwt_audience, "JWT_AUDIENCE"),
            jwks_cache_seconds=count("JWKS_CACHE_SECONDS", d.jwks_cache_seconds),
            xff_trusted_hops=_whole(
                "ENVOY_XFF_TRUSTED_HOPS", get(d.xff_trusted_hops, "ENVOY_XFF_TRUSTED_HOPS")
            ),
            access_log=get(d.access_log, "ENVOY_ACCESS_LOG"),
            node_id=get(d.node_id, "ENVOY_NODE_ID"),
            validate=get("", "ENVOY_VALIDATE") not in ("", "0"),
            mesh_tls=get("", "ENVOY_MESH_TLS").lower() in ("1", "true"),
            policy=Path(get(d.policy, "MESH_POLICY_FILE")).resolve(),
            edge_tls=Address.parse(tls) if (tls := get("", "ENVOY_EDGE_TLS_ADDR")) else None,
            edge_tls_cert=Path(cert).resolve() if (cert := get("", "EDGE_TLS_CERT_FILE")) else None,
            edge_tls_key=Path(key).resolve() if (key := get("", "EDGE_TLS_KEY_FILE")) else None,
        )
        if bool(settings.edge_tls_cert) != bool(settings.edge_tls_key):
            raise RenderError("EDGE_TLS_CERT_FILE and EDGE_TLS_KEY_FILE go together")
        return settings


def _env(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def _xds_socket(env: Mapping[str, str]) -> Path:
    try:
        return xds_socket(env)
    except ConfigError as err:
        raise RenderError(str(err)) from None


def _static(entries: Sequence[str], workloads: Sequence[str]) -> dict[str, tuple[Address, ...]]:
    clusters: dict[str, tuple[Address, ...]] = {}
    for entry in entries:
        name, sep, addresses = entry.partition("=")
        name = name.strip()
        if not sep or name not in workloads:
            raise RenderError(
                f"ENVOY_STATIC_CLUSTERS entry {entry!r}: expected one of "
                f"{', '.join(workloads)}=HOST:PORT"
            )
        clusters[name] = tuple(Address.parse(a) for a in addresses.split(",") if a.strip())
        if not clusters[name]:
            raise RenderError(f"ENVOY_STATIC_CLUSTERS entry {entry!r}: no address")
    return clusters


def _positive(name: str, value: object, kind: type[int] | type[float] = int) -> int | float:
    try:
        number = kind(str(value))
    except ValueError:
        raise RenderError(f"{name}={value!r} is not a number") from None
    if number <= 0:
        raise RenderError(f"{name}={value!r} must be above zero")
    return number


def _whole(name: str, value: str) -> int:
    if not value.isdigit():
        raise RenderError(f"{name}={value!r} is not a whole number")
    return int(value)


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


def jwt_rules(contract: routes.Contract) -> str:
    """jwt_authn's rules (YAML list items): the open methods take a token if one is sent.

    The first rule matching the gRPC path wins: each open method by its path, then every
    public service by its prefix, token required. Paths of no public service have no
    rule: the router answers them 404 / UNIMPLEMENTED, token or not.
    """
    optional = {
        "requires_any": {"requirements": [{"provider_name": "airline"}, {"allow_missing": {}}]}
    }
    required = {"provider_name": "airline"}
    rules = [{"match": {"path": path}, "requires": optional} for path in contract.open_methods]
    rules += [{"match": {"prefix": f"/{s}/"}, "requires": required} for s in contract.services]
    return "\n".join(f"- {json.dumps(rule)}" for rule in rules)


def edge_routing(settings: Settings) -> service_routes.EdgeRouting:
    """What the edge's per-service routes carry: deadline, retries, rate limits."""
    is_global = bool(settings.ratelimit)
    # contract/routes.py's RATE_LIMITED_METHODS name these (ratelimit/limits.toml's tables).
    limits = {
        "create_token": (settings.token_limit, settings.token_window_seconds),
        "create_user": (settings.signup_limit, settings.signup_window_seconds),
    }
    unknown = set(routes.RATE_LIMITED_METHODS.values()) - set(limits)
    if unknown:
        raise RenderError(f"no settings for the rate limits {', '.join(sorted(unknown))}")
    per_route = {
        name: yaml.safe_load(
            rate_limits.route_config(
                name, limit, window, settings.token_clients, is_global=is_global
            )
        )
        for name, (limit, window) in limits.items()
    }
    reads = rate_limits.read_route_config(is_global=is_global, reads_limited=settings.reads_limited)
    return service_routes.EdgeRouting(
        deadline=_deadline(settings.edge_timeout_seconds, settings),
        per_try_timeout=_duration(settings.per_try_timeout_seconds),
        limits=per_route,
        reads=json.loads(reads),
    )


def _deadline(default_seconds: float, settings: Settings) -> dict[str, str]:
    """A route's max_stream_duration: the caller's grpc-timeout up to a cap, else the default."""
    return {
        "max_stream_duration": _duration(default_seconds),
        "grpc_timeout_header_max": _duration(settings.max_client_timeout_seconds),
    }


def _items(entries: Sequence[Mapping[str, object]], indent: int) -> str:
    """`entries` as YAML list items (JSON flow, one a line) for a placeholder at `indent`."""
    return _block("\n".join(f"- {json.dumps(e)}" for e in entries), indent)


def _static_clusters(settings: Settings) -> str:
    template = Template((TEMPLATES / "static-cluster.yaml").read_text())
    rendered = []
    for name, addresses in settings.static.items():
        endpoints = [
            {"endpoint": {"address": {"socket_address": {"address": a.host, "port_value": a.port}}}}
            for a in addresses
        ]
        cluster = template.substitute(name=name, endpoints=json.dumps(endpoints))
        rendered.append(textwrap.indent(cluster, "    "))  # an item of static_resources.clusters
    return "".join(rendered)


def _descriptor_set(path: Path) -> descriptor_pb2.FileDescriptorSet:
    return descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())


def transcoder_descriptor(source: Path, target: Path) -> None:
    """A copy of `make gen`'s descriptor set beside the bootstrap, for the transcoder.

    A copy, so a running Envoy keeps the contract it started with while `make gen`
    rewrites generated/. The set already holds the google.rpc error details the
    transcoder needs to turn grpc-status-details-bin into JSON (scripts/gen.sh).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def render(settings: Settings) -> str:
    """The bootstrap YAML for `settings`."""
    contract = routes.load(settings.descriptor)
    lua = body_schema.generate(_descriptor_set(settings.descriptor), contract)
    lua += (TEMPLATES / "edge.lua").read_text()
    dynamic = "" if settings.static else (TEMPLATES / "ads.yaml").read_text()
    # Envoy truncates the percentage to a whole number and fails a cluster when
    # 100 * healthy < instances * percent: 1% is "at least one healthy instance"
    # (for up to 100 instances of a service).
    healthz = {name: {"value": 1} for name in contract.workloads}
    per_try_timeout = _duration(settings.per_try_timeout_seconds)
    # Each service's routes (contract/routes.py's), between the templates' fixed ones.
    edge_retries = service_routes.retry_policy(per_try_timeout, on_reset=False)
    edge_routes = service_routes.edge_routes(contract, edge_routing(settings))
    mesh_deadline = _deadline(settings.mesh_timeout_seconds, settings)
    mesh_routes = service_routes.mesh_routes(contract, mesh_deadline)
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
        "xds_socket": json.dumps(str(settings.xds_socket)),
        "xff_num_trusted_hops": settings.xff_trusted_hops,
        "access_log_path": json.dumps(settings.access_log),
        "local_reply_mappers": json.dumps(local_reply_mappers()),
        "per_try_timeout": per_try_timeout,
        "edge_retry_policy": json.dumps(edge_retries),
        "cors_origins": json.dumps([{"exact": origin} for origin in settings.cors_origins]),
        "edge_routes": _items(edge_routes, 24),
        "mesh_routes": _items(mesh_routes, 24),
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
        "public_services": json.dumps(list(contract.services)),
        "jwt_rules": _block(jwt_rules(contract), 24),
        "jwt_issuer": json.dumps(settings.jwt_issuer),
        "jwt_audience": json.dumps(settings.jwt_audience),
        "jwks_authority": settings.edge.authority,
        "jwks_cache_duration": _duration(settings.jwks_cache_seconds),
        "static_clusters": _static_clusters(settings),
        "docs_routes": _items(docs_routes(settings.descriptor.parent), 24),
    }
    text = Template((TEMPLATES / "bootstrap.yaml").read_text()).substitute(values)
    # An optional block left empty leaves its indentation or a blank last line behind.
    text = "\n".join(line.rstrip() for line in text.rstrip().splitlines()) + "\n"
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
    return str(yaml.safe_dump(secured, sort_keys=False, width=1000))


def _rbac_filter(policy: Path) -> dict[str, object]:
    """The mesh policy as the RBAC filter (controlplane/rbac.py renders it, one source)."""
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


def write(settings: Settings) -> Path:
    """Writes the bootstrap and the transcoder's descriptor set; validates on request."""
    settings.out.parent.mkdir(parents=True, exist_ok=True)
    transcoder_descriptor(settings.descriptor, transcoder_descriptor_path(settings))
    settings.out.write_text(render(settings))
    if settings.validate:
        validate(settings.out)
    return settings.out
