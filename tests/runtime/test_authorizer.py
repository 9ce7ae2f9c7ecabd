"""The interceptor's per-method authorization: remembered decisions stay per caller."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry

from services.runtime import interceptors
from services.runtime.authz import load_policy
from services.runtime.interceptors import Authorizer

POLICY_FILE = Path(__file__).resolve().parents[2] / "mesh" / "policy.toml"
VERIFY = "/airline.user.v1.UserInternalService/VerifyPassword"


def svc(name: str) -> str:
    return f"spiffe://airline.local/svc/{name}"


def xfcc(name: str) -> str:
    return f'By={svc("user-svc")};Hash=ab12;Subject="O=airline-mesh,CN=x";URI={svc(name)}'


class Refused(Exception):
    """What the stand-in call raises where gRPC's abort would."""


class Call:
    """The two things Authorizer asks of a call: its TLS peer and how to refuse it."""

    def __init__(self, peer: str) -> None:
        self._peer = peer

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_subject_alternative_name": [self._peer.encode()]}

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Refused(code)


@pytest.fixture
def authorizer() -> Authorizer:
    return Authorizer(load_policy(POLICY_FILE), svc("user-svc"), CollectorRegistry())


def _check(authorizer: Authorizer, peer: str, forwarded: str | None) -> str | None:
    return authorizer.check(VERIFY, forwarded, Call(peer))  # type: ignore[arg-type]


def test_a_remembered_allow_does_not_let_another_forwarded_caller_through(
    authorizer: Authorizer,
) -> None:
    """Through the same proxy, each forwarded identity keeps its own decision."""
    for _ in range(3):
        assert _check(authorizer, svc("edge"), xfcc("auth-svc")) == svc("auth-svc")
        with pytest.raises(Refused):
            _check(authorizer, svc("edge"), xfcc("predict-svc"))


def test_a_remembered_allow_does_not_follow_a_header_from_a_non_proxy(
    authorizer: Authorizer,
) -> None:
    assert _check(authorizer, svc("edge"), xfcc("auth-svc")) == svc("auth-svc")
    with pytest.raises(Refused):
        _check(authorizer, svc("predict-svc"), xfcc("auth-svc"))


def test_remembered_decisions_are_bounded(
    authorizer: Authorizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(interceptors, "_MAX_DECISIONS", 10)
    for n in range(25):
        with pytest.raises(Refused):
            _check(authorizer, svc("edge"), xfcc(f"forged-{n}"))
    assert len(authorizer._decisions) <= 10
