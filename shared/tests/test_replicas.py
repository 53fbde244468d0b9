"""TETHER_NATS_REPLICAS: the setting, and the stream configurations that carry it; a NATS
URL naming every node of a cluster (the cluster itself is exercised in
tests/test_nats_cluster.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict
from tether.shared.nats.connection import connect_nats, nats_servers
from tether.shared.nats.streams import STREAMS
from tether.shared.runtime.settings import AgentSettings
from tether.testing import free_port


class _ServiceSettings(AgentSettings):
    model_config = SettingsConfigDict(env_prefix="TETHER_TESTSVC_")


def test_replicas_default_to_one_and_read_the_shared_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TETHER_NATS_REPLICAS", raising=False)
    assert _ServiceSettings().nats_replicas == 1
    monkeypatch.setenv("TETHER_NATS_REPLICAS", "3")
    assert _ServiceSettings().nats_replicas == 3
    # The service's own prefix wins over the shared name, as for every shared field.
    monkeypatch.setenv("TETHER_TESTSVC_NATS_REPLICAS", "5")
    assert _ServiceSettings().nats_replicas == 5


@pytest.mark.parametrize("bad", ["0", "6", "-1", "three"])
def test_replicas_outside_one_to_five_are_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("TETHER_NATS_REPLICAS", bad)
    with pytest.raises(ValidationError, match="nats_replicas"):
        _ServiceSettings()


def test_every_stream_config_carries_the_replica_count() -> None:
    for spec in STREAMS.values():
        assert spec.config().num_replicas == 1
        assert spec.config(3).num_replicas == 3
        # Nothing else changes with the count.
        one, three = spec.config(1).as_dict(), spec.config(3).as_dict()
        one.pop("num_replicas"), three.pop("num_replicas")
        assert one == three


def test_a_nats_url_names_one_server_or_several_comma_separated() -> None:
    assert nats_servers("nats://a:4222") == ["nats://a:4222"]
    assert nats_servers(" nats://a:4222, nats://b:4222 ,nats://c:4222,") == [
        "nats://a:4222",
        "nats://b:4222",
        "nats://c:4222",
    ]
    with pytest.raises(ValueError, match="no NATS server"):
        nats_servers(" , ")


@pytest.mark.integration
async def test_a_service_given_every_node_connects_while_one_is_down(nats_server) -> None:
    # Nothing listens on the first port (a lost node): the client moves on to the next,
    # whichever order it tries them in.
    url = f"nats://127.0.0.1:{free_port()},{nats_server.url}"
    nc = await connect_nats(url, "test", nats_server.creds)
    try:
        assert nc.connected_url is not None
        assert nc.connected_url.port == nats_server.port
        assert nc.is_connected
    finally:
        await nc.close()
