"""Finding the events a policy alerts on: one finder per :class:`PolicyKind`.

Run, tick, location and asset events are scanned by time: what changed after the policy's
cursor (``scanned_until``, less :data:`OVERLAP_S` for transactions that committed late),
each with a deterministic ``event_key`` so a second look alerts nothing twice. Agent and
backlog policies are episodic: a problem raises one alert and its end one more, the state
being the policy's last alert about that agent or stream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.alerts import store
from tether.controlplane.alerts.model import AlertEvent, PolicyFilters, PolicyKind
from tether.controlplane.alerts.store import AlertCandidate
from tether.controlplane.db.models import (
    Agent,
    AlertPolicy,
    CodeLocation,
    Instigator,
    InstigatorTick,
    LoadStatus,
    Run,
    RunEventRow,
    TickStatus,
)
from tether.controlplane.runs.failures import RunFailureReason
from tether.controlplane.store import locations
from tether.shared.wire.runs import EventType, RunStatus

#: Seconds a scan looks back before its cursor: a run that moved at ``t`` may commit a
#: little after a scan at ``t`` read the table.
OVERLAP_S = 60.0
#: The failure reasons of runs the run monitor failed.
MONITOR_REASONS = frozenset(
    {RunFailureReason.START_TIMEOUT, RunFailureReason.WORKER_LOST, RunFailureReason.RUN_TIMEOUT}
)
_LIVE = [str(RunStatus.STARTING), str(RunStatus.STARTED)]


@dataclass(frozen=True)
class Scan:
    """One look at a policy's events: since when, until when, the links' base URL."""

    policy: AlertPolicy
    filters: PolicyFilters
    since: float
    now: float
    base_url: str

    def link(self, path: str) -> str:
        """An absolute link to a UI page."""
        return f"{self.base_url.rstrip('/')}{path}"


def _run_matches(run: Run, filters: PolicyFilters) -> bool:
    if filters.job_name is not None and run.job_name != filters.job_name:
        return False
    if filters.location_name is not None and run.location_name != filters.location_name:
        return False
    tags = run.tags or {}
    return all(tags.get(k) == v for k, v in filters.tags.items())


def _run_candidate(scan: Scan, run: Run, event: AlertEvent, what: str) -> AlertCandidate:
    reason = f" ({run.failure_reason})" if run.failure_reason else ""
    return AlertCandidate(
        event=event,
        event_key=f"run:{run.id}:{event}",
        subject=run.id,
        title=f"Run {run.id[:8]} of {run.job_name} {what}{reason}",
        text=f"Run {run.id} of job {run.job_name} in location {run.location_name} {what}{reason}.",
        link=scan.link(f"/runs/{quote(run.id, safe='')}"),
        details={
            "run_id": run.id,
            "job_name": run.job_name,
            "location_name": run.location_name,
            "status": run.status,
            "failure_reason": run.failure_reason,
            "tags": run.tags or {},
            "started_at": run.started_at,
            "ended_at": run.ended_at,
        },
    )


async def _ended_runs(session: AsyncSession, scan: Scan, status: RunStatus) -> Sequence[Run]:
    stmt = select(Run).where(
        Run.deployment_id == scan.policy.deployment_id,
        Run.status == str(status),
        Run.status_changed_at > scan.since,
    )
    runs = (await session.execute(stmt.order_by(Run.status_changed_at))).scalars().all()
    return [r for r in runs if _run_matches(r, scan.filters)]


async def run_failures(session: AsyncSession, scan: Scan) -> list[AlertCandidate]:
    """Runs that ended FAILURE."""
    return [
        _run_candidate(scan, r, AlertEvent.RUN_FAILURE, "failed")
        for r in await _ended_runs(session, scan, RunStatus.FAILURE)
    ]


async def run_successes(session: AsyncSession, scan: Scan) -> list[AlertCandidate]:
    """Runs that ended SUCCESS."""
    return [
        _run_candidate(scan, r, AlertEvent.RUN_SUCCESS, "succeeded")
        for r in await _ended_runs(session, scan, RunStatus.SUCCESS)
    ]


async def monitor_stops(session: AsyncSession, scan: Scan) -> list[AlertCandidate]:
    """Runs the run monitor failed (start timeout, worker lost, max runtime)."""
    return [
        _run_candidate(scan, r, AlertEvent.RUN_STOPPED_BY_MONITOR, "was stopped by the run monitor")
        for r in await _ended_runs(session, scan, RunStatus.FAILURE)
        if r.failure_reason in MONITOR_REASONS
    ]


async def long_runs(session: AsyncSession, scan: Scan) -> list[AlertCandidate]:
    """Runs still running ``threshold`` seconds after they started."""
    threshold = scan.policy.threshold or 0.0
    stmt = select(Run).where(
        Run.deployment_id == scan.policy.deployment_id,
        Run.status.in_(_LIVE),
        Run.started_at.is_not(None),
        Run.started_at < scan.now - threshold,
    )
    out = []
    for run in (await session.execute(stmt)).scalars().all():
        if _run_matches(run, scan.filters):
            minutes = threshold / 60
            out.append(
                _run_candidate(
                    scan, run, AlertEvent.RUN_LONG_RUNNING, f"has run longer than {minutes:g} min"
                )
            )
    return out


async def tick_failures(session: AsyncSession, scan: Scan) -> list[AlertCandidate]:
    """Schedule and sensor ticks that failed."""
    stmt = (
        select(InstigatorTick, Instigator)
        .join(Instigator, Instigator.id == InstigatorTick.instigator_id)
        .where(
            Instigator.deployment_id == scan.policy.deployment_id,
            InstigatorTick.status == str(TickStatus.FAILURE),
            InstigatorTick.updated_at > scan.since,
        )
        .order_by(InstigatorTick.updated_at)
    )
    out = []
    f = scan.filters
    for tick, inst in (await session.execute(stmt)).all():
        if f.location_name is not None and inst.location_name != f.location_name:
            continue
        if f.instigator_name is not None and inst.name != f.instigator_name:
            continue
        error = (tick.error or {}).get("message", "")
        plural = "schedules" if inst.kind == "schedule" else "sensors"
        location, name = quote(inst.location_name, safe=""), quote(inst.name, safe="")
        path = f"/locations/{location}/{plural}/{name}/ticks"
        out.append(
            AlertCandidate(
                event=AlertEvent.TICK_FAILURE,
                event_key=f"tick:{tick.id}",
                subject=f"{inst.kind}:{inst.location_name}:{inst.name}",
                title=f"Tick of {inst.kind} {inst.name} failed",
                text=f"A tick of {inst.kind} {inst.name} in location {inst.location_name} "
                f"failed: {error}".rstrip(": "),
                link=scan.link(path),
                details={
                    "tick_id": tick.id,
                    "instigator_kind": inst.kind,
                    "instigator_name": inst.name,
                    "location_name": inst.location_name,
                    "tick_time": tick.tick_time,
                    "error": tick.error,
                },
            )
        )
    return out


async def load_errors(session: AsyncSession, scan: Scan) -> list[AlertCandidate]:
    """Code locations whose load failed (each failed load once)."""
    stmt = select(CodeLocation).where(
        CodeLocation.deployment_id == scan.policy.deployment_id,
        CodeLocation.load_status == str(LoadStatus.LOAD_ERROR),
        CodeLocation.updated_at > scan.since,
    )
    out = []
    for loc in (await session.execute(stmt)).scalars().all():
        if scan.filters.location_name not in (None, loc.name):
            continue
        error = (loc.load_error or {}).get("message", "")
        out.append(
            AlertCandidate(
                event=AlertEvent.LOCATION_LOAD_ERROR,
                event_key=f"location:{loc.name}:{loc.updated_at!r}",
                subject=loc.name,
                title=f"Code location {loc.name} failed to load",
                text=f"Code location {loc.name} failed to load: {error}".rstrip(": "),
                link=scan.link(f"/locations/{quote(loc.name, safe='')}"),
                details={"location_name": loc.name, "error": loc.load_error},
            )
        )
    return out


async def asset_failures(session: AsyncSession, scan: Scan) -> list[AlertCandidate]:
    """Failed steps that materialize an asset (the asset of the run's job whose op the
    step is, from the location's snapshot)."""
    stmt = (
        select(RunEventRow, Run)
        .join(Run, Run.id == RunEventRow.run_id)
        .where(
            Run.deployment_id == scan.policy.deployment_id,
            Run.status_changed_at > scan.since,
            Run.status == str(RunStatus.FAILURE),
            RunEventRow.event_type == str(EventType.STEP_FAILURE),
        )
    )
    out = []
    assets_of: dict[str, dict[tuple[str, str], list[str]]] = {}
    for event, run in (await session.execute(stmt)).all():
        if scan.filters.location_name not in (None, run.location_name):
            continue
        if run.location_name not in assets_of:
            assets_of[run.location_name] = await _asset_ops(session, scan, run.location_name)
        keys = assets_of[run.location_name].get((run.job_name, event.step_key or ""), [])
        for key in keys:
            if scan.filters.asset_key not in (None, key):
                continue
            out.append(
                AlertCandidate(
                    event=AlertEvent.ASSET_FAILURE,
                    event_key=f"asset:{key}:{run.id}:{event.step_key}",
                    subject=key,
                    title=f"Asset {key} failed to materialize",
                    text=f"Step {event.step_key} of run {run.id} failed materializing asset "
                    f"{key}: {(event.error or {}).get('message', event.message)}",
                    link=scan.link(f"/runs/{quote(run.id, safe='')}"),
                    details={
                        "asset_key": key,
                        "run_id": run.id,
                        "step_key": event.step_key,
                        "partition_key": run.partition_key,
                    },
                )
            )
    return out


async def _asset_ops(
    session: AsyncSession, scan: Scan, location_name: str
) -> dict[tuple[str, str], list[str]]:
    location = await locations.get_location(session, scan.policy.deployment_id, location_name)
    snapshot = await locations.load_snapshot(session, location) if location else None
    out: dict[tuple[str, str], list[str]] = {}
    for repo in snapshot.repositories if snapshot else []:
        for asset in repo.assets:
            if asset.op_name is None:
                continue
            for job in asset.job_names:
                out.setdefault((job, asset.op_name), []).append("/".join(asset.key))
    return out


async def _episodes(
    session: AsyncSession,
    scan: Scan,
    subject: str,
    problem: bool,
    raise_event: AlertEvent,
    end_event: AlertEvent,
    make: Callable[[AlertEvent, str], AlertCandidate],
) -> list[AlertCandidate]:
    """One alert when a problem starts, one when it ends (the last alert is the state)."""
    last = await store.latest_delivery(
        session, scan.policy.id, store.fit(subject), [raise_event, end_event]
    )
    raised = last is not None and last.event == str(raise_event)
    if problem and not raised:
        # The episode's key: the moment it was seen, unique per episode.
        return [make(raise_event, f"{raise_event}:{subject}:{scan.now!r}")]
    if not problem and raised:
        assert last is not None
        return [make(end_event, f"{end_event}:{last.event_key}")]
    return []


async def agents_offline(session: AsyncSession, scan: Scan) -> list[AlertCandidate]:
    """Agents without a heartbeat for ``threshold`` seconds, and their return."""
    threshold = scan.policy.threshold or 0.0
    stmt = select(Agent).where(Agent.deployment_id == scan.policy.deployment_id)
    out: list[AlertCandidate] = []
    for agent in (await session.execute(stmt)).scalars().all():
        if scan.filters.agent_id not in (None, agent.agent_id):
            continue
        silent = scan.now - agent.last_heartbeat

        def make(
            event: AlertEvent, key: str, agent: Agent = agent, silent: float = silent
        ) -> AlertCandidate:
            offline = event == AlertEvent.AGENT_OFFLINE
            return AlertCandidate(
                event=event,
                event_key=key,
                subject=f"agent:{agent.agent_id}",
                title=f"Agent {agent.agent_id} is {'offline' if offline else 'back'}",
                text=(
                    f"Agent {agent.agent_id} sent no heartbeat for {silent:.0f}s."
                    if offline
                    else f"Agent {agent.agent_id} sends heartbeats again."
                ),
                link=scan.link("/agents"),
                details={"agent_id": agent.agent_id, "last_heartbeat": agent.last_heartbeat},
            )

        out += await _episodes(
            session,
            scan,
            f"agent:{agent.agent_id}",
            silent > threshold,
            AlertEvent.AGENT_OFFLINE,
            AlertEvent.AGENT_BACK,
            make,
        )
    return out


async def backlogs(session: AsyncSession, scan: Scan) -> list[AlertCandidate]:
    """JetStream streams of an agent holding more than ``threshold`` messages, and their
    return under it (from the agents' heartbeats)."""
    threshold = scan.policy.threshold or 0.0
    stmt = select(Agent).where(Agent.deployment_id == scan.policy.deployment_id)
    out: list[AlertCandidate] = []
    for agent in (await session.execute(stmt)).scalars().all():
        if scan.filters.agent_id not in (None, agent.agent_id):
            continue
        queues = (agent.heartbeat or {}).get("queues", {}) or {}
        for stream, count in sorted(queues.items()):

            def make(
                event: AlertEvent,
                key: str,
                agent: Agent = agent,
                stream: str = stream,
                count: int = count,
            ) -> AlertCandidate:
                high = event == AlertEvent.BACKLOG_HIGH
                return AlertCandidate(
                    event=event,
                    event_key=key,
                    subject=f"backlog:{agent.agent_id}:{stream}",
                    title=f"Backlog of {stream} on agent {agent.agent_id} is "
                    f"{'over' if high else 'back under'} {threshold:g}",
                    text=f"Stream {stream} of agent {agent.agent_id} holds {count} messages.",
                    link=scan.link("/agents"),
                    details={"agent_id": agent.agent_id, "stream": stream, "messages": count},
                )

            out += await _episodes(
                session,
                scan,
                f"backlog:{agent.agent_id}:{stream}",
                count > threshold,
                AlertEvent.BACKLOG_HIGH,
                AlertEvent.BACKLOG_OK,
                make,
            )
    return out


FINDERS: dict[PolicyKind, Callable[[AsyncSession, Scan], Awaitable[list[AlertCandidate]]]] = {
    PolicyKind.RUN_FAILURE: run_failures,
    PolicyKind.RUN_SUCCESS: run_successes,
    PolicyKind.RUN_LONG_RUNNING: long_runs,
    PolicyKind.RUN_STOPPED_BY_MONITOR: monitor_stops,
    PolicyKind.TICK_FAILURE: tick_failures,
    PolicyKind.LOCATION_LOAD_ERROR: load_errors,
    PolicyKind.AGENT_OFFLINE: agents_offline,
    PolicyKind.BACKLOG: backlogs,
    PolicyKind.ASSET_FAILURE: asset_failures,
}
