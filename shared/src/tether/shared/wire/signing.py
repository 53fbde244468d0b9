"""Signed work items: the control plane signs each item it hands out, agents verify it.

Pure (no I/O): the control plane keeps its private key in a file of its own
(``tether.controlplane.security.workkeys``), agent services pin the public keys in their settings
(``AgentSettings.work_public_keys``), and the replay check that needs NATS lives in
:mod:`tether.shared.nats.workgate`.

The signature is Ed25519 over :func:`signing_input`: a domain tag, then the canonical JSON
(sorted keys, no spaces, ASCII only) of the item's deployment, id, kind, location config,
payload, created_at, expires_at and attempt. Only the ``traceparent`` (tracing, no effect)
and the signature itself are outside it. Keys travel as text: the 32 raw bytes of the
public key in unpadded base64url behind ``ed25519:``.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from tether.shared.wire.errors import ContractError, TetherError
from tether.shared.wire.work import WorkItem

__all__ = [
    "KEY_PREFIX",
    "MAX_LIFETIME_S",
    "SIGNED_FIELDS",
    "WorkKeyError",
    "WorkRefusedError",
    "WorkSigner",
    "WorkVerifier",
    "parse_public_key",
    "public_key_text",
    "signing_input",
]

#: What a work key's text starts with (the algorithm), so a key of another kind is refused.
KEY_PREFIX = "ed25519:"

#: Longest lifetime of a signed item an agent accepts (``expires_at`` at most this far
#: ahead). The replay records of :mod:`tether.shared.nats.workgate` outlive it.
MAX_LIFETIME_S = 24 * 3600.0

#: Slack for clocks of control plane and agent that disagree, on the lifetime check only.
_CLOCK_SLACK_S = 300.0

#: The fields the signature covers, in the order the docs list them.
SIGNED_FIELDS = (
    "deployment",
    "id",
    "kind",
    "location",
    "payload",
    "created_at",
    "expires_at",
    "attempt",
)

_DOMAIN = b"tether.v1.work_item.signature\n"


class WorkKeyError(TetherError, ValueError):
    """A work signing or verifying key that cannot be used (malformed, missing, wrong kind)."""


class WorkRefusedError(ContractError):
    """A work item no agent service may act on: forged, altered, expired, another
    deployment's, or replayed. ``reason`` is the one-line why (the dead letter's reason).

    Attributes:
        reason: why the item was refused.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    # Strict: a character outside the base64url alphabet is an error, not skipped.
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def signing_input(item: WorkItem) -> bytes:
    """The bytes the signature of ``item`` is made over (see the module docs).

    Raises:
        WorkRefusedError: the item holds a value JSON cannot carry (NaN, infinity).
    """
    fields = item.model_dump(mode="json", include=set(SIGNED_FIELDS))
    try:
        text = json.dumps(
            fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        )
    except ValueError as err:
        raise WorkRefusedError(f"work item {item.id} cannot be signed: {err}") from err
    return _DOMAIN + text.encode("ascii")


def public_key_text(key: Ed25519PublicKey) -> str:
    """``key`` as the text agents pin (``ed25519:<base64url of the 32 raw bytes>``)."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + _b64(raw)


def parse_public_key(text: str) -> Ed25519PublicKey:
    """The public key written as ``text`` (see :func:`public_key_text`).

    Raises:
        WorkKeyError: ``text`` is not such a key.
    """
    text = text.strip()
    if not text.startswith(KEY_PREFIX):
        raise WorkKeyError(f"a work public key starts with {KEY_PREFIX!r}; got {text[:20]!r}")
    try:
        raw = _unb64(text[len(KEY_PREFIX) :])
    except (binascii.Error, ValueError) as err:
        raise WorkKeyError(f"work public key {text!r} is not base64url: {err}") from err
    if len(raw) != 32:
        raise WorkKeyError(f"work public key {text!r} holds {len(raw)} bytes, not 32")
    return Ed25519PublicKey.from_public_bytes(raw)


class WorkSigner:
    """Signs work items with the control plane's Ed25519 private key.

    Args:
        key: the private key.
    """

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_key = public_key_text(key.public_key())
        """The public key agents pin, as text."""

    @classmethod
    def generate(cls) -> WorkSigner:
        """A signer with a fresh random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: bytes) -> WorkSigner:
        """The signer of a PKCS#8 PEM private key (as :meth:`to_pem` writes).

        Raises:
            WorkKeyError: ``data`` is not an unencrypted Ed25519 private key.
        """
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as err:
            raise WorkKeyError(f"not a PEM private key: {err}") from err
        if not isinstance(key, Ed25519PrivateKey):
            raise WorkKeyError(f"the work signing key must be Ed25519, not {type(key).__name__}")
        return cls(key)

    def to_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (keep it in a 0600 file or a secret)."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def sign(self, item: WorkItem) -> WorkItem:
        """``item`` with its ``signature`` set (over every field in :data:`SIGNED_FIELDS`)."""
        signature = _b64(self._key.sign(signing_input(item)))
        return item.model_copy(update={"signature": signature})


class WorkVerifier:
    """Decides whether an agent may act on a work item.

    Args:
        public_keys: the pinned public keys (text); an item signed by any of them is
            genuine, so a key rotation pins the old and the new key for a while.
        deployment: the deployment this agent serves.
        max_lifetime_s: longest ``expires_at - now`` accepted.

    Raises:
        WorkKeyError: no key, or a malformed one.
    """

    def __init__(
        self,
        public_keys: Iterable[str],
        deployment: str,
        *,
        max_lifetime_s: float = MAX_LIFETIME_S,
    ) -> None:
        self._keys = [parse_public_key(text) for text in public_keys]
        if not self._keys:
            raise WorkKeyError("no work public key pinned")
        self.deployment = deployment
        self._max_lifetime_s = max_lifetime_s

    def verify(self, item: WorkItem, now: float | None = None) -> None:
        """Return if ``item`` is genuine, for this deployment and live; else raise.

        Raises:
            WorkRefusedError: why the item must not be acted on.
        """
        what = f"work item {item.id} ({item.kind}, attempt {item.attempt})"
        if not item.signature:
            raise WorkRefusedError(f"{what} is not signed")
        try:
            signature = _unb64(item.signature)
        except (binascii.Error, ValueError):
            raise WorkRefusedError(f"{what} has a malformed signature") from None
        data = signing_input(item)
        for key in self._keys:
            try:
                key.verify(signature, data)
                break
            except InvalidSignature:
                continue
        else:
            raise WorkRefusedError(
                f"{what}: bad signature (forged, altered, or signed by a key this agent "
                "does not pin)"
            )
        if item.deployment != self.deployment:
            raise WorkRefusedError(
                f"{what} is for deployment {item.deployment!r}; this agent serves "
                f"{self.deployment!r}"
            )
        now = time.time() if now is None else now
        if item.expires_at is None:
            raise WorkRefusedError(f"{what} has no expiry")
        if item.expires_at <= now:
            raise WorkRefusedError(f"{what} expired {now - item.expires_at:.1f}s ago")
        if item.expires_at - now > self._max_lifetime_s + _CLOCK_SLACK_S:
            raise WorkRefusedError(
                f"{what} expires in {item.expires_at - now:.0f}s, more than the "
                f"{self._max_lifetime_s:.0f}s an agent accepts"
            )
