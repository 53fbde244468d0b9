"""Real receivers of alerts for the tests: an HTTP server (webhooks, Slack, Teams,
PagerDuty) that checks the generic webhook's HMAC signature itself, and an SMTP server
(aiosmtpd) with STARTTLS and AUTH, both on free loopback ports."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

#: The HMAC key the tests give webhook channels (and the receiver checks).
HMAC_SECRET = "s3cret-hmac-key-0123456789"


@dataclass
class Received:
    """One request the HTTP receiver got."""

    path: str
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        """The body, parsed."""
        return json.loads(self.raw)


@dataclass
class HttpReceiver:
    """An HTTP server recording every POST; ``statuses`` are answered first, in order
    (then 200); ``secret`` is the HMAC key it checks ``X-Tether-Signature`` against."""

    port: int
    secret: str
    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    #: The ``Location`` a 3xx status answers with.
    redirect_to: str | None = None

    def url(self, path: str = "/hook") -> str:
        """A URL of the receiver."""
        return f"http://127.0.0.1:{self.port}{path}"

    def signature_ok(self, request: Received) -> bool:
        """Whether the request carries a valid signature of its timestamp and body."""
        stamp = request.headers.get("x-tether-timestamp", "")
        expected = hmac.new(
            self.secret.encode(), stamp.encode() + b"." + request.raw, hashlib.sha256
        ).hexdigest()
        return hmac.compare_digest(
            request.headers.get("x-tether-signature", ""), f"sha256={expected}"
        )

    def at(self, path: str) -> list[Received]:
        """The requests to ``path``."""
        return [r for r in self.received if r.path == path]


@contextmanager
def http_receiver(secret: str = HMAC_SECRET) -> Iterator[HttpReceiver]:
    """Run an :class:`HttpReceiver` until the block ends."""
    lock = threading.Lock()
    state: dict[str, HttpReceiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            receiver = state["r"]
            with lock:
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status < 300:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.received.append(Received(self.path, headers, raw))
            self.send_response(status)
            if 300 <= status < 400 and receiver.redirect_to:
                self.send_header("Location", receiver.redirect_to)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, fmt: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["r"] = HttpReceiver(port=server.server_address[1], secret=secret)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["r"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass
class SmtpReceiver:
    """An SMTP server's mailbox: every accepted message, and who logged in."""

    port: int
    messages: list[Message] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)


class _Handler:
    def __init__(self, box: SmtpReceiver) -> None:
        self.box = box

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:  # noqa: N802
        assert isinstance(envelope.content, bytes)
        self.box.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files); the certificate is its own CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "smtp.crt", directory / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@contextmanager
def smtp_receiver(
    port: int, *, tls: tuple[Path, Path] | None = None, login: tuple[str, str] | None = None
) -> Iterator[SmtpReceiver]:
    """Run an SMTP server on ``port``: with ``tls`` it requires STARTTLS, with ``login``
    it requires AUTH with that user and password."""
    import ssl

    box = SmtpReceiver(port=port)

    def authenticate(
        server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            login is not None
            and isinstance(data, LoginPassword)
            and (data.login.decode(), data.password.decode()) == login
        )
        if ok:
            box.logins.append(data.login.decode())
        # handled=False: aiosmtpd answers 535 itself.
        return AuthResult(success=ok, handled=False)

    kwargs: dict[str, Any] = {}
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        kwargs.update(tls_context=context, require_starttls=True)
    if login is not None:
        kwargs.update(authenticator=authenticate, auth_required=True)
        if tls is None:
            kwargs.update(auth_require_tls=False)
    controller = Controller(_Handler(box), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
