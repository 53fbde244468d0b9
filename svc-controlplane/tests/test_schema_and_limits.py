"""The committed SDL matches the schema; oversized requests get a clear GraphQL error."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from controlplane_testkit import EVENTS, EVENTS_OUTCOME, Api, serving
from tether.controlplane.api.schema import REGENERATE_SDL, schema_sdl
from tether.controlplane.app import create_app
from tether.controlplane.core import open_control_plane
from tether.controlplane.settings import ControlPlaneSettings
from tether.shared.agent_client import AgentClient
from tether.shared.wire.errors import REQUEST_TOO_LARGE, AgentApiError
from tether.shared.wire.runs import EventType, RunEvent

SDL_FILE = Path(__file__).parents[1] / "schema.graphql"


def test_the_committed_sdl_is_the_schema() -> None:
    committed = SDL_FILE.read_text() if SDL_FILE.exists() else ""
    assert committed == schema_sdl(), (
        f"{SDL_FILE} is out of date with the GraphQL schema; regenerate it: {REGENERATE_SDL}"
    )


LIMIT = 4096


@pytest.fixture
def small_settings(settings: ControlPlaneSettings) -> ControlPlaneSettings:
    return settings.model_copy(update={"max_request_bytes": LIMIT})


def _events(count: int) -> list[dict[str, object]]:
    return [
        RunEvent(
            run_id="r" * 32, seq=i + 1, event_type=EventType.LOG, message="x" * 100
        ).model_dump(mode="json")
        for i in range(count)
    ]


async def test_an_oversized_request_is_a_graphql_error_and_changes_nothing(
    small_settings: ControlPlaneSettings,
) -> None:
    async with open_control_plane(small_settings) as cp:
        assert small_settings.agent_token_file is not None
        token = small_settings.agent_token_file.read_text().strip()
        transport = httpx.ASGITransport(app=create_app(cp))
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
            api = Api(client=client, cp=cp, token=token, admin_token="")
            body = await api.post(EVENTS, token=token, items=_events(100))
            (error,) = body["errors"]
            assert error["extensions"] == {"code": REQUEST_TOO_LARGE, "maxBytes": LIMIT}
            assert "over the control plane's limit of 4096 bytes" in error["message"]
            assert "smaller batches" in error["message"]
            # A chunked body (no Content-Length) is counted as it arrives.
            big = httpx.Request(
                "POST",
                "http://cp/graphql",
                content=_chunks(LIMIT * 2),
                headers={"content-type": "application/json"},
            )
            resp = await client.send(big)
            assert resp.status_code == 413
            assert resp.json()["errors"][0]["extensions"]["code"] == REQUEST_TOO_LARGE
            # Under the limit, the same API answers normally (nothing was stored before).
            small = await api.post(EVENTS_OUTCOME, token=token, items=_events(1))
            refused = small["data"]["storeEvents"]["refused"]
            assert "names no run of this deployment" in refused[0]["reason"]


async def _chunks(total: int):  # type: ignore[no-untyped-def]
    for _ in range(total // 1024):
        yield b" " * 1024


async def test_the_agent_client_sees_request_too_large_not_bad_input(
    small_settings: ControlPlaneSettings,
) -> None:
    async with serving(small_settings, daemons=True) as served:
        events = [RunEvent.model_validate(e) for e in _events(100)]
        async with AgentClient(served.url, served.agent_token, retry_attempts=1) as client:
            with pytest.raises(AgentApiError) as caught:
                await client.store_events(events)
        assert caught.value.code == REQUEST_TOO_LARGE
        assert not caught.value.is_bad_input  # a relay must split it, not dead-letter it
