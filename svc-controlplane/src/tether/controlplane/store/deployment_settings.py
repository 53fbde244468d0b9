"""Per-deployment settings: run-queue limits, the schedule catch-up default, retention.

A deployment's row holds only what it set; a NULL column (or no row) means the control
plane's default, the environment variable of the same name
(``TETHER_CONTROLPLANE_MAX_CONCURRENT_RUNS``, ``_RUN_TAG_CONCURRENCY_LIMITS``,
``_SCHEDULE_CATCHUP``, ``_RETENTION_DAYS``). :class:`DeploymentDefaults` is those
defaults, :func:`resolve` the values a deployment runs with; the run coordinator, the
scheduler, ``launchRun`` and ``prune`` read them through here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import DeploymentSettingsRow
from tether.controlplane.db.statements import upsert_insert
from tether.controlplane.errors import BadInputError

#: The settings a deployment may set, in the order the API lists them.
FIELDS = ("max_concurrent_runs", "run_tag_concurrency_limits", "schedule_catchup", "retention_days")


class DeploymentSettingsUpdate(BaseModel):
    """A change of a deployment's settings: each field given is set (None: back to the
    control plane's default); fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    max_concurrent_runs: int | None = Field(default=None, ge=0, le=100_000)
    run_tag_concurrency_limits: dict[str, int] | None = None
    schedule_catchup: Literal["latest", "all", "none"] | None = None
    retention_days: float | None = Field(default=None, gt=0, le=36_500)

    @field_validator("run_tag_concurrency_limits")
    @classmethod
    def _tag_limits(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        if value is None:
            return None
        for name, limit in value.items():
            key, _, _ = name.partition("=")
            if not key.strip():
                raise ValueError(f"tag limit {name!r}: name a tag key ('key' or 'key=value')")
            if limit < 1 or limit > 100_000:
                raise ValueError(f"tag limit {name!r}: {limit} is not between 1 and 100000")
        return value


@dataclass(frozen=True)
class DeploymentDefaults:
    """The control plane's defaults (its environment variables) of the settings above."""

    max_concurrent_runs: int = 0
    run_tag_concurrency_limits: Mapping[str, int] = field(default_factory=dict)
    schedule_catchup: str = "latest"
    retention_days: float | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> DeploymentDefaults:
        """The defaults of a :class:`~tether.controlplane.settings.ControlPlaneSettings`."""
        return cls(
            max_concurrent_runs=settings.max_concurrent_runs,
            run_tag_concurrency_limits=dict(settings.run_tag_concurrency_limits),
            schedule_catchup=settings.schedule_catchup,
            retention_days=settings.retention_days,
        )


@dataclass(frozen=True)
class EffectiveSettings:
    """The settings a deployment runs with, and which of them it set itself."""

    deployment_id: str
    max_concurrent_runs: int
    run_tag_concurrency_limits: Mapping[str, int]
    schedule_catchup: str
    retention_days: float | None
    #: The names (of :data:`FIELDS`) the deployment set; the others are the defaults.
    own: frozenset[str]

    @property
    def limits_runs(self) -> bool:
        """Whether a concurrency limit applies (its runs wait for the run coordinator)."""
        return self.max_concurrent_runs > 0 or bool(self.run_tag_concurrency_limits)


def resolve(
    deployment_id: str, row: DeploymentSettingsRow | None, defaults: DeploymentDefaults
) -> EffectiveSettings:
    """The settings of ``deployment_id``: its own where it set one, else the defaults."""
    values: dict[str, Any] = {}
    own = set()
    for name in FIELDS:
        value = getattr(row, name) if row is not None else None
        if value is None:
            values[name] = getattr(defaults, name)
        else:
            values[name] = value
            own.add(name)
    return EffectiveSettings(deployment_id=deployment_id, own=frozenset(own), **values)


async def own_settings(session: AsyncSession, deployment_id: str) -> DeploymentSettingsRow | None:
    """The settings row of ``deployment_id`` (None: it set nothing)."""
    return await session.get(DeploymentSettingsRow, deployment_id)


async def effective(
    session: AsyncSession, deployment_id: str, defaults: DeploymentDefaults
) -> EffectiveSettings:
    """The settings ``deployment_id`` runs with."""
    return resolve(deployment_id, await own_settings(session, deployment_id), defaults)


async def effective_many(
    session: AsyncSession, deployment_ids: Iterable[str], defaults: DeploymentDefaults
) -> dict[str, EffectiveSettings]:
    """The settings of several deployments, in one query."""
    ids = sorted(set(deployment_ids))
    if not ids:
        return {}
    stmt = select(DeploymentSettingsRow).where(DeploymentSettingsRow.deployment_id.in_(ids))
    rows = {row.deployment_id: row for row in (await session.execute(stmt)).scalars()}
    return {d: resolve(d, rows.get(d), defaults) for d in ids}


async def all_own_settings(session: AsyncSession) -> dict[str, DeploymentSettingsRow]:
    """Every deployment's settings row, by deployment id."""
    rows = (await session.execute(select(DeploymentSettingsRow))).scalars()
    return {row.deployment_id: row for row in rows}


async def sets_run_limits(session: AsyncSession, deployment_id: str) -> bool:
    """Whether ``deployment_id`` set a concurrency limit of its own (above 0, or any tag
    limit): then its runs wait for the run coordinator whatever the defaults say."""
    row = await own_settings(session, deployment_id)
    return row is not None and (
        bool(row.max_concurrent_runs) or bool(row.run_tag_concurrency_limits)
    )


async def holds_launches(session: AsyncSession, deployment_id: str, *, default: bool) -> bool:
    """Whether a new run of ``deployment_id`` waits QUEUED for the run coordinator.

    ``default`` is whether the control plane's own limits hold launches
    (``WorkQueue.hold_launches``). A deployment that set a limit is held too; one that
    turned the defaults' limits off is still held when they are on (the coordinator then
    finds no limit and dispatches it at once), which keeps this one cheap read.
    """
    return default or await sets_run_limits(session, deployment_id)


def parse_update(changes: Mapping[str, Any]) -> DeploymentSettingsUpdate:
    """Validate a change of settings (keys of :data:`FIELDS`).

    Raises:
        BadInputError: an unknown setting or a value out of range, each one named.
    """
    try:
        return DeploymentSettingsUpdate.model_validate(dict(changes))
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in err.errors()
        )
        raise BadInputError(f"invalid deployment settings: {problems}") from None


async def update_settings(
    session: AsyncSession,
    deployment_id: str,
    changes: Mapping[str, Any],
    *,
    now: float | None = None,
) -> DeploymentSettingsRow:
    """Set the settings named in ``changes`` (None: back to the default); the others stay.

    Raises:
        BadInputError: see :func:`parse_update`.
    """
    update = parse_update(changes)
    values = {name: getattr(update, name) for name in update.model_fields_set}
    now = time.time() if now is None else now
    stmt = upsert_insert(session, DeploymentSettingsRow).values(
        deployment_id=deployment_id, updated_at=now, **values
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["deployment_id"], set_={"updated_at": now, **values}
        )
    )
    row = await own_settings(session, deployment_id)
    assert row is not None
    await session.refresh(row)
    return row


async def copy_settings(
    session: AsyncSession, source_id: str, target_id: str, *, now: float | None = None
) -> None:
    """Give ``target_id`` the own settings of ``source_id`` (nothing if it set none)."""
    row = await own_settings(session, source_id)
    if row is None:
        return
    values = {name: getattr(row, name) for name in FIELDS}
    session.add(
        DeploymentSettingsRow(
            deployment_id=target_id, updated_at=time.time() if now is None else now, **values
        )
    )
    await session.flush()
