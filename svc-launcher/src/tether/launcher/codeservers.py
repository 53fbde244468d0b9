"""Keeping one code server per code location running: reconciled, recorded in KV, adopted.

Calls go through :class:`tether.launcher.codeserver_client.CodeServerClient`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import grpc
import nats.errors
from tether.launcher.codeserver_client import CodeServerClient
from tether.launcher.errors import LauncherError
from tether.launcher.process import process_start_ticks
from tether.launcher.registry import RUNNING, STOPPED, CodeServerRecord, CodeServerRecords
from tether.launcher.substrate import AdoptingSubstrate, CodeServerHandle, Substrate
from tether.launcher.tokens import CodeServerTokens
from tether.shared.grpc.auth import (
    CODESERVER_TLS_CERT_ENV,
    CODESERVER_TLS_KEY_ENV,
    CODESERVER_TOKEN_ENV,
)
from tether.shared.nats.status import instance_name
from tether.shared.wire.agent import CodeServerStatus
from tether.shared.wire.locations import LocationConfig, location_config_hash
from tether.shared.wire.process import argv_location

log = logging.getLogger(__name__)


class CodeServerRegistry:
    """Location name -> running code server, reconciled on each use, recorded in NATS KV.

    ``ensure`` starts the code server when missing, restarts it when its process died,
    and replaces it when the location's configuration changed. One lock per location
    keeps concurrent requests from starting two servers for the same location.

    Once :meth:`restore` bound the KV registry (:mod:`tether.launcher.registry`), every
    start, replacement and stop is written there, and code servers that a previous
    launcher of the same deployment left running are adopted (on substrates that
    support it) instead of started again. :meth:`keep_adopted` then renews their
    adoption so that they keep serving.

    Each code server gets its own caller token (see :mod:`tether.launcher.tokens`) in its
    environment, and every call presents it; with ``tls`` also its own certificate, which
    the client pins.

    Args:
        substrate: where code servers run.
        tokens: derives each code server's token; None: from a random secret (a
            restarted launcher then cannot call the code servers this one leaves).
        tls: serve and call code servers over TLS (container substrates: the calls
            cross a network).
        scope: this launcher deployment's scope in the KV registry.
        launcher_id: this launcher instance (``<host>-<pid>``).
        adopt_interval_s: seconds between adoption renewals (well below the orphan grace).
        call_deadline_s: deadline of the Adopt calls.
    """

    def __init__(
        self,
        substrate: Substrate[Any, Any],
        *,
        tokens: CodeServerTokens | None = None,
        tls: bool = False,
        scope: str = "",
        launcher_id: str = "",
        adopt_interval_s: float = 15.0,
        call_deadline_s: float = 5.0,
    ) -> None:
        self._substrate = substrate
        self._tokens = tokens or CodeServerTokens.ephemeral()
        self._tls = tls
        #: Location name -> hash of the full config its server runs. The registry and the
        #: server itself only know the config without env values (``argv_location``).
        self._hashes: dict[str, str] = {}
        self._clients: dict[str, CodeServerClient] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._errors: dict[str, str] = {}
        self._records: CodeServerRecords | None = None
        self._scope = scope
        self._launcher_id = launcher_id or instance_name()
        self._adopt_interval = adopt_interval_s
        self._call_deadline = call_deadline_s
        self._adopted: set[str] = set()

    @property
    def adopted(self) -> frozenset[str]:
        """Names of the locations whose code server this launcher adopted at start."""
        return frozenset(self._adopted)

    async def restore(self, records: CodeServerRecords) -> None:
        """Bind the KV registry and adopt the code servers it lists for this deployment.

        An entry is adopted when its process still runs, answers an Adopt call, and serves
        the recorded config; any other RUNNING entry is marked STOPPED (a code server left
        behind but not adoptable stops by itself at the end of its orphan grace). Entries
        whose config no longer matches the location's are replaced later, by
        :meth:`ensure`, like any config change.
        """
        self._records = records
        if not isinstance(self._substrate, AdoptingSubstrate):
            return  # e.g. docker: ensure() adopts containers by their labels
        for record in await records.list(self._scope):
            if record.state != RUNNING or record.substrate != self._substrate.name:
                continue
            if _other_live_launcher(record):
                log.warning(
                    "code server of %s belongs to launcher %s, which still runs: not adopting "
                    "it (give replicas on one host distinct registry scopes)",
                    record.location.name,
                    record.launcher,
                )
                continue
            client = await self._adopt(record)
            name = record.location.name
            if client is None:
                await self._write(record.model_copy(update={"state": STOPPED}))
                continue
            self._clients[name] = client
            self._adopted.add(name)
            self._hashes[name] = record.config_hash
            await self._write_running(client.handle)
            log.info(
                "adopted the code server of %s at %s (pid %s)",
                name,
                client.handle.address,
                client.handle.pid,
            )

    async def _adopt(self, record: CodeServerRecord) -> CodeServerClient | None:
        assert isinstance(self._substrate, AdoptingSubstrate)
        name = record.location.name
        handle = await self._substrate.adopt_code_server(record)
        if handle is None:
            log.info("code server of %s (pid %s) is gone; not adopting", name, record.pid)
            return None
        client = self._connect(handle, name, record.config_hash)
        try:
            reply = await client.adopt(self._launcher_id, self._call_deadline)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNAUTHENTICATED:
                # Started by a launcher with another code-server secret: it stops by itself
                # at the end of its orphan grace.
                log.warning(
                    "code server of %s refuses this launcher's token (another code-server "
                    "secret started it); not adopting",
                    name,
                )
            else:
                log.info("code server of %s does not answer (%s); not adopting", name, err.code())
            await client.close()
            return None
        expected = (record.pid, name, location_config_hash(record.location))
        if (reply.pid, reply.location_name, reply.config_hash) != expected:
            # Another process got the address (or the entry is stale): leave it alone.
            log.warning(
                "code server at %s is not the recorded one of %s (pid %d, hash %s); not adopting",
                handle.address,
                name,
                reply.pid,
                reply.config_hash,
            )
            await client.close()
            return None
        return client

    async def keep_adopted(self) -> None:
        """Renew the adoption of every code server until cancelled.

        Only substrates whose code servers have an orphan grace need it; for the others
        this returns at once. Renewing the servers this launcher started too costs one
        small call each and covers them in case this launcher dies (a server whose parent
        is alive ignores the lease anyway).
        """
        if not isinstance(self._substrate, AdoptingSubstrate):
            return
        while True:
            await asyncio.sleep(self._adopt_interval)
            for name, client in list(self._clients.items()):
                try:
                    await client.adopt(self._launcher_id, self._call_deadline)
                except Exception as err:  # noqa: BLE001 - must never end the launcher
                    # Handled where it matters: the next request finds it dead or
                    # unavailable and restarts it (or it was just replaced and closed).
                    log.debug("renewing the adoption of %s failed: %r", name, err)

    async def ensure(self, location: LocationConfig, *, restart: bool = False) -> CodeServerClient:
        """Return a client of a running code server for ``location``; with ``restart``, of
        a new one even if one with this config runs (blue/green, as for a changed config:
        the old one serves until the new one is ready, and stays if it fails to start).

        Raises:
            CodeServerStartError: the code server failed to start.
        """
        lock = self._locks.setdefault(location.name, asyncio.Lock())
        async with lock:
            current = self._clients.get(location.name)
            previous: CodeServerClient | None = None
            if current is not None and self._serves(current.handle, location):
                # An adopted server's handle knows the config without env values: from
                # now on it knows the whole config it was started with.
                current.handle.location = location
            if current is not None:
                if (
                    not restart
                    and current.handle.location == location
                    and self._substrate.code_server_alive(current.handle)
                ):
                    return current
                if restart and current.handle.location == location:
                    log.info("code server for %s: reload; starting a new one", location.name)
                    previous = current
                elif current.handle.location == location:
                    log.info("code server for %s died; replacing it", location.name)
                    await self._stop(location.name)
                else:
                    # Blue/green: the old server is stopped only once the new one is ready
                    # (and stays if the new config fails to start).
                    log.info("code server for %s: config changed; replacing it", location.name)
                    previous = current
            try:
                handle = await self._substrate.start_code_server(
                    location, self._code_server_env(location)
                )
            except LauncherError as err:
                self._errors[location.name] = str(err)
                raise
            self._errors.pop(location.name, None)
            self._hashes[location.name] = location_config_hash(location)
            client = self._connect(handle, location.name, self._hashes[location.name])
            self._clients[location.name] = client
            self._adopted.discard(location.name)
            if previous is not None:
                await previous.close()
                await self._substrate.stop_code_server(previous.handle)
            # After the old one stopped: the entry names the new server from now on.
            await self._write_running(handle)
            return client

    def _code_server_env(self, location: LocationConfig) -> dict[str, str]:
        """What the code server of ``location`` gets in its environment: its credentials."""
        env = {CODESERVER_TOKEN_ENV: self._tokens.for_location(location)}
        if self._tls:
            tls = self._tokens.tls_for_location(location)
            env[CODESERVER_TLS_CERT_ENV] = tls.cert_pem.decode()
            env[CODESERVER_TLS_KEY_ENV] = tls.key_pem.decode()
        return env

    def _connect(self, handle: CodeServerHandle, name: str, config_hash: str) -> CodeServerClient:
        """A client of the server of location ``name`` started with the config of
        ``config_hash`` (whole config, env values included: the token derives from it)."""
        cert = self._tokens.tls_for_config(name, config_hash).cert_pem if self._tls else None
        return CodeServerClient.connect(handle, self._tokens.for_config(name, config_hash), cert)

    async def invalidate(self, location_name: str) -> None:
        """Stop and forget ``location_name``'s code server (it stopped answering)."""
        lock = self._locks.setdefault(location_name, asyncio.Lock())
        async with lock:
            await self._stop(location_name)

    async def remove(self, location_name: str) -> bool:
        """Stop ``location_name``'s code server for good (the location was removed).

        Returns:
            Whether this registry was running one.
        """
        lock = self._locks.setdefault(location_name, asyncio.Lock())
        async with lock:
            running = location_name in self._clients
            await self._stop(location_name)
            self._errors.pop(location_name, None)
        return running

    async def stop_all(self) -> None:
        """Stop every code server this registry started."""
        await asyncio.gather(*(self.invalidate(name) for name in list(self._clients)))

    async def detach_all(self) -> None:
        """Close every channel and forget the code servers, leaving them running."""
        for name in list(self._clients):
            lock = self._locks.setdefault(name, asyncio.Lock())
            async with lock:
                client = self._clients.pop(name, None)
                if client is not None:
                    await client.close()

    def statuses(self) -> list[CodeServerStatus]:
        """What a heartbeat reports of each code server."""
        out = [
            CodeServerStatus(
                location_name=name,
                state="RUNNING" if self._substrate.code_server_alive(c.handle) else "FAILED",
                address=c.handle.address,
                pid=c.handle.pid,
            )
            for name, c in self._clients.items()
        ]
        out += [
            CodeServerStatus(location_name=name, state="FAILED", error=error)
            for name, error in self._errors.items()
            if name not in self._clients
        ]
        return out

    async def _stop(self, location_name: str) -> None:
        client = self._clients.pop(location_name, None)
        self._adopted.discard(location_name)
        if client is None:
            return
        await client.close()
        await self._substrate.stop_code_server(client.handle)
        await self._write(self._record(client.handle, STOPPED))

    def _serves(self, handle: CodeServerHandle, location: LocationConfig) -> bool:
        """Whether the server of ``handle`` was started with exactly ``location``."""
        if handle.location == location:
            return True
        return handle.location == argv_location(location) and self._hashes.get(
            location.name
        ) == location_config_hash(location)

    def _record(self, handle: CodeServerHandle, state: str) -> CodeServerRecord:
        me = os.getpid()
        name = handle.location.name
        return CodeServerRecord(
            scope=self._scope,
            substrate=self._substrate.name,
            # No env values in KV: the config as the code server's argv has it, and the
            # hash of the whole config (to tell a changed config after a restart).
            location=argv_location(handle.location),
            config_hash=self._hashes.get(name) or location_config_hash(handle.location),
            state=state,
            address=handle.address,
            pid=handle.pid,
            pid_start=handle.pid_start,
            server_id=handle.server_id,
            launcher=self._launcher_id,
            launcher_pid=me,
            launcher_pid_start=process_start_ticks(me),
            started_at=handle.started_at,
        )

    async def _write_running(self, handle: CodeServerHandle) -> None:
        await self._write(self._record(handle, RUNNING))

    async def _write(self, record: CodeServerRecord) -> None:
        if self._records is None:
            return
        try:
            async with asyncio.timeout(self._call_deadline):
                await self._records.put(record)
        except (nats.errors.Error, OSError, TimeoutError) as err:
            # The code server runs either way; a missing entry only costs a fresh start
            # after a restart of this launcher.
            log.warning("could not record the code server of %s: %r", record.location.name, err)


def _other_live_launcher(record: CodeServerRecord) -> bool:
    """Whether the launcher that wrote ``record`` is another process still running here."""
    pid = record.launcher_pid
    if pid is None or pid == os.getpid():
        return False
    start = process_start_ticks(pid)
    return start is not None and start == record.launcher_pid_start
