"""The registry of code servers in a NATS KV bucket, read by a launcher after its restart.

One entry per (launcher deployment, location), written when a code server is started,
replaced (blue/green), adopted or stopped: its config and config hash, address, pid or
container id, the launcher instance that owns it, when it started, its state. A restarted
launcher of the same deployment reads its entries and adopts the code servers that still
run the recorded config instead of starting new ones (see
:meth:`tether.launcher.codeservers.CodeServerRegistry.restore`).

The launchers own the bucket (they are its only writers and readers) and create it when
missing, with the same configuration, like the run-claims bucket.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from typing import Literal

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue
from pydantic import BaseModel, Field, ValidationError
from tether.shared.nats.streams import bind_bucket, kv_keys
from tether.shared.nats.subjects import Bucket
from tether.shared.wire.locations import LocationConfig

log = logging.getLogger(__name__)

#: A code server that runs (or ran when its launcher last wrote the entry).
RUNNING = "RUNNING"
#: A code server its launcher stopped (removed location, shutdown).
STOPPED = "STOPPED"

_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")


class CodeServerRecord(BaseModel):
    """One registry entry: the code server of one location in one launcher deployment.

    Attributes:
        scope: the launcher deployment (see :func:`default_scope`).
        substrate: the substrate it runs on.
        location: the config it was started with, env values removed (``argv_location``:
            the form the code server got; it reports ``location_config_hash`` of it).
        config_hash: ``location_config_hash`` of the whole config, env values included
            (a restarted launcher tells a changed config by it).
        state: RUNNING or STOPPED.
        address: ``host:port`` of its gRPC server.
        pid: its process id (process substrate).
        pid_start: when that process started (clock ticks since boot), against pid reuse.
        server_id: the substrate's own id of it (docker: the container id).
        launcher: the launcher instance that started or adopted it (``<host>-<pid>``).
        launcher_pid: that launcher's pid.
        launcher_pid_start: when that launcher process started (clock ticks since boot).
        started_at: epoch seconds when the code server started.
        updated_at: epoch seconds of this write.
    """

    type: Literal["tether.v1.code_server_record"] = "tether.v1.code_server_record"
    scope: str
    substrate: str
    location: LocationConfig
    config_hash: str
    state: str = Field(description="RUNNING or STOPPED.")
    address: str | None = None
    pid: int | None = None
    pid_start: int | None = None
    server_id: str | None = None
    launcher: str
    launcher_pid: int | None = None
    launcher_pid_start: int | None = None
    started_at: float
    updated_at: float = Field(default_factory=time.time)


def default_scope(agent_id: str, substrate: str) -> str:
    """The registry scope of a launcher deployment when its settings name none.

    Process code servers are local processes, so the host is part of the scope; a
    container engine or cluster is shared by every replica of the deployment.
    """
    scope = f"{agent_id}-{substrate}"
    if substrate == "process":
        scope += f"-{socket.gethostname()}"
    return scope


def _key_token(value: str) -> str:
    # KV keys allow [-/_=.A-Za-z0-9]; "=" never appears in a safe token, so an encoded
    # value cannot collide with a plain one.
    if _SAFE_TOKEN.match(value):
        return value
    return "=" + value.encode().hex()


def record_key(scope: str, location_name: str) -> str:
    """The KV key of ``location_name``'s entry in ``scope``."""
    return f"{_key_token(scope)}.{_key_token(location_name)}"


class CodeServerRecords:
    """The ``CODE_SERVERS`` bucket.

    Args:
        kv: the bucket.
    """

    def __init__(self, kv: KeyValue, js: JetStreamContext) -> None:
        self._kv = kv
        self._js = js

    @classmethod
    async def open(cls, js: JetStreamContext, *, replicas: int | None = None) -> CodeServerRecords:
        """Bind the bucket, creating it when missing (every launcher may; same config), on
        ``replicas`` servers (see :func:`bind_bucket`)."""
        return cls(await registry_bucket(js, replicas=replicas), js)

    async def put(self, record: CodeServerRecord) -> None:
        """Write ``record`` under its (scope, location) key."""
        await self._kv.put(
            record_key(record.scope, record.location.name), record.model_dump_json().encode()
        )

    async def get(self, scope: str, location_name: str) -> CodeServerRecord | None:
        """The entry of ``location_name`` in ``scope``, if any (malformed: None, logged)."""
        try:
            entry = await self._kv.get(record_key(scope, location_name))
        except nats.js.errors.KeyNotFoundError:
            return None
        return _parse(entry.key, entry.value)

    async def list(self, scope: str) -> list[CodeServerRecord]:
        """Every entry of ``scope``; malformed entries are skipped with a log."""
        prefix = f"{_key_token(scope)}."
        # Filtered here: one entry per location and deployment is a small bucket.
        keys = [
            key
            for key in await kv_keys(self._js, str(Bucket.CODE_SERVERS))
            if key.startswith(prefix)
        ]
        found: list[CodeServerRecord] = []
        for key in keys:
            try:
                entry = await self._kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                continue
            record = _parse(key, entry.value)
            if record is not None and record.scope == scope:
                found.append(record)
        return found


def _parse(key: str, value: bytes | None) -> CodeServerRecord | None:
    if not value:
        return None
    try:
        return CodeServerRecord.model_validate_json(value)
    except ValidationError as err:
        log.warning("ignoring malformed code-server entry %s: %s", key, err)
        return None


async def registry_bucket(js: JetStreamContext, *, replicas: int | None = None) -> KeyValue:
    """Bind the code-server registry bucket, creating it when missing."""
    return await bind_bucket(
        js,
        KeyValueConfig(
            bucket=str(Bucket.CODE_SERVERS),
            description="(launcher deployment, location) -> its code server",
            history=1,
            storage=StorageType.FILE,
        ),
        replicas=replicas,
    )
