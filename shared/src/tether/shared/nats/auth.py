"""NATS decentralized JWT authentication: operator, accounts and users as nkeys and JWTs.

The agent's NATS server runs in operator mode: it trusts one operator key; the operator
signs the agent's account (where JetStream and every Tether subject live) and a system
account; the account (or its separate *signing key*, which the launcher holds to mint
per-run users) signs user JWTs carrying publish/subscribe allow lists and an expiry. A
client proves it holds the user's seed by signing the server's nonce. Nothing connects
without a user JWT the server can trace back to the operator.

The claim builders and :func:`encode_jwt` are pure (no I/O, the clock passed in);
:class:`AgentAuth` creates and persists the keys, and :func:`server_config` renders the
nats-server configuration (``resolver: MEMORY`` with the account JWTs preloaded).

Claims follow the NATS JWT v2 schema (github.com/nats-io/jwt): header
``{"typ":"JWT","alg":"ed25519-nkey"}``, ``jti`` the unpadded base32 SHA-512/256 of the
claims, base64url segments without padding, the signature an Ed25519 one by the issuer.
The PyPI ``nats-jwt`` package calls itself untested and unofficial, so the few fields
Tether needs are encoded here on top of the official ``nkeys`` package.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import nkeys
from nats.aio.client import RawCredentials
from tether.shared.nats import subjects
from tether.shared.wire.errors import ContractError

JWT_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}

#: Where a run worker finds its run's NATS credentials (``.creds`` text) in its environment:
#: the launcher sets it per run (never in argv); the worker's settings read it
#: (``RunWorkerSettings.nats_credentials``).
RUN_WORKER_CREDENTIALS_ENV = "TETHER_RUN_WORKER_NATS_CREDENTIALS"

#: Unlimited, in the JWT's limit fields.
NO_LIMIT = -1


class KeyKind(Enum):
    """The role of an nkey, which its prefix (and first letter) encodes."""

    OPERATOR = nkeys.PREFIX_BYTE_OPERATOR
    ACCOUNT = nkeys.PREFIX_BYTE_ACCOUNT
    USER = nkeys.PREFIX_BYTE_USER


def create_key(kind: KeyKind) -> nkeys.KeyPair:
    """A new random nkey pair of ``kind`` (its seed starts with ``SO``, ``SA`` or ``SU``)."""
    return nkeys.from_seed(bytearray(nkeys.encode_seed(os.urandom(32), kind.value)))


def key_from_seed(seed: str | bytes) -> nkeys.KeyPair:
    """The key pair of an nkey seed.

    Raises:
        ContractError: ``seed`` is not a valid nkey seed.
    """
    raw = seed.strip().encode() if isinstance(seed, str) else seed.strip()
    try:
        return nkeys.from_seed(bytearray(raw))
    except (nkeys.NkeysError, ValueError, TypeError) as err:
        raise ContractError(f"not a valid nkey seed: {err!r}") from None


def public_key(key: nkeys.KeyPair) -> str:
    """The public key (``O...``, ``A...``, ``U...``) of ``key`` as text."""
    public: bytes = key.public_key
    return public.decode()


def seed_text(key: nkeys.KeyPair) -> str:
    """The seed of ``key`` as text (the secret)."""
    return bytes(key.seed).decode()


@dataclass(frozen=True)
class Permissions:
    """What one NATS user may publish and subscribe to (allow lists; all else is denied).

    Attributes:
        publish: subjects (wildcards allowed) the user may publish to.
        subscribe: subjects the user may subscribe to; must include its inbox.
        inbox_prefix: the user's private inbox prefix (nats-py ``inbox_prefix=``), so
            replies (PubAcks, API answers, fetched messages) reach only this user.
    """

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    inbox_prefix: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def encode_jwt(claims: Mapping[str, Any], signer: nkeys.KeyPair) -> str:
    """Sign ``claims`` (``iss`` set to the signer's public key, ``jti`` computed) as a JWT.

    ``jti`` is the unpadded base32 SHA-512/256 of the claims without it, as the Go
    library computes it, so each distinct set of claims has its own id.
    """
    body = {**claims, "iss": public_key(signer), "jti": ""}
    body["jti"] = (
        base64.b32encode(hashlib.new("sha512_256", _json(body)).digest()).rstrip(b"=").decode()
    )
    signing_input = f"{_b64(_json(JWT_HEADER))}.{_b64(_json(body))}"
    return f"{signing_input}.{_b64(signer.sign(signing_input.encode()))}"


def decode_jwt(token: str) -> dict[str, Any]:
    """The claims of a NATS JWT, unverified (the server verifies signatures and expiry).

    Raises:
        ContractError: ``token`` is not a JWT with a JSON claims segment.
    """
    try:
        _, payload, _ = token.strip().split(".")
        claims = json.loads(_unb64(payload))
    except (ValueError, TypeError) as err:
        raise ContractError(f"not a NATS JWT: {err}") from None
    if not isinstance(claims, dict):
        raise ContractError("not a NATS JWT: claims are not an object")
    return claims


def operator_claims(*, operator: str, name: str, system_account: str, now: int) -> dict[str, Any]:
    """Claims of a self-signed operator JWT naming the system account."""
    return {
        "sub": operator,
        "name": name,
        "iat": now,
        "nats": {"type": "operator", "version": 2, "system_account": system_account},
    }


def account_claims(
    *,
    account: str,
    name: str,
    signing_keys: Sequence[str | Mapping[str, Any]] = (),
    jetstream: bool,
    now: int,
) -> dict[str, Any]:
    """Claims of an account JWT (signed by the operator).

    Args:
        account: the account's public key.
        name: its name.
        signing_keys: keys that may sign users of the account besides its own: public
            keys, or scoped keys (:func:`scoped_signing_key`).
        jetstream: enable JetStream (unlimited storage; the streams' own limits apply).
        now: issue time, unix seconds.
    """
    limits: dict[str, Any] = {
        "subs": NO_LIMIT,
        "data": NO_LIMIT,
        "payload": NO_LIMIT,
        "imports": NO_LIMIT,
        "exports": NO_LIMIT,
        "wildcards": True,
        "conn": NO_LIMIT,
        "leaf": NO_LIMIT,
    }
    if jetstream:
        limits |= {
            "mem_storage": NO_LIMIT,
            "disk_storage": NO_LIMIT,
            "streams": NO_LIMIT,
            "consumer": NO_LIMIT,
        }
    nats: dict[str, Any] = {"type": "account", "version": 2, "limits": limits}
    if signing_keys:
        nats["signing_keys"] = list(signing_keys)
    return {"sub": account, "name": name, "iat": now, "nats": nats}


@dataclass(frozen=True)
class SigningScope:
    """What every user signed by a scoped signing key gets, whatever its JWT says.

    Attributes:
        role: the scope's name.
        permissions: the template: may use ``{{name()}}`` (the user's name) and
            ``{{tag(<t>)}}`` (the value of the user's tag ``<t>:<value>``).
    """

    role: str
    permissions: Permissions


def scoped_signing_key(key: str, scope: SigningScope) -> dict[str, Any]:
    """The account-JWT entry making ``key`` a signing key limited to ``scope``: the server
    gives its users the scope's permissions and refuses users that carry their own, so
    the holder of the key (the launcher) can mint nothing broader."""
    return {
        "kind": "user_scope",
        "key": key,
        "role": scope.role,
        "template": {
            "pub": {"allow": list(scope.permissions.publish)},
            "sub": {"allow": list(scope.permissions.subscribe)},
            "subs": NO_LIMIT,
            "data": NO_LIMIT,
            "payload": NO_LIMIT,
        },
    }


def user_claims(
    *,
    user: str,
    name: str,
    permissions: Permissions | None,
    now: int,
    expires_at: int | None,
    issuer_account: str | None = None,
    tags: Sequence[str] = (),
) -> dict[str, Any]:
    """Claims of a user JWT.

    Args:
        user: the user's public key.
        name: its name (also the last token of its inbox prefix).
        permissions: its publish/subscribe allow lists; None for a user of a scoped
            signing key (the scope's apply).
        now: issue time, unix seconds.
        expires_at: unix seconds after which the server refuses (and disconnects) the
            user; None: no expiry.
        issuer_account: the account's public key when a signing key (not the account's
            own key) signs the JWT.
        tags: ``name:value`` tags (a scope's template reads them).
    """
    nats: dict[str, Any] = {"type": "user", "version": 2}
    if permissions is not None:
        nats |= {
            "pub": {"allow": list(permissions.publish)},
            "sub": {"allow": list(permissions.subscribe)},
            "subs": NO_LIMIT,
            "data": NO_LIMIT,
            "payload": NO_LIMIT,
        }
    if tags:
        nats["tags"] = list(tags)
    if issuer_account is not None:
        nats["issuer_account"] = issuer_account
    claims: dict[str, Any] = {"sub": user, "name": name, "iat": now, "nats": nats}
    if expires_at is not None:
        claims["exp"] = expires_at
    return claims


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
