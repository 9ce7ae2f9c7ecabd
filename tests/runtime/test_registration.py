"""The registration Consul receives for an instance."""

import pytest

from services.runtime.registration import ConsulRegistrar, RegistrationError


def _registrar(**overrides: object) -> ConsulRegistrar:
    fields: dict[str, object] = {
        "consul_addr": "127.0.0.1:8500",
        "name": "user-svc",
        "address": "127.0.0.1",
        "health_service": "airline.user.v1.UserService",
        "version": "1.2.3",
        "instance_id": "user-svc-a",
    }
    fields.update(overrides)
    return ConsulRegistrar(**fields)  # type: ignore[arg-type]


def test_registration_names_the_instance_its_meta_and_a_grpc_check() -> None:
    body = _registrar().registration(port=50051, metrics_port=9101)
    assert (body["ID"], body["Name"], body["Address"], body["Port"]) == (
        "user-svc-a",
        "user-svc",
        "127.0.0.1",
        50051,
    )
    assert body["Meta"] == {"version": "1.2.3", "metrics_port": "9101"}
    check = body["Check"]
    assert check["GRPC"] == "127.0.0.1:50051/airline.user.v1.UserService"
    assert (check["Interval"], check["DeregisterCriticalServiceAfter"]) == ("2s", "1m")


def test_check_starts_passing_so_a_restarted_agent_does_not_empty_the_mesh() -> None:
    """An instance registers only once it serves; Consul's default would be critical."""
    assert _registrar().registration(1, 2)["Check"]["Status"] == "passing"


def test_instance_id_defaults_to_name_host_and_port() -> None:
    registrar = _registrar(instance_id="", consul_addr="127.0.0.1:1", attempts=1)
    # Nothing listens on port 1: registration fails, and only the id it chose matters.
    with pytest.raises(RegistrationError):
        registrar.register(50051, 9101)
    assert registrar.instance_id.startswith("user-svc-")
    assert registrar.instance_id.endswith("-50051")
