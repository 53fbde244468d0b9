"""A load result whose snapshot the launcher compressed (large locations) loads the same."""

from __future__ import annotations

import base64
import zlib

from controlplane_testkit import RESULTS, RESULTS_OUTCOME, Api, example_snapshot
from sqlalchemy import func, select
from test_graphql_limits import serving
from tether.controlplane.db.models import LocationSnapshotRow
from tether.controlplane.settings import ControlPlaneSettings
from tether.shared.wire.errors import BAD_INPUT
from tether.shared.wire.snapshots import SNAPSHOT_ZLIB_KEY, snapshot_payload
from tether.shared.wire.work import WorkResult

LOCATIONS = "{ codeLocations { name loadStatus repositories { jobs { name ops { name } } } } }"


async def test_a_compressed_snapshot_is_decoded_and_a_garbled_one_refused(api: Api) -> None:
    (item,) = [i for i in await api.claim() if i.kind == "load_location"]
    garbled = WorkResult(
        id=item.id,
        work_item_id=item.id,
        kind=item.kind,
        ok=True,
        payload={SNAPSHOT_ZLIB_KEY: "bm90IHpsaWI="},
    )
    body = await api.post(RESULTS_OUTCOME, token=api.token, items=[garbled.model_dump(mode="json")])
    ((refused,),) = [body["data"]["submitResults"]["refused"]]
    assert "does not decode" in refused["reason"]

    payload = snapshot_payload(example_snapshot(), compress_over=0)
    assert set(payload) == {SNAPSHOT_ZLIB_KEY}
    result = WorkResult(id=item.id, work_item_id=item.id, kind=item.kind, ok=True, payload=payload)
    assert await api.submit(result) == {"stored": 1, "duplicates": 0}
    (loc,) = [x for x in (await api.user(LOCATIONS))["codeLocations"] if x["name"] == "loc"]
    assert loc["loadStatus"] == "LOADED"
    (job,) = loc["repositories"][0]["jobs"]
    assert [op["name"] for op in job["ops"]] == ["a", "b"]


async def test_a_decompression_bomb_is_refused_naming_the_limit(api: Api) -> None:
    # 64 MiB of spaces in ~64 kB: inflation stops at the 32 MiB limit.
    bomb = base64.b64encode(zlib.compress(b" " * (64 << 20), level=9)).decode()
    (item,) = [i for i in await api.claim() if i.kind == "load_location"]
    result = WorkResult(
        id=item.id, work_item_id=item.id, kind=item.kind, ok=True, payload={SNAPSHOT_ZLIB_KEY: bomb}
    )
    body = await api.post(RESULTS_OUTCOME, token=api.token, items=[result.model_dump(mode="json")])
    ((refused,),) = [body["data"]["submitResults"]["refused"]]
    assert "inflates past 33,554,432 bytes" in refused["reason"]
    assert "TETHER_CONTROLPLANE_SNAPSHOT_MAX_BYTES" in refused["reason"]
    async with api.cp.db.reading() as session:
        assert await session.scalar(select(func.count()).select_from(LocationSnapshotRow)) == 0


async def test_snapshots_per_request_are_bounded(settings: ControlPlaneSettings) -> None:
    async with serving(settings, snapshots_per_request=1) as api:
        (item,) = [i for i in await api.claim() if i.kind == "load_location"]
        payload = snapshot_payload(example_snapshot(), compress_over=0)
        result = WorkResult(
            id=item.id, work_item_id=item.id, kind=item.kind, ok=True, payload=payload
        )
        twice = [result.model_dump(mode="json")] * 2
        body = await api.post(RESULTS, token=api.token, items=twice)
        (error,) = body["errors"]
        assert error["extensions"]["code"] == BAD_INPUT
        assert "2 location snapshots in one request, over the limit of 1" in error["message"]
        assert "TETHER_CONTROLPLANE_SNAPSHOTS_PER_REQUEST" in error["message"]
        assert await api.submit(result) == {"stored": 1, "duplicates": 0}
