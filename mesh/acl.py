"""Consul's ACLs for one local mesh: bootstrap once, then a token per workload.

Tokens are kept in `<var>/tokens/<name>.token` (0600, the folder 0700):

| token | may |
|---|---|
| `<service>` (one each) | register its own name only (a service identity), read |
| `ratelimit` | the same, for the rate limit service: the name its certificate carries |
| `controlplane` | read services and nodes (it watches Consul, writes nothing) |
| `operator` | read services and nodes (`make status`, tests) |
| `agent` | the agent's own node registration |
| `bootstrap` | everything (the bootstrap token); used only here |

Idempotent: a token file whose token Consul still knows is kept; anything missing is made.
Every call carries the bootstrap token, so an agent on another machine is asked over its
HTTPS API only (an `Endpoint` with the mesh CA and a client certificate); a bare
`HOST:PORT` is the plain HTTP API of an agent on this machine's loopback (`make up`).
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane.ca import private_dir, write_private

READ_RULES = 'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }\n'
AGENT_RULES = 'node_prefix "" { policy = "write" }\nservice_prefix "" { policy = "read" }\n'
READERS = ("controlplane", "operator")
# The rate limit service (ratelimit/server.py's SERVICE_NAME) is not registered in
# Consul, but it is a workload: the CA signs the name of the token's service identity,
# so it needs a token of its own to get its certificate, as the services do.
RATELIMIT = "ratelimit"
TIMEOUT_SECONDS = 5.0


class AclError(RuntimeError):
    """Consul refused or did not answer an ACL call."""


@dataclass(frozen=True)
class Endpoint:
    """One agent's HTTP API: `http://127.0.0.1:8500` from its own host, or
    `https://ADDRESS:8501` with `tls` (the mesh CA and a client certificate)."""

    url: str
    tls: ssl.SSLContext | None = field(default=None, compare=False)


Agent = Endpoint | str


def _endpoint(agent: Agent) -> Endpoint:
    return agent if isinstance(agent, Endpoint) else Endpoint(f"http://{agent}")


def ensure_tokens(consul_addr: Agent, tokens_dir: Path, services: Iterable[str]) -> dict[str, Path]:
    """Bootstraps the ACL system if needed and makes every missing token; returns their files."""
    private_dir(tokens_dir)
    master = _bootstrap_token(consul_addr, tokens_dir / "bootstrap.token")
    files = {"bootstrap": tokens_dir / "bootstrap.token"}
    policies = {
        "read-all": _ensure_policy(consul_addr, master, "read-all", READ_RULES),
        "agent": _ensure_policy(consul_addr, master, "agent", AGENT_RULES),
    }
    wanted: dict[str, dict[str, Any]] = {
        name: {"ServiceIdentities": [{"ServiceName": name}]} for name in (*services, RATELIMIT)
    }
    wanted |= {name: {"Policies": [{"ID": policies["read-all"]}]} for name in READERS}
    wanted["agent"] = {"Policies": [{"ID": policies["agent"]}]}
    for name, grants in wanted.items():
        path = tokens_dir / f"{name}.token"
        if not _known(consul_addr, path):
            body = {"Description": f"airline-mesh {name}", **grants}
            created = _call(consul_addr, "PUT", "/v1/acl/token", master, body)
            write_private(path, created["SecretID"].encode())
        files[name] = path
    agent = files["agent"].read_text().strip()
    _call(consul_addr, "PUT", "/v1/agent/token/agent", master, {"Token": agent})
    return files


def set_agent_token(consul_addr: Agent, master: str, agent_token: str) -> None:
    """Gives the agent at `consul_addr` its own token (each agent of a cluster needs it)."""
    _call(consul_addr, "PUT", "/v1/agent/token/agent", master, {"Token": agent_token})


def wait_for_leader(consul_addr: Agent, timeout: float) -> None:
    """Polls until the agent has elected a leader (ACL calls fail before that)."""
    agent = _endpoint(consul_addr)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(  # noqa: S310 (the agent's own URL)
                f"{agent.url}/v1/status/leader", timeout=1, context=agent.tls
            ) as answer:
                if json.loads(answer.read()):
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise AclError(f"consul at {agent.url} has no leader after {timeout:.0f} s")


def _bootstrap_token(consul_addr: Agent, path: Path) -> str:
    if _known(consul_addr, path):
        return path.read_text().strip()
    # The first bootstrap right after the leader is elected can be refused while the
    # ACL system initialises: ask again for a few seconds.
    deadline = time.monotonic() + 20
    while True:
        try:
            secret = str(_call(consul_addr, "PUT", "/v1/acl/bootstrap", None, None)["SecretID"])
            break
        except AclError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    write_private(path, secret.encode())
    return secret


def _known(consul_addr: Agent, path: Path) -> bool:
    """Whether `path` holds a token this Consul knows."""
    try:
        token = path.read_text().strip()
        _call(consul_addr, "GET", "/v1/acl/token/self", token, None)
    except (OSError, AclError):
        return False
    return True


def _ensure_policy(consul_addr: Agent, master: str, name: str, rules: str) -> str:
    try:
        found = _call(consul_addr, "GET", f"/v1/acl/policy/name/{name}", master, None)
        return str(found["ID"])
    except AclError:
        body = {"Name": name, "Rules": rules}
        return str(_call(consul_addr, "PUT", "/v1/acl/policy", master, body)["ID"])


def _call(consul_addr: Agent, method: str, path: str, token: str | None, body: Any) -> Any:
    agent = _endpoint(consul_addr)
    request = urllib.request.Request(  # noqa: S310 (the agent's own http(s) URL)
        f"{agent.url}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"X-Consul-Token": token} if token else {},
    )
    try:
        with urllib.request.urlopen(  # noqa: S310 (the agent's own URL)
            request, timeout=TIMEOUT_SECONDS, context=agent.tls
        ) as answer:
            raw = answer.read()
    except urllib.error.HTTPError as err:
        # Consul's message names what was missing, never the token itself.
        raise AclError(f"{method} {path}: HTTP {err.code} {err.read()[:200]!r}") from None
    except OSError as exc:
        raise AclError(f"{method} {path}: {exc}") from None
    return json.loads(raw) if raw.strip() else None
