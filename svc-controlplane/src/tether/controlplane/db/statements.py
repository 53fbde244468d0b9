"""Portable ``INSERT ... ON CONFLICT`` for the dialects the control plane supports."""

from __future__ import annotations

from typing import Any

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
