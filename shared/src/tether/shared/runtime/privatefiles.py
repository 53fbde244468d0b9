"""Files only their owner may read: keys, secrets and tokens the services create or keep.

Two things every such file needs, done once here:

- :func:`create_exclusively` writes a new file atomically and never overwrites one: the
  data goes to a private (0600) temporary file that is then hard-linked into place, so
  replicas creating the same file at once on a shared volume all end up reading the one
  that won, and nobody ever reads a half-written file.
- :func:`tighten` makes an existing file that others may read 0600-like again (its owner's
  bits kept), with a warning, since whoever reads it can act with what it holds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["create_exclusively", "tighten"]


def create_exclusively(path: Path, data: bytes, *, dir_mode: int = 0o777) -> bool:
    """Write ``data`` to a new file ``path`` (mode 0600) unless ``path`` exists.

    Args:
        path: the file.
        data: its content.
        dir_mode: mode of the parent directories created on the way (the umask applies).

    Returns:
        Whether this call created it (False: it existed, or another process won the race).

    Raises:
        OSError: it could not be written.
    """
    path.parent.mkdir(mode=dir_mode, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
    # O_EXCL + 0600 from the start: the content is never readable by others, even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        # link() fails if the name exists: of two processes creating it at once, one wins.
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return True


def tighten(path: Path, what: str) -> None:
    """Take group and others' access away from ``path`` if they have any, with a warning
    naming it as ``what``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        OSError: its mode cannot be changed (another user's file).
    """
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning(
            "%s %s was readable by others (mode %o); making it %o", what, path, mode, mode & 0o700
        )
        os.chmod(path, mode & 0o700)
