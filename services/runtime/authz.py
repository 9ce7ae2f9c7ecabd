"""Per-method authorization from the mesh's one policy file (`mesh/policy.toml`).

The file is read and validated once, at start; `Policy.allowed(identity, method)`
is then a pure lookup. Default deny: an identity or a method the file does not name
is refused. The same `Policy` is rendered into Envoy's RBAC filter for the mesh
listener (`controlplane/rbac.py`), so both places enforce one set of rules.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.runtime.identity import IdentityError, validate_workload_name, workload_name

# `/package.Service/Method`, as gRPC puts it in a call's path.
_METHOD = re.compile(r"/[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+/[A-Za-z_]\w*")
# The same, where the method may end in `*`: a whole service or a method-name prefix.
_PATTERN = re.compile(r"/[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+/(\*|[A-Za-z_]\w*\*?)")
XFCC_HEADER = "x-forwarded-client-cert"


class PolicyError(ValueError):
    """The policy file cannot be used; the message says where and why."""


@dataclass(frozen=True)
class MethodPattern:
    """One method rule: an exact gRPC path, or a prefix when the rule ends in `*`."""

    text: str

    @property
    def is_prefix(self) -> bool:
        return self.text.endswith("*")

    @property
    def path(self) -> str:
        """The exact path, or the prefix without its `*`."""
        return self.text.removesuffix("*")

    def matches(self, method: str) -> bool:
        return method.startswith(self.path) if self.is_prefix else method == self.path


@dataclass(frozen=True)
class Rule:
    """What one caller may call, and why."""

    caller: str
    why: str
    methods: tuple[MethodPattern, ...]


@dataclass(frozen=True)
class Policy:
    """Every caller's rules; anything not named here is denied."""

    rules: Mapping[str, Rule]
    proxies: frozenset[str] = frozenset()

    def allowed(self, identity: str | None, method: str) -> bool:
        """Whether the workload with SPIFFE id `identity` may call gRPC path `method`."""
        name = workload_name(identity) if identity else None
        rule = self.rules.get(name) if name else None
        if rule is None or not _METHOD.fullmatch(method):
            return False
        return any(pattern.matches(method) for pattern in rule.methods)

    def caller(self, peer: str | None, forwarded: str | None) -> str | None:
        """The identity a call is judged as: the forwarded one when a proxy brings it.

        `peer` is the TLS peer's SPIFFE id, `forwarded` the x-forwarded-client-cert
        header. A header from anyone but a proxy is ignored, and a proxy's call without
        one is the proxy's own (the edge, calling public methods).
        """
        name = workload_name(peer) if peer else None
        if name is None or name not in self.proxies or not forwarded:
            return peer
        return forwarded_identity(forwarded)


def forwarded_identity(header: str) -> str | None:
    """The `URI=` of the last element of an x-forwarded-client-cert header.

    Envoy appends the certificate of the client it accepted as the last element;
    anything before it came from further away and is not what our proxy vouches for.
    """
    elements = _split_outside_quotes(header, ",")
    if not elements:
        return None
    uris = []
    for pair in _split_outside_quotes(elements[-1], ";"):
        key, _, value = pair.partition("=")
        if key.strip().lower() == "uri":
            uris.append(value.strip().strip('"'))
    return uris[0] if len(uris) == 1 and workload_name(uris[0]) else None


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in parts if part.strip()]


def load_policy(path: Path) -> Policy:
    """Reads and validates the policy file; raises PolicyError naming what is wrong."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path}: {exc}") from exc
    return parse_policy(raw, str(path))


def parse_policy(raw: Mapping[str, Any], source: str = "policy") -> Policy:
    """A `Policy` from the file's parsed TOML."""
    _only_keys(raw, {"proxies", "callers"}, source)
    callers = raw.get("callers", {})
    if not isinstance(callers, Mapping) or not callers:
        raise PolicyError(f"{source}: [callers] must name at least one caller")
    rules = {name: _rule(name, body, f"{source}: callers.{name}") for name, body in callers.items()}
    proxies = frozenset(_strings(raw.get("proxies", []), f"{source}: proxies"))
    unknown = proxies - rules.keys()
    if unknown:
        raise PolicyError(f"{source}: proxies {sorted(unknown)} are not callers")
    return Policy(rules=rules, proxies=proxies)


def _rule(name: str, body: Any, where: str) -> Rule:
    try:
        validate_workload_name(name)
    except IdentityError as exc:
        raise PolicyError(f"{where}: {exc}") from None
    if not isinstance(body, Mapping):
        raise PolicyError(f"{where}: must be a table with `why` and `methods`")
    _only_keys(body, {"why", "methods"}, where)
    why = body.get("why")
    if not isinstance(why, str) or not why.strip():
        raise PolicyError(f"{where}: `why` must say why this caller needs these methods")
    methods = _strings(body.get("methods"), f"{where}.methods")
    if not methods:
        raise PolicyError(f"{where}.methods: must name at least one method")
    for method in methods:
        if not _PATTERN.fullmatch(method):
            raise PolicyError(
                f"{where}.methods: {method!r} is not /package.Service/Method, "
                "/package.Service/* or /package.Service/Prefix*"
            )
    return Rule(caller=name, why=why, methods=tuple(MethodPattern(m) for m in methods))


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise PolicyError(f"{where}: must be a list of strings")
    return value


def _only_keys(table: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise PolicyError(f"{where}: unknown keys {unknown}")
