"""Per-run NATS credentials: the launcher mints each run worker its own short-lived user.

The user may publish only its run's events and logs (``tether.shared.nats.perms.run_worker``),
so user code holding it can neither forge work nor read the agent's KV nor touch another
run. The credentials travel in the worker's environment (never argv).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tether.launcher.errors import LauncherError
from tether.launcher.settings import LauncherSettings
from tether.shared.nats import auth as natsauth
from tether.shared.nats import claims as natsclaims
from tether.shared.nats import perms as natsperms
from tether.shared.wire.errors import ContractError


class RunCredentialsError(LauncherError):
    """The launcher's NATS auth settings are inconsistent or unreadable."""


class RunCredentials:
    """Mints the environment entry that gives one run worker its NATS user.

    Args:
        minter: signs with the account's signing key; None: NATS without auth (run
            workers connect without credentials, as the launcher does).
        ttl_s: lifetime of each run's credentials.
    """

    def __init__(self, minter: natsauth.UserMinter | None, ttl_s: float) -> None:
        self._minter = minter
        self._ttl_s = ttl_s

    @classmethod
    def from_settings(cls, settings: LauncherSettings) -> RunCredentials:
        """From the launcher's settings: the signing key file, and the account read from
        the launcher's own credentials (its user belongs to the account it mints for).

        Raises:
            RunCredentialsError: only one of the two is set, or either is unreadable.
        """
        creds = settings.nats_user
        key_file, key_text = (
            settings.nats_account_signing_key_file,
            settings.nats_account_signing_key,
        )
        has_key = key_file is not None or key_text is not None
        if creds is None and not has_key:
            return cls(None, settings.run_credentials_ttl_s)
        if creds is None or not has_key:
            raise RunCredentialsError(
                "NATS auth needs both TETHER_NATS_CREDENTIALS (the launcher's user) and "
                "TETHER_LAUNCHER_NATS_ACCOUNT_SIGNING_KEY_FILE (to mint run workers' users)"
            )
        try:
            creds_text = creds.read_text() if isinstance(creds, Path) else creds
            account = natsauth.account_of(creds_text)
            seed = key_file.read_text() if key_file is not None else key_text.get_secret_value()  # type: ignore[union-attr]
            signing_key = natsclaims.key_from_seed(seed)
        except (OSError, ContractError, KeyError) as err:
            raise RunCredentialsError(f"cannot read the launcher's NATS auth files: {err}") from err
        return cls(natsauth.UserMinter(signing_key, account), settings.run_credentials_ttl_s)

    def env_for(self, run_id: str) -> Mapping[str, str]:
        """The environment entries of ``run_id``'s worker ({} without auth).

        Ed25519 signing costs tens of microseconds: minting inline in the launch path
        costs nothing measurable next to a fork.
        """
        if self._minter is None:
            return {}
        creds = natsperms.mint_run_worker(self._minter, run_id, ttl_s=self._ttl_s)
        return {natsauth.RUN_WORKER_CREDENTIALS_ENV: creds}
