"""The caller tokens (and TLS certificates) of code servers, derived from the launcher's
secret.

A code server answers only calls that present its token (see
:mod:`tether.shared.grpc.auth`). The token is an HMAC-SHA256, under the launcher's
secret, of the location's name and config hash: one token per code server, different for
every location (one location's code cannot call another's code server), and the same for
a restarted launcher that has the same secret, which can thus call the code servers it
adopts. Nothing but the secret is kept, and the secret never leaves the launcher: no
token is written to the code-server registry (NATS KV), to argv or to a log. On container
substrates each code server's TLS key and self-signed certificate are derived the same way
(:meth:`CodeServerTokens.tls_for_location`), so the launcher can pin the certificate.

The secret comes from ``TETHER_LAUNCHER_CODESERVER_SECRET``, else from the file
``TETHER_LAUNCHER_CODESERVER_SECRET_FILE`` (created, mode 0600, when missing). Rotating
it (a new secret) makes the code servers started with the old one unreachable: the
launcher replaces them as it meets them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tether.launcher.errors import LauncherError
from tether.shared.grpc.auth import TLS_SERVER_NAME
from tether.shared.runtime.privatefiles import create_exclusively
from tether.shared.wire.locations import LocationConfig, location_config_hash

log = logging.getLogger(__name__)

#: The environment variable of the secret itself (``LauncherSettings.codeserver_secret``).
SECRET_ENV = "TETHER_LAUNCHER_CODESERVER_SECRET"

#: Random bytes of a new secret.
SECRET_BYTES = 32
#: Shortest secret accepted from settings or a file (characters).
MIN_SECRET_CHARS = 32

_CONTEXT = b"tether.codeserver-token.v1"


class CodeServerSecretError(LauncherError):
    """The launcher's code-server secret is missing, too short or not private."""


def default_secret_file() -> Path:
    """Where the secret lives when the settings name no file: the user's state directory."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(state) / "tether" / "launcher-codeserver.secret"


class CodeServerTokens:
    """Derives the token of each code server from the launcher's secret.

    Args:
        secret: the launcher's secret (at least :data:`MIN_SECRET_CHARS` bytes).

    Raises:
        CodeServerSecretError: the secret is too short.
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_CHARS:
            raise CodeServerSecretError(
                f"the code-server secret must have at least {MIN_SECRET_CHARS} characters"
            )
        self._key = hmac.new(secret, _CONTEXT, hashlib.sha256).digest()

    @classmethod
    def ephemeral(cls) -> CodeServerTokens:
        """Tokens from a random secret that lives as long as this object."""
        return cls(secrets.token_hex(SECRET_BYTES).encode())

    @classmethod
    def from_file(cls, path: Path, *, create: bool = True) -> CodeServerTokens:
        """Tokens from the secret in ``path``, created (0600) with a random one if missing.

        Raises:
            CodeServerSecretError: the file cannot be read or created, is readable or
                writable by others than its owner, or holds too short a secret.
        """
        if create:
            _create_secret_file(path)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as err:
            raise CodeServerSecretError(
                f"cannot read the code-server secret {path}: {err}"
            ) from err
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise CodeServerSecretError(
                    f"the code-server secret {path} is accessible by others "
                    f"(mode {stat.S_IMODE(mode):04o}); make it private: chmod 600 {path}"
                )
            secret = f.read().strip()
        return cls(secret)

    def for_location(self, location: LocationConfig) -> str:
        """The token of the code server that serves ``location`` (exactly this config)."""
        return self.for_config(location.name, location_config_hash(location))

    def for_config(self, name: str, config_hash: str) -> str:
        """The token of the code server of location ``name`` whose whole config (env values
        included) hashes to ``config_hash``: what an adopting launcher knows from the
        registry, which keeps the hash but not the env values."""
        return hmac.new(self._key, _message(name, config_hash), hashlib.sha256).hexdigest()

    def tls_for_location(self, location: LocationConfig) -> CodeServerTls:
        """The TLS key and certificate of the code server that serves ``location``."""
        return self.tls_for_config(location.name, location_config_hash(location))

    def tls_for_config(self, name: str, config_hash: str) -> CodeServerTls:
        """:meth:`tls_for_location` from the location's name and whole-config hash."""
        return _derived_tls(self._key, _message(name, config_hash))


def _message(name: str, config_hash: str) -> bytes:
    return b"\0".join((name.encode(), config_hash.encode()))


def tokens_from_settings(secret: str | None, secret_file: Path | None) -> CodeServerTokens:
    """The launcher's tokens: from ``secret``, else ``secret_file``, else the default file.

    Without either setting, a default file that cannot be created (a read-only home, as in
    a locked-down container) falls back to a random secret with a warning: this launcher
    works, but one restarted after it cannot call the code servers it leaves behind and
    replaces them.

    Raises:
        CodeServerSecretError: the secret or the file is unusable.
    """
    if secret:
        return CodeServerTokens(secret.encode())
    if secret_file is not None:
        return CodeServerTokens.from_file(secret_file)
    path = default_secret_file()
    try:
        _create_secret_file(path)
    except CodeServerSecretError as err:
        log.warning("%s; using a random code-server secret for this process only", err)
        return CodeServerTokens.ephemeral()
    return CodeServerTokens.from_file(path, create=False)


def _create_secret_file(path: Path) -> None:
    """Write a new random secret to ``path`` (0600) unless it exists; atomic."""
    if path.exists():
        return
    try:
        # Of two launchers starting at once, one secret wins, and neither ever reads a
        # half-written file.
        secret = secrets.token_hex(SECRET_BYTES).encode() + b"\n"
        if not create_exclusively(path, secret, dir_mode=0o700):
            return
    except OSError as err:
        raise CodeServerSecretError(
            f"cannot create the code-server secret {path}: {err}; set "
            "TETHER_LAUNCHER_CODESERVER_SECRET or TETHER_LAUNCHER_CODESERVER_SECRET_FILE"
        ) from err
    log.info("created the code-server secret %s", path)


@dataclass(frozen=True)
class CodeServerTls:
    """A code server's TLS key and self-signed certificate (PEM).

    The launcher pins exactly this certificate; it is derived, like the token, from the
    launcher's secret, the location's name and its config hash, so a restarted launcher
    pins the certificate of a code server it adopts without storing anything.
    """

    cert_pem: bytes
    key_pem: bytes


def _derived_tls(key: bytes, message: bytes) -> CodeServerTls:
    # Imported here: only launchers of container substrates use TLS.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    seed = hmac.new(key, b"tls\0" + message, hashlib.sha512).digest()
    curve = ec.SECP256R1()
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    private = ec.derive_private_key(int.from_bytes(seed) % (order - 1) + 1, curve)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TLS_SERVER_NAME)])
    # Fixed fields and deterministic ECDSA (RFC 6979): the same bytes every time.
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(int.from_bytes(seed[:16]) >> 1 or 1)
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(9999, 12, 31, tzinfo=UTC))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(TLS_SERVER_NAME)]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .sign(private, hashes.SHA256(), ecdsa_deterministic=True)
    )
    return CodeServerTls(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
