"""Identity of a code location's configuration, shared by launchers and code servers."""

from __future__ import annotations

import hashlib

from tether.shared.messages import LocationConfig

__all__ = ["location_config_hash"]


def location_config_hash(location: LocationConfig) -> str:
    """A short digest of everything in ``location``'s config (a change means replace).

    A code server reports the hash of the config it was started with, so that a launcher
    adopting it after a restart can tell it still serves the recorded config.
    """
    return hashlib.sha256(location.model_dump_json().encode()).hexdigest()[:16]
