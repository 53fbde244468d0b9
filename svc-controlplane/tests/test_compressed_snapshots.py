"""A load result whose snapshot the launcher compressed (large locations) loads the same."""

from __future__ import annotations

from controlplane_testkit import RESULTS, Api, example_snapshot
from tether.shared.errors import BAD_INPUT
from tether.shared.messages import WorkResult
from tether.shared.snapshots import SNAPSHOT_ZLIB_KEY, snapshot_payload

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
    body = await api.post(RESULTS, token=api.token, items=[garbled.model_dump(mode="json")])
    assert body["errors"][0]["extensions"]["code"] == BAD_INPUT, body
    assert "does not decode" in body["errors"][0]["message"]

    payload = snapshot_payload(example_snapshot(), compress_over=0)
    assert set(payload) == {SNAPSHOT_ZLIB_KEY}
    result = WorkResult(id=item.id, work_item_id=item.id, kind=item.kind, ok=True, payload=payload)
    assert await api.submit(result) == {"stored": 1, "duplicates": 0}
    (loc,) = [x for x in (await api.user(LOCATIONS))["codeLocations"] if x["name"] == "loc"]
    assert loc["loadStatus"] == "LOADED"
    (job,) = loc["repositories"][0]["jobs"]
    assert [op["name"] for op in job["ops"]] == ["a", "b"]
