"""NATS decentralized JWT authentication: operator, accounts and users as nkeys and JWTs.

The agent's NATS server runs in operator mode: it trusts one operator key; the operator
signs the agent's account (where JetStream and every Tether subject live) and a system
account; the account (or its separate *signing key*, which the launcher holds to mint
per-run users) signs user JWTs carrying publish/subscribe allow lists and an expiry. A
client proves it holds the user's seed by signing the server's nonce. Nothing connects
without a user JWT the server can trace back to the operator.

The keys and the claims are :mod:`tether.shared.nats.claims` (pure); here
:class:`AgentAuth` creates and persists the keys, :class:`UserMinter` issues ``.creds``,
and :func:`server_config` renders the nats-server configuration (``resolver: MEMORY``
with the account JWTs preloaded).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nkeys
from nats.aio.client import RawCredentials
from tether.shared.nats import subjects
from tether.shared.nats.claims import (
    KeyKind,
    Permissions,
    SigningScope,
    account_claims,
    create_key,
    decode_jwt,
    encode_jwt,
    key_from_seed,
    operator_claims,
    public_key,
    scoped_signing_key,
    seed_text,
    user_claims,
)
from tether.shared.wire.errors import ContractError

#: Where a run worker finds its run's NATS credentials (``.creds`` text) in its environment:
#: the launcher sets it per run (never in argv); the worker's settings read it
#: (``RunWorkerSettings.nats_credentials``).
RUN_WORKER_CREDENTIALS_ENV = "TETHER_RUN_WORKER_NATS_CREDENTIALS"


def creds_text(user_jwt: str, user_seed: str) -> str:
    """A ``.creds`` file's text (the format ``nsc`` writes and NATS clients read)."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user_seed}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


def creds_jwt(text: str) -> str:
    """The user JWT inside ``.creds`` text.

    Raises:
        ContractError: no JWT block in ``text``.
    """
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if "BEGIN NATS USER JWT" in line:
            return lines[i + 1].strip()
    raise ContractError("not NATS credentials: no user JWT block")


def inbox_prefix_of(creds: str) -> str | None:
    """The inbox prefix of the user of ``.creds`` text: ``_INBOX.<its name>``, the only
    inbox a Tether user may subscribe to (None: a name that is no subject token, e.g. a
    user made by other tools; nats-py's default inbox then).

    Read from the JWT rather than from a setting that could disagree with it; the name,
    not the JWT's allow lists, since a scoped signing key's users carry none.
    """
    name = decode_jwt(creds_jwt(creds)).get("name", "")
    try:
        return subjects.inbox(name)
    except ContractError:
        return None


def account_of(creds: str) -> str:
    """The account (public key) of the user of ``.creds`` text."""
    claims = decode_jwt(creds_jwt(creds))
    account: str = claims.get("nats", {}).get("issuer_account") or claims["iss"]
    return account


def file_credentials(path: Path) -> RawCredentials:
    """nats-py credentials from a ``.creds`` file, read once (raw text, not a path, so a
    rotated file is picked up at the next start rather than half-way through a reconnect)."""
    return RawCredentials(path.read_text())


class UserMinter:
    """Issues user credentials of one account with a key allowed to sign for it.

    Args:
        signing_key: the account's signing key (or the account key itself).
        account: the account's public key.
    """

    def __init__(self, signing_key: nkeys.KeyPair, account: str) -> None:
        self._signer = signing_key
        self._account = account

    @property
    def account(self) -> str:
        """The account the minted users belong to."""
        return self._account

    def mint(
        self,
        name: str,
        permissions: Permissions | None,
        *,
        ttl_s: float | None,
        now: float | None = None,
        tags: Sequence[str] = (),
    ) -> str:
        """``.creds`` text of a new user (a fresh key) with ``permissions``.

        Args:
            name: the user's name (a subject token: its inbox is ``_INBOX.<name>``).
            permissions: its allow lists; None when the signing key is scoped (the
                server applies the scope's).
            ttl_s: seconds until the JWT expires; None: never.
            now: issue time (default: the clock).
            tags: ``name:value`` tags of the user (a scope's template reads them).
        """
        issued = int(time.time() if now is None else now)
        user = create_key(KeyKind.USER)
        signed_by_account = public_key(self._signer) == self._account
        claims = user_claims(
            user=public_key(user),
            name=name,
            permissions=permissions,
            now=issued,
            expires_at=None if ttl_s is None else issued + max(1, int(ttl_s)),
            issuer_account=None if signed_by_account else self._account,
            tags=tags,
        )
        return creds_text(encode_jwt(claims, self._signer), seed_text(user))


def server_config(*, operator_jwt: str, system_account: str, accounts: Mapping[str, str]) -> str:
    """The auth part of a nats-server configuration (listen address, JetStream and its
    store directory come from the command line).

    Args:
        operator_jwt: the trusted operator's JWT.
        system_account: public key of the system account.
        accounts: account public key -> account JWT, preloaded into the memory resolver.
    """
    preload = "\n".join(f"  {key}: {json.dumps(jwt)}" for key, jwt in accounts.items())
    return (
        "# Written by Tether: operator-mode JWT auth (see tether.shared.nats.auth).\n"
        f"operator: {json.dumps(operator_jwt)}\n"
        f"system_account: {system_account}\n"
        "resolver: MEMORY\n"
        f"resolver_preload: {{\n{preload}\n}}\n"
    )


#: Files of an :class:`AgentAuth` directory.
OPERATOR_SEED = "operator.nk"
ACCOUNT_SEED = "account.nk"
SIGNING_SEED = "account-signing.nk"
SYSTEM_SEED = "system.nk"
SERVER_CONFIG = "nats-server.conf"


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600 from creation on; a
    directory created for it is 0700)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # An existing file keeps its old mode through O_CREAT: tighten it before writing.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


@dataclass
class AgentAuth:
    """The keys of one agent's NATS: operator, the agent account (with a separate signing
    key for minted users) and the system account.

    Attributes:
        operator: the operator key (signs accounts; only needed to re-sign them).
        account: the agent account's own key (signs the services' users).
        signing_key: the account's signing key (the launcher's, for per-run users).
        system: the system account's key.
    """

    operator: nkeys.KeyPair
    account: nkeys.KeyPair
    signing_key: nkeys.KeyPair
    system: nkeys.KeyPair
    #: What users of the signing key get (tether.shared.nats.perms.run_worker_scope());
    #: None: an unscoped signing key (its users carry their own permissions).
    signing_scope: SigningScope | None = None

    @classmethod
    def create(cls) -> AgentAuth:
        """New random keys."""
        return cls(
            operator=create_key(KeyKind.OPERATOR),
            account=create_key(KeyKind.ACCOUNT),
            signing_key=create_key(KeyKind.ACCOUNT),
            system=create_key(KeyKind.ACCOUNT),
        )

    @property
    def account_id(self) -> str:
        """The agent account's public key."""
        return public_key(self.account)

    def minter(self, *, with_signing_key: bool = True) -> UserMinter:
        """A minter of the agent account's users (by its signing key, or its own key)."""
        return UserMinter(self.signing_key if with_signing_key else self.account, self.account_id)

    def server_config(self, now: float | None = None) -> str:
        """The nats-server configuration that trusts these keys."""
        issued = int(time.time() if now is None else now)
        system_id = public_key(self.system)
        operator_jwt = encode_jwt(
            operator_claims(
                operator=public_key(self.operator),
                name="tether",
                system_account=system_id,
                now=issued,
            ),
            self.operator,
        )
        agent = account_claims(
            account=self.account_id,
            name="tether-agent",
            signing_keys=[
                public_key(self.signing_key)
                if self.signing_scope is None
                else scoped_signing_key(public_key(self.signing_key), self.signing_scope)
            ],
            jetstream=True,
            now=issued,
        )
        system = account_claims(account=system_id, name="SYS", jetstream=False, now=issued)
        return server_config(
            operator_jwt=operator_jwt,
            system_account=system_id,
            accounts={
                self.account_id: encode_jwt(agent, self.operator),
                system_id: encode_jwt(system, self.operator),
            },
        )

    def save(self, directory: Path) -> None:
        """Write the seeds and the server config into ``directory`` (0700, files 0600)."""
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        for name, key in (
            (OPERATOR_SEED, self.operator),
            (ACCOUNT_SEED, self.account),
            (SIGNING_SEED, self.signing_key),
            (SYSTEM_SEED, self.system),
        ):
            write_secret(directory / name, seed_text(key) + "\n")
        write_secret(directory / SERVER_CONFIG, self.server_config())

    @classmethod
    def load(cls, directory: Path) -> AgentAuth:
        """The keys :meth:`save` wrote.

        Raises:
            ContractError: a seed file is missing or not a seed.
        """

        def read(name: str) -> nkeys.KeyPair:
            path = directory / name
            try:
                return key_from_seed(path.read_text())
            except FileNotFoundError:
                raise ContractError(f"NATS auth: missing {path}") from None

        return cls(
            operator=read(OPERATOR_SEED),
            account=read(ACCOUNT_SEED),
            signing_key=read(SIGNING_SEED),
            system=read(SYSTEM_SEED),
        )

    @classmethod
    def load_or_create(cls, directory: Path) -> AgentAuth:
        """Load the keys in ``directory``, creating them on first use (not yet saved)."""
        if (directory / ACCOUNT_SEED).exists():
            return cls.load(directory)
        return cls.create()
