"""PostgreSQL LISTEN/NOTIFY, the statements: what :mod:`tether.controlplane.queue.worksignal`
sends to wake waiting claims on other replicas."""

from __future__ import annotations

import re

import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_CHANNEL = re.compile(r"^[a-z_][a-z0-9_]*$")


def _checked(channel: str) -> str:
    if not _CHANNEL.match(channel):
        raise ValueError(f"not a plain channel name: {channel!r}")
    return channel


async def notify(conn: AsyncConnection, channel: str, payload: str = "") -> None:
    """``NOTIFY channel, payload`` (through pg_notify: both bound parameters)."""
    await conn.execute(
        text("SELECT pg_notify(:channel, :payload)"),
        {"channel": _checked(channel), "payload": payload},
    )


async def listen(conn: psycopg.AsyncConnection[object], channel: str) -> None:
    """``LISTEN channel`` on a raw psycopg connection (LISTEN takes no parameters, so the
    name must be a plain identifier)."""
    await conn.execute(
        psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(_checked(channel)))
    )
