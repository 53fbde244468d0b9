"""NATS JWTs: nkeys, the operator/account/user claims and their encoding. Pure: no I/O,
the clock passed in.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import nkeys
from tether.shared.wire.errors import ContractError

JWT_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}


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
