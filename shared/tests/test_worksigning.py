"""Signing and verifying work items (pure: no NATS, no control plane)."""

from __future__ import annotations

import json
import time

import pytest
from tether.shared.wire.base import decode, encode
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.signing import (
    MAX_LIFETIME_S,
    SIGNED_FIELDS,
    WorkKeyError,
    WorkRefusedError,
    WorkSigner,
    WorkVerifier,
    parse_public_key,
)
from tether.shared.wire.work import WorkItem, WorkKind

SIGNER = WorkSigner.generate()


def item(**fields: object) -> WorkItem:
    values: dict[str, object] = {
        "id": "item-1",
        "kind": WorkKind.LAUNCH_RUN,
        "location": LocationConfig(name="loc", module="jobs", env={"A": "é ✓"}),
        "payload": {"run_id": "r1", "n": 1.5, "nested": {"b": [1, 2], "a": None}},
        "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
        "deployment": "default",
        "expires_at": time.time() + 600,
    }
    return SIGNER.sign(WorkItem(**(values | fields)))  # type: ignore[arg-type]


def verifier(*signers: WorkSigner, deployment: str = "default") -> WorkVerifier:
    return WorkVerifier([s.public_key for s in signers or (SIGNER,)], deployment)


def test_a_signed_item_verifies_after_every_wire_round_trip() -> None:
    signed = item()
    check = verifier()
    check.verify(signed)
    # NATS (pydantic's JSON), and the agent API (json.dumps by the server, json.loads and
    # model_validate by the poller's client) carry it without breaking the signature.
    check.verify(decode(encode(signed), WorkItem))
    check.verify(WorkItem.model_validate(json.loads(json.dumps(signed.model_dump(mode="json")))))


@pytest.mark.parametrize(
    "change",
    [
        {"deployment": "other"},
        {"id": "item-2"},
        {"kind": WorkKind.LOAD_LOCATION},
        {"location": LocationConfig(name="loc", module="jobs", env={"A": "evil"})},
        {"payload": {"run_id": "r1", "n": 1.5, "nested": {"b": [1, 2], "a": 0}}},
        {"created_at": 1.0},
        {"expires_at": time.time() + 700},
        {"attempt": 2},
    ],
    ids=lambda change: next(iter(change)),
)
def test_changing_any_signed_field_breaks_the_signature(change: dict[str, object]) -> None:
    assert set(change) <= set(SIGNED_FIELDS)
    with pytest.raises(WorkRefusedError, match="bad signature"):
        verifier().verify(item().model_copy(update=change))


def test_the_traceparent_is_not_signed() -> None:
    # Tracing only: a hop may rewrite it without the item becoming untrusted.
    verifier().verify(item().model_copy(update={"traceparent": None}))


def test_refusals_say_why() -> None:
    check = verifier()
    cases = {
        "is not signed": item().model_copy(update={"signature": None}),
        "malformed signature": item().model_copy(update={"signature": "***"}),
        "bad signature": WorkSigner.generate().sign(item()),
        "is for deployment 'other'": item(deployment="other"),
        "has no expiry": item(expires_at=None),
        "expired": item(expires_at=time.time() - 5),
        "more than the": item(expires_at=time.time() + MAX_LIFETIME_S + 3600),
    }
    for reason, bad in cases.items():
        with pytest.raises(WorkRefusedError, match=reason):
            check.verify(bad)


def test_a_rotation_pins_both_keys() -> None:
    new = WorkSigner.generate()
    both = verifier(SIGNER, new)
    both.verify(item())
    both.verify(new.sign(item()))
    with pytest.raises(WorkRefusedError, match="bad signature"):
        verifier(new).verify(item())


def test_keys_round_trip_and_bad_keys_are_refused() -> None:
    assert WorkSigner.from_pem(SIGNER.to_pem()).public_key == SIGNER.public_key
    parse_public_key(SIGNER.public_key)
    for bad, why in (
        ("ssh-ed25519 AAAA", "starts with 'ed25519:'"),
        ("ed25519:AAAA", "holds 3 bytes"),
        ("ed25519:*&^", "not base64url"),
    ):
        with pytest.raises(WorkKeyError, match=why):
            parse_public_key(bad)
    with pytest.raises(WorkKeyError, match="no work public key"):
        WorkVerifier([], "default")
    with pytest.raises(WorkKeyError, match="not a PEM private key"):
        WorkSigner.from_pem(b"nope")
