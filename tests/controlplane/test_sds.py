"""Envoy's identity as SDS secrets in the snapshot, and how one ADS stream serves them."""

from __future__ import annotations

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.ads import StreamState
from controlplane.ca import MeshCA
from controlplane.resources import CLUSTER_TYPE, ENDPOINT_TYPE, PASSING, Instance, make_snapshot
from controlplane.sds import CA_SECRET, IDENTITY_SECRET, SECRET_TYPE, EnvoyIdentity
from tests.controlplane.test_ads_stream import request

VIEW = {"user-svc": (Instance("u-1", "127.0.0.1", 1, PASSING),)}
CA = MeshCA.create()


def secrets_in(response: discovery_pb2.DiscoveryResponse) -> dict[str, secret_pb2.Secret]:
    unpacked = {}
    for packed in response.resources:
        secret = secret_pb2.Secret()
        assert packed.Unpack(secret)
        unpacked[secret.name] = secret
    return unpacked


def test_identity_secrets_carry_envoys_certificate_and_the_ca() -> None:
    identity = EnvoyIdentity(CA, "edge", ip_addresses=["127.0.0.1"])
    secrets = {secret.name: secret for secret in identity.secrets()}
    certificate = secrets[IDENTITY_SECRET].tls_certificate
    assert certificate.certificate_chain.inline_bytes == identity.current.cert_pem
    assert certificate.private_key.inline_bytes == identity.current.key_pem
    assert secrets[CA_SECRET].validation_context.trusted_ca.inline_bytes == CA.cert_pem


def test_stream_sends_only_the_secrets_envoy_asked_for() -> None:
    snapshot = make_snapshot(VIEW, secrets=EnvoyIdentity(CA).secrets())
    response = StreamState("s").on_request(request(SECRET_TYPE, (CA_SECRET,)), snapshot)
    assert response is not None
    assert list(secrets_in(response)) == [CA_SECRET]
    assert response.version_info == snapshot.versions[SECRET_TYPE]


def test_renewal_pushes_the_secrets_and_nothing_else() -> None:
    identity = EnvoyIdentity(CA)
    before = make_snapshot(VIEW, secrets=identity.secrets())
    stream = StreamState("s")
    for type_url, names in (
        (CLUSTER_TYPE, ()),
        (ENDPOINT_TYPE, ("user-svc",)),
        (SECRET_TYPE, (IDENTITY_SECRET, CA_SECRET)),
    ):
        sent = stream.on_request(request(type_url, names), before)
        assert sent is not None
        stream.on_request(request(type_url, names, sent.version_info, sent.nonce), before)

    renewed = identity.renew()
    [push] = stream.on_snapshot(make_snapshot(VIEW, secrets=identity.secrets()))
    assert push.type_url == SECRET_TYPE
    pushed = secrets_in(push)[IDENTITY_SECRET].tls_certificate
    assert pushed.certificate_chain.inline_bytes == renewed.cert_pem


def test_snapshot_without_a_ca_has_no_secret_type() -> None:
    assert SECRET_TYPE not in make_snapshot(VIEW).versions
