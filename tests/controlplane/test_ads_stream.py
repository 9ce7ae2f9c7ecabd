"""The xDS bookkeeping of one ADS stream, without a network: what is sent when."""

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from controlplane.ads import StreamState
from controlplane.resources import (
    CLUSTER_TYPE,
    CRITICAL,
    ENDPOINT_TYPE,
    PASSING,
    Instance,
    Snapshot,
    make_snapshot,
)

ONE = make_snapshot({"user-svc": (Instance("u-1", "127.0.0.1", 1, PASSING),)})
TWO = make_snapshot(
    {
        "user-svc": (Instance("u-1", "127.0.0.1", 1, PASSING),),
        "booking-svc": (Instance("b-1", "127.0.0.1", 2, PASSING),),
    }
)


def request(
    type_url: str,
    names: tuple[str, ...] = (),
    version: str = "",
    nonce: str = "",
    error: str = "",
) -> discovery_pb2.DiscoveryRequest:
    req = discovery_pb2.DiscoveryRequest(
        type_url=type_url, resource_names=names, version_info=version, response_nonce=nonce
    )
    req.node.id = "envoy-1"
    if error:
        req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return req


def names_in(response: discovery_pb2.DiscoveryResponse) -> list[str]:
    if response.type_url == CLUSTER_TYPE:
        message: object = cluster_pb2.Cluster()
        field = "name"
    else:
        message = endpoint_pb2.ClusterLoadAssignment()
        field = "cluster_name"
    names = []
    for packed in response.resources:
        packed.Unpack(message)
        names.append(getattr(message, field))
    return names


def test_first_request_gets_every_cluster_with_the_snapshot_version() -> None:
    response = StreamState("s").on_request(request(CLUSTER_TYPE), TWO)
    assert response is not None
    assert response.version_info == TWO.versions[CLUSTER_TYPE]
    assert names_in(response) == ["booking-svc", "user-svc"]
    assert response.nonce


def test_endpoints_are_sent_only_for_requested_clusters() -> None:
    response = StreamState("s").on_request(request(ENDPOINT_TYPE, ("user-svc",)), TWO)
    assert response is not None
    assert names_in(response) == ["user-svc"]


def test_ack_of_the_current_version_gets_no_response() -> None:
    stream = StreamState("s")
    sent = stream.on_request(request(CLUSTER_TYPE), ONE)
    assert sent is not None
    ack = request(CLUSTER_TYPE, version=sent.version_info, nonce=sent.nonce)
    assert stream.on_request(ack, ONE) is None
    assert stream.types[CLUSTER_TYPE].acked_version == sent.version_info


def test_nack_is_not_answered_with_the_rejected_version_again() -> None:
    stream = StreamState("s")
    sent = stream.on_request(request(CLUSTER_TYPE), ONE)
    assert sent is not None
    nack = request(CLUSTER_TYPE, version="", nonce=sent.nonce, error="bad cluster")
    assert stream.on_request(nack, ONE) is None
    assert stream.on_snapshot(ONE) == []
    assert stream.types[CLUSTER_TYPE].acked_version == ""


def test_after_a_nack_the_next_snapshot_is_pushed() -> None:
    stream = StreamState("s")
    sent = stream.on_request(request(CLUSTER_TYPE), ONE)
    assert sent is not None
    stream.on_request(request(CLUSTER_TYPE, nonce=sent.nonce, error="bad cluster"), ONE)
    [pushed] = stream.on_snapshot(TWO)
    assert pushed.version_info == TWO.versions[CLUSTER_TYPE]
    assert pushed.nonce != sent.nonce


def test_request_with_a_stale_nonce_is_ignored() -> None:
    stream = StreamState("s")
    first = stream.on_request(request(CLUSTER_TYPE), ONE)
    assert first is not None
    [second] = stream.on_snapshot(TWO)
    stale = request(CLUSTER_TYPE, version=first.version_info, nonce=first.nonce, error="x")
    assert stream.on_request(stale, TWO) is None
    assert stream.types[CLUSTER_TYPE].nonce == second.nonce


def test_new_cluster_names_get_endpoints_without_a_new_version() -> None:
    """Envoy asks for the endpoints of a cluster it just learned from CDS."""
    stream = StreamState("s")
    sent = stream.on_request(request(ENDPOINT_TYPE, ("user-svc",)), TWO)
    assert sent is not None
    more = request(
        ENDPOINT_TYPE, ("user-svc", "booking-svc"), version=sent.version_info, nonce=sent.nonce
    )
    response = stream.on_request(more, TWO)
    assert response is not None
    assert names_in(response) == ["booking-svc", "user-svc"]


def test_snapshot_change_is_pushed_only_for_types_whose_version_moved() -> None:
    stream = StreamState("s")
    for type_url, names in ((CLUSTER_TYPE, ()), (ENDPOINT_TYPE, ("user-svc",))):
        sent = stream.on_request(request(type_url, names), ONE)
        assert sent is not None
        stream.on_request(request(type_url, names, sent.version_info, sent.nonce), ONE)
    unhealthy = make_snapshot({"user-svc": (Instance("u-1", "127.0.0.1", 1, CRITICAL),)})
    pushes = stream.on_snapshot(unhealthy)
    assert [p.type_url for p in pushes] == [ENDPOINT_TYPE]


def test_requests_before_the_first_snapshot_are_answered_when_it_arrives() -> None:
    stream = StreamState("s")
    assert stream.on_request(request(CLUSTER_TYPE), None) is None
    [response] = stream.on_snapshot(ONE)
    assert names_in(response) == ["user-svc"]


def test_types_we_do_not_serve_get_no_answer() -> None:
    listeners = "type.googleapis.com/envoy.config.listener.v3.Listener"
    stream = StreamState("s")
    assert stream.on_request(request(listeners), ONE) is None
    assert stream.on_snapshot(Snapshot(resources={}, versions={})) == []


def test_first_request_after_a_reconnect_is_answered_despite_its_old_nonce() -> None:
    """Envoy that kept config from a previous stream (or control plane) gets the current one."""
    reconnected = request(CLUSTER_TYPE, version="old-version", nonce="41")
    response = StreamState("s").on_request(reconnected, ONE)
    assert response is not None
    assert response.version_info == ONE.versions[CLUSTER_TYPE]
