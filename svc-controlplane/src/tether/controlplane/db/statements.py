"""Portable ``INSERT ... ON CONFLICT`` for the dialects the control plane supports, and the
row count of an ``UPDATE``."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, Result
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def upsert_insert(session: AsyncSession, table: Any) -> Any:
    """Return an ``insert(table)`` that supports ``on_conflict_do_nothing/_do_update``.

    SQLite and PostgreSQL both speak ``ON CONFLICT`` with the same SQLAlchemy API; which
    construct to use depends on the dialect the session is bound to.

    Raises:
        NotImplementedError: for any other database.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        return sqlite.insert(table)
    if dialect == "postgresql":
        return postgresql.insert(table)
    raise NotImplementedError(f"the control plane does not support {dialect!r} databases")


def rowcount(result: Result[Any]) -> int:
    """How many rows the ``UPDATE`` (or ``DELETE``) that gave ``result`` matched.

    ``AsyncSession.execute`` types every result as a ``Result``; a DML statement's is a
    ``CursorResult``, the kind that has ``rowcount``.
    """
    return cast("CursorResult[Any]", result).rowcount
