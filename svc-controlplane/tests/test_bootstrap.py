"""Startup: the dev agent token file and the workspace file."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from controlplane_testkit import Api
from sqlalchemy import select
from tether.controlplane.bootstrap import read_workspace
from tether.controlplane.core import open_control_plane
from tether.controlplane.db import Base
from tether.controlplane.errors import BootstrapError, WorkspaceFileError
from tether.controlplane.security import auth
from tether.controlplane.security.auth import hash_token
from tether.controlplane.settings import ControlPlaneSettings


def _db_bytes(db_file: Path) -> bytes:
    # The DB file and its WAL: recent writes may live only in the WAL.
    return b"".join(p.read_bytes() for p in db_file.parent.glob(db_file.name + "*"))


async def test_token_file_is_private_and_only_its_hash_is_stored(
    api: Api, settings: ControlPlaneSettings, backend: str
) -> None:
    assert settings.agent_token_file is not None
    mode = stat.S_IMODE(settings.agent_token_file.stat().st_mode)
    assert mode == 0o600
    async with api.cp.db.reading() as session:
        every_row = [
            row
            for table in Base.metadata.sorted_tables
            for row in (await session.execute(select(table))).all()
        ]
    assert hash_token(api.token) in repr(every_row)
    assert api.token not in repr(every_row)
    if backend == "sqlite":
        stored = _db_bytes(Path(api.cp.db.url.database or ""))
        assert hash_token(api.token).encode() in stored
        assert api.token.encode() not in stored


async def test_an_existing_token_file_is_registered(tmp_path: Path, database_url: str) -> None:
    token_file = tmp_path / "given.token"
    token_file.write_text("my-own-token\n")
    settings = ControlPlaneSettings(
        database_url=database_url, agent_token_file=token_file, migrate_on_start=True
    )
    from tether.controlplane.security import auth

    async with open_control_plane(settings) as cp:
        async with cp.db.reading() as session:
            principal = await auth.authenticate(
                session, "Bearer my-own-token", auth.Permission.AGENT
            )
        assert principal.deployment_id == "default"
    # Starting again with the same file is fine (the hash is already there).
    async with open_control_plane(settings):
        pass
    token_file.write_text("  \n")
    with pytest.raises(BootstrapError, match="is empty"):
        async with open_control_plane(settings):
            pass


async def test_the_dev_admin_token_file_is_minted_once_and_private(
    tmp_path: Path, database_url: str
) -> None:
    from tether.controlplane.security import auth

    token_file = tmp_path / "home" / "admin.token"
    settings = ControlPlaneSettings(
        database_url=database_url, admin_token_file=token_file, migrate_on_start=True
    )
    async with open_control_plane(settings) as cp:
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        async with cp.db.reading() as session:
            principal = await auth.authenticate(
                session, f"Bearer {token}", auth.Permission.MANAGE_TOKENS
            )
        assert (principal.role, principal.token_name) == (auth.Role.ADMIN, "dev-admin")
    # A restart keeps the same token (a browser signed in with it stays valid).
    async with open_control_plane(settings):
        assert token_file.read_text().strip() == token


def test_workspace_paths_resolve_against_the_file(tmp_path: Path) -> None:
    ws = tmp_path / "ws" / "workspace.toml"
    ws.parent.mkdir()
    ws.write_text(
        '[[locations]]\nname = "a"\npython_file = "defs.py"\nworking_directory = ".."\n'
        '[[locations]]\nname = "b"\nmodule = "m"\nworking_directory = "/abs"\n'
    )
    a, b = read_workspace(ws)
    assert a.python_file == str(tmp_path / "ws" / "defs.py")
    assert a.working_directory == str(tmp_path)
    assert b.working_directory == "/abs"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[[locations]]\nmodule = 'm'\n", "locations[0] is invalid"),
        ("[[locations]]\nname = 'a'\nbogus = 1\n", "locations[0] is invalid"),
        ("[[locations]]\nname = 'a'\n[[locations]]\nname = 'a'\n", "duplicate location names"),
        ("locations = 3\n", "must be an array"),
        ("not toml [", "cannot read workspace file"),
    ],
)
def test_bad_workspace_files_are_clear_errors(tmp_path: Path, text: str, problem: str) -> None:
    ws = tmp_path / "workspace.toml"
    ws.write_text(text)
    with pytest.raises(WorkspaceFileError, match=re.escape(problem)):
        read_workspace(ws)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask most shells have (022), under which files default to world-readable."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


async def test_the_sqlite_database_and_token_file_are_created_private(
    tmp_path: Path, usual_umask: None
) -> None:
    state = tmp_path / "state"
    settings = ControlPlaneSettings(
        database_url=f"sqlite+aiosqlite:///{state / 'cp.db'}",
        agent_token_file=tmp_path / "secrets" / "agent.token",
    )
    async with open_control_plane(settings) as cp:
        async with cp.db.transaction() as session:
            await auth.create_token(session, name="a write, for the WAL", role=auth.Role.ADMIN)
        # While the control plane runs, SQLite keeps its WAL and shared-memory files.
        files = {path.name: _mode(path) for path in state.iterdir()}
    # The work signing key sits beside a SQLite database by default, private too.
    assert files == {
        "cp.db": 0o600,
        "cp.db-wal": 0o600,
        "cp.db-shm": 0o600,
        "work-signing.key": 0o600,
    }
    assert _mode(state) == 0o700
    assert _mode(tmp_path / "secrets") == 0o700
    assert _mode(tmp_path / "secrets" / "agent.token") == 0o600


async def test_a_world_readable_database_and_token_file_are_tightened(
    tmp_path: Path, usual_umask: None, caplog: pytest.LogCaptureFixture
) -> None:
    # As a control plane before this change left them: 0644 files in a 0755 directory.
    db_file = tmp_path / "cp.db"
    sqlite3.connect(db_file).close()
    token_file = tmp_path / "agent.token"
    token_file.write_text("tether_an-old-token\n")
    assert _mode(db_file) == _mode(token_file) == 0o644
    os.chmod(tmp_path, 0o755)
    settings = ControlPlaneSettings(
        database_url=f"sqlite+aiosqlite:///{db_file}", agent_token_file=token_file
    )
    async with open_control_plane(settings) as cp:
        async with cp.db.reading() as session:
            await auth.authenticate(session, "Bearer tether_an-old-token", auth.Permission.AGENT)
        assert _mode(db_file.with_name("cp.db-wal")) == 0o600
    assert _mode(db_file) == _mode(token_file) == 0o600
    assert "was readable by others (mode 644); making it 600" in caplog.text
    # A directory that existed before is not the control plane's to change.
    assert _mode(tmp_path) == 0o755
