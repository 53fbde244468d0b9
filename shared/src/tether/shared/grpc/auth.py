"""How a launcher proves to a code server that it may call it: a bearer token.

Each code server gets one secret token from the launcher that starts it, through its
environment (:data:`CODESERVER_TOKEN_ENV`, never its command line). Every call of the
``CodeServer`` service must carry ``authorization: Bearer <token>`` in its metadata; the
code server answers anything else with UNAUTHENTICATED. The launcher derives the token
from its own secret (see ``tether.launcher.tokens``), so no token is stored anywhere.

In containers the channel is TLS too: each code server gets a certificate (and key) the
launcher derives the same way and pins (:data:`CODESERVER_TLS_CERT_ENV`).

Pure helpers, no I/O.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

__all__ = [
    "AUTHORIZATION_KEY",
    "CODESERVER_TLS_CERT_ENV",
    "CODESERVER_TLS_KEY_ENV",
    "CODESERVER_TOKEN_ENV",
    "TLS_SERVER_NAME",
    "bearer_metadata",
    "token_matches",
]

#: The environment variable that hands a code server its token.
CODESERVER_TOKEN_ENV = "TETHER_CODESERVER_TOKEN"

#: The environment variables that hand a code server its TLS certificate and key (PEM);
#: the launcher pins that certificate. Container substrates only (the process substrate
#: stays on loopback).
CODESERVER_TLS_CERT_ENV = "TETHER_CODESERVER_TLS_CERT"
CODESERVER_TLS_KEY_ENV = "TETHER_CODESERVER_TLS_KEY"

#: The name in every code server's certificate; clients check it instead of the address
#: (a pod IP or a service name that no certificate could name in advance).
TLS_SERVER_NAME = "tether-codeserver"

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
