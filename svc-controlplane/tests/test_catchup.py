"""Catch-up of schedule ticks missed while the scheduler was down: the policy on its own,
then the scheduler on a controllable clock, with the outcome read through GraphQL."""

from __future__ import annotations

import math

import controlplane_testkit as testkit
import pytest
from controlplane_testkit import Api, snapshot_with_instigators
from tether.controlplane.daemons import Scheduler
from tether.controlplane.daemons.catchup import (
    MAX_RECORDED_MISSED,
    CatchupPolicy,
    plan_ticks,
    skip_reason,
)
from tether.shared.wire.snapshots import InstigatorStatus

HOUR = 3600.0

SCHEDULE = """
query($offset: Int!, $limit: Int!, $status: String) {
  schedules(locationName: "loc") {
    name catchupPolicy ownCatchupPolicy
    ticks(limit: $limit, offset: $offset, status: $status) { tickTime status skipReason }
  }
}"""
SET_CATCHUP = """
mutation($name: String!, $policy: CatchupPolicy) {
  setScheduleCatchup(locationName: "loc", name: $name, policy: $policy) {
    name catchupPolicy ownCatchupPolicy
  }
}"""


@pytest.mark.parametrize(
    ("policy", "launch", "skip"),
    [
        # due: four missed hourly ticks and one on time (noticed 10 s after it).
        (CatchupPolicy.LATEST, [4], [0, 1, 2, 3]),
        (CatchupPolicy.ALL, [2, 3, 4], [0, 1]),
        (CatchupPolicy.NONE, [4], [0, 1, 2, 3]),
    ],
)
def test_plan_with_an_on_time_tick(
    policy: CatchupPolicy, launch: list[int], skip: list[int]
) -> None:
    due = [h * HOUR for h in range(5)]
    now = due[-1] + 10
    plan = plan_ticks(due, now, policy, max_ticks=2, grace_s=60)
    assert plan.launch == [due[i] for i in launch]
    assert plan.skip == [due[i] for i in skip]


@pytest.mark.parametrize(
    ("policy", "launch"),
    [(CatchupPolicy.LATEST, [3]), (CatchupPolicy.ALL, [2, 3]), (CatchupPolicy.NONE, [])],
)
def test_plan_when_every_due_tick_was_missed(policy: CatchupPolicy, launch: list[int]) -> None:
    due = [h * HOUR for h in range(4)]
    plan = plan_ticks(due, due[-1] + 600, policy, max_ticks=2, grace_s=60)
    assert plan.launch == [due[i] for i in launch]
    assert sorted(plan.launch + plan.skip) == due  # every due tick is accounted for


def test_plan_in_normal_operation_skips_nothing() -> None:
    for policy in CatchupPolicy:
        plan = plan_ticks([HOUR], HOUR + 1, policy, max_ticks=1, grace_s=60)
        assert (plan.launch, plan.skip) == ([HOUR], [])
        assert plan_ticks([], HOUR, policy, max_ticks=1, grace_s=60).launch == []


def test_skip_reasons_name_the_policy() -> None:
    assert skip_reason(0, 3 * HOUR, CatchupPolicy.NONE, max_ticks=5) == (
        "missed while the scheduler was down (noticed 3h00 late); "
        "catch-up policy none: no missed tick runs"
    )
    assert "policy all: at most the 5 newest missed ticks run" in skip_reason(
        0, 90, CatchupPolicy.ALL, max_ticks=5
    )


class Clock(testkit.Clock):
    """The test clock, which can also jump to just after the next full hour."""

    def to_next_hour(self) -> float:
        now = self()
        hour = math.ceil(now / HOUR) * HOUR
        self.advance(hour - now + 1)
        return float(hour)

    def to_half_past(self) -> None:
        """Move to half past the next hour: whole-hour jumps then miss every hourly tick."""
        self.to_next_hour()
        self.advance(HOUR / 2)


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def _evaluations(api: Api) -> list[float]:
    items = [i for i in await api.claim(max_items=50) if i.kind == "evaluate_schedule"]
    return sorted(i.payload["scheduled_timestamp"] for i in items)


async def _ticks(api: Api, name: str = "hourly", **page: object) -> list[dict[str, object]]:
    variables = {"offset": 0, "limit": 100, "status": None, **page}
    (schedule,) = [
        s for s in (await api.user(SCHEDULE, **variables))["schedules"] if s["name"] == name
    ]
    return schedule["ticks"]


async def test_policies_all_and_none_per_schedule_over_graphql(api: Api, clock: Clock) -> None:
    await api.load(snapshot_with_instigators())
    scheduler = Scheduler(
        api.cp.db, api.cp.queue, catchup="latest", max_catchup_ticks=3, clock=clock
    )
    clock.to_half_past()
    await scheduler.check()
    (hourly,) = [
        s
        for s in (await api.user(SCHEDULE, offset=0, limit=1))["schedules"]
        if s["name"] == "hourly"
    ]
    assert hourly["catchupPolicy"] == "LATEST" and hourly["ownCatchupPolicy"] is None

    # "all": the three newest of five missed ticks run, the two older are SKIPPED.
    changed = await api.user(SET_CATCHUP, name="hourly", policy="ALL")
    assert changed["setScheduleCatchup"]["catchupPolicy"] == "ALL"
    clock.advance(5 * HOUR)
    await scheduler.check()
    latest = math.floor(clock() / HOUR) * HOUR
    assert await _evaluations(api) == [latest - 2 * HOUR, latest - HOUR, latest]
    ticks = await _ticks(api)
    assert [t["status"] for t in ticks] == ["STARTED"] * 3 + ["SKIPPED"] * 2
    assert "catch-up policy all: at most the 3 newest missed ticks run" in ticks[-1]["skipReason"]

    # "none": no missed tick runs; the next on-time tick does.
    await api.user(SET_CATCHUP, name="hourly", policy="NONE")
    clock.advance(3 * HOUR)
    await scheduler.check()
    assert await _evaluations(api) == []
    skipped = await _ticks(api, status="SKIPPED")
    assert len(skipped) == 5 and "catch-up policy none" in str(skipped[0]["skipReason"])
    hour = clock.to_next_hour()
    await scheduler.check()
    assert await _evaluations(api) == [hour]

    # Back to the control plane's setting.
    reset = (await api.user(SET_CATCHUP, name="hourly", policy=None))["setScheduleCatchup"]
    assert reset == {"name": "hourly", "catchupPolicy": "LATEST", "ownCatchupPolicy": None}
    bad = await api.post(SET_CATCHUP, token=api.admin_token, name="nope", policy="ALL")
    assert bad["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    viewer = await api.post(SCHEDULE, offset=-1, limit=10, token=api.admin_token)
    assert "offset >= 0" in viewer["errors"][0]["message"]
    wrong = await api.post(SCHEDULE, offset=0, limit=10, status="NOPE", token=api.admin_token)
    assert "unknown status 'NOPE'" in wrong["errors"][0]["message"]


async def test_tick_history_pages_and_a_long_outage_is_summed_up(api: Api, clock: Clock) -> None:
    # Schedule "off" (every minute) running from the start, on the daemon's clock.
    snapshot = snapshot_with_instigators()
    repo = snapshot.repositories[0]
    every_minute = repo.schedules[1].model_copy(update={"default_status": InstigatorStatus.RUNNING})
    repo = repo.model_copy(update={"schedules": [repo.schedules[0], every_minute]})
    await api.load(snapshot.model_copy(update={"repositories": [repo]}))
    scheduler = Scheduler(api.cp.db, api.cp.queue, catchup="none", clock=clock)
    clock.to_half_past()
    await scheduler.check()
    # 720 minutes later: the newest tick is on time and runs; of the 719 missed, only the
    # newest are listed (MAX_RECORDED_MISSED ticks in all), the oldest says so.
    clock.advance(12 * HOUR)
    await scheduler.check()
    assert len(await _evaluations(api)) == 1
    pages = [await _ticks(api, "off", offset=o, limit=200) for o in (0, 200, 400)]
    assert [len(p) for p in pages] == [200, 200, MAX_RECORDED_MISSED - 400]
    everything = [t for p in pages for t in p]
    times = [t["tickTime"] for t in everything]
    assert times == sorted(times, reverse=True) and len(set(times)) == MAX_RECORDED_MISSED
    assert [t["status"] for t in everything] == ["STARTED"] + ["SKIPPED"] * (len(times) - 1)
    oldest = pages[-1][-1]["skipReason"]
    assert "catch-up policy none" in str(oldest) and "older missed ticks since" in str(oldest)
    assert "older" not in str(pages[0][1]["skipReason"])
    assert await _ticks(api, "off", offset=MAX_RECORDED_MISSED) == []
    skipped = await _ticks(api, "off", status="SKIPPED", limit=500)
    assert len(skipped) == MAX_RECORDED_MISSED - 1
    # The next minute is on time again, and runs.
    clock.advance(60)
    await scheduler.check()
    assert len(await _evaluations(api)) == 1


async def test_a_location_removed_for_a_while_does_not_catch_up(api: Api, clock: Clock) -> None:
    remove = 'mutation { removeLocation(name: "loc") { name } }'
    add = "mutation($c: JSON!) { addLocation(config: $c) { name } }"
    await api.load(snapshot_with_instigators())
    (config,) = [
        loc["config"]
        for loc in (await api.user("{ codeLocations { name config } }"))["codeLocations"]
        if loc["name"] == "loc"
    ]
    scheduler = Scheduler(api.cp.db, api.cp.queue, clock=clock)
    clock.to_half_past()
    await scheduler.check()
    await api.user(remove)
    clock.advance(5 * HOUR)
    await scheduler.check()
    await api.user(add, c=config)
    await api.load(snapshot_with_instigators())
    await scheduler.check()
    # Gone is not down: nothing is caught up or recorded for the hours it was removed.
    assert await _evaluations(api) == [] and await _ticks(api) == []
    hour = clock.to_next_hour()
    await scheduler.check()
    assert await _evaluations(api) == [hour]


async def test_a_deployments_catchup_setting_is_its_schedules_default(
    api: Api, clock: Clock
) -> None:
    """Schedules without a policy of their own follow their deployment's scheduleCatchup
    (updateDeploymentSettings) before the control plane's."""
    update = """
    mutation($p: String) {
      updateDeploymentSettings(settings: {scheduleCatchup: $p}) { scheduleCatchup }
    }"""
    await api.load(snapshot_with_instigators())
    scheduler = Scheduler(
        api.cp.db, api.cp.queue, catchup="latest", max_catchup_ticks=3, clock=clock
    )
    clock.to_half_past()
    await scheduler.check()
    await api.user(update, p="all")
    (hourly,) = [
        s
        for s in (await api.user(SCHEDULE, offset=0, limit=1))["schedules"]
        if s["name"] == "hourly"
    ]
    assert hourly["catchupPolicy"] == "ALL" and hourly["ownCatchupPolicy"] is None
    clock.advance(5 * HOUR)
    await scheduler.check()
    assert len(await _evaluations(api)) == 3  # "all": the three newest missed ticks

    await api.user(update, p="none")
    clock.advance(3 * HOUR)
    await scheduler.check()
    assert await _evaluations(api) == []
    # The schedule's own policy still comes first; null puts the deployment back on
    # the control plane's "latest".
    await api.user(SET_CATCHUP, name="hourly", policy="ALL")
    clock.advance(5 * HOUR)
    await scheduler.check()
    assert len(await _evaluations(api)) == 3
    await api.user(SET_CATCHUP, name="hourly", policy=None)
    await api.user(update, p=None)
    clock.advance(5 * HOUR)
    await scheduler.check()
    assert len(await _evaluations(api)) == 1
