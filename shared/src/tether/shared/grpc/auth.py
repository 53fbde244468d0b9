"""How a launcher proves to a code server that it may call it: a bearer token.

Each code server gets one secret token from the launcher that starts it, through its
environment (:data:`CODESERVER_TOKEN_ENV`, never its command line). Every call of the
``CodeServer`` service must carry ``authorization: Bearer <token>`` in its metadata; the
code server answers anything else with UNAUTHENTICATED. The launcher derives the token
from its own secret (see ``tether.launcher.tokens``), so no token is stored anywhere.

Pure helpers, no I/O.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

__all__ = [
    "AUTHORIZATION_KEY",
    "CODESERVER_TOKEN_ENV",
    "bearer_metadata",
    "token_matches",
]

#: The environment variable that hands a code server its token.
CODESERVER_TOKEN_ENV = "TETHER_CODESERVER_TOKEN"

#: The gRPC metadata key of the token (metadata keys are lowercase).
AUTHORIZATION_KEY = "authorization"

_SCHEME = "Bearer "


def bearer_metadata(token: str) -> tuple[tuple[str, str]]:
    """The metadata entry that presents ``token``."""
    return ((AUTHORIZATION_KEY, _SCHEME + token),)


def token_matches(metadata: Iterable[tuple[str, str | bytes]] | None, token: str) -> bool:
    """Whether ``metadata`` presents exactly ``token`` (one ``authorization`` entry).

    The comparison takes the same time wherever the first difference is, so the token
    cannot be guessed byte by byte from response times.
    """
    values = [v for k, v in metadata or () if k == AUTHORIZATION_KEY]
    if len(values) != 1 or not token:
        return False
    value = values[0]
    presented = value if isinstance(value, bytes) else value.encode()
    return hmac.compare_digest(presented, (_SCHEME + token).encode())
