"""What every HTTP request and response goes through, whatever route it reaches.

Three pure ASGI middlewares (no body buffering, no Starlette ``BaseHTTPMiddleware``):

- :class:`TrustedProxyScheme`: believes ``X-Forwarded-Proto`` only from configured proxy
  addresses, so behind a TLS proxy the request's scheme is ``https`` (cookies get
  ``Secure``, HSTS is sent) while anyone else sending the header changes nothing.
- :class:`HostAndOriginGuard`: answers only the Host names it is configured for (a DNS
  rebinding page reaches the server under the attacker's name and gets 400), and refuses
  any state-changing request (POST, PUT, PATCH, DELETE) a browser marks as cross-site
  (``Origin`` of another origin, or ``Sec-Fetch-Site: cross-site``/``same-site``). A
  client that is not a browser sends neither header and is unaffected; its credentials
  (an ``Authorization`` header) are what protects it.
- :class:`SecurityHeaders`: a Content-Security-Policy without inline script,
  ``frame-ancestors 'none'``, ``nosniff``, a Referrer-Policy, and HSTS over https.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Host names always answered: the loopback names a local browser or client uses.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")

#: Methods that change state; the Origin check applies to these.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

#: The UI's policy: scripts and styles only from this server (htmx and tether.js under
#: /static), no plugins, no framing. ``connect-src`` allows http(s) anywhere because the
#: log pane reads compute logs straight from the customer's bucket by presigned URL.
UI_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' https: http:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

#: GraphiQL (strawberry's page at GET /graphql, off in production) is an inline-script
#: page loading React from unpkg: it gets its own, looser policy, still never framed.
GRAPHIQL_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://unpkg.com; "
    "style-src 'self' 'unsafe-inline' https://unpkg.com; img-src 'self' data: https:; "
    "font-src 'self' data: https://unpkg.com; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


async def _answer(send: Send, status: int, text: str) -> None:
    body = (text + "\n").encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class TrustedProxyScheme:
    """Pure ASGI middleware: take the scheme from ``X-Forwarded-Proto`` of trusted proxies.

    Args:
        app: the wrapped ASGI app.
        trusted: IP addresses or CIDR networks of the reverse proxies in front.
    """

    def __init__(self, app: ASGIApp, trusted: Iterable[str]) -> None:
        self.app = app
        self.networks = [ipaddress.ip_network(item.strip(), strict=False) for item in trusted]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Rewrite ``scope["scheme"]`` for requests from a trusted proxy."""
        if scope["type"] == "http" and self.networks and self._from_proxy(scope):
            proto = _header(scope, b"x-forwarded-proto")
            if proto:
                # A chain of proxies appends: the first value is what the client used.
                first = proto.split(",")[0].strip().lower()
                if first in ("http", "https"):
                    scope = {**scope, "scheme": first}
        await self.app(scope, receive, send)

    def _from_proxy(self, scope: Scope) -> bool:
        client = scope.get("client")
        if not client:
            return False
        try:
            address = ipaddress.ip_address(client[0])
        except ValueError:
            return False
        return any(address in network for network in self.networks)


class HostAndOriginGuard:
    """Pure ASGI middleware: a Host allowlist, and no cross-site state-changing requests.

    Args:
        app: the wrapped ASGI app.
        allowed_hosts: names (``example.com``) or ``name:port`` answered besides the
            loopback names; ``*`` answers any Host.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        configured = {h.strip().lower() for h in allowed_hosts if h.strip()}
        hosts = {*LOOPBACK_HOSTS, *configured}
        self.any_host = "*" in hosts
        # A bind address is no name a browser would use.
        binds = {"*", "0.0.0.0", "::", "[::]"}  # noqa: S104 - names, not binds
        self.hosts = hosts - binds
        # Names configured for this server are its own origins even when a proxy in front
        # rewrites Host (proxy_pass to 127.0.0.1): their Origin is not cross-site. The
        # loopback defaults are not: another local app on another port is another site.
        self.own_origins = (configured - binds) - set(LOOPBACK_HOSTS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 400 for a foreign Host, 403 for a cross-site state change, else pass on."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if host is not None and not self.host_allowed(host):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await _answer(
                send,
                400,
                f"this server does not answer for host {host!r}; add it to "
                "TETHER_CONTROLPLANE_ALLOWED_HOSTS if it is this control plane's name",
            )
            return
        if scope["type"] == "http" and scope["method"] in UNSAFE_METHODS:
            problem = cross_site_problem(scope, host, self.own_origins)
            if problem is not None:
                await _answer(send, 403, f"cross-site request refused: {problem}")
                return
        await self.app(scope, receive, send)

    def host_allowed(self, host: str) -> bool:
        """Whether a ``Host`` header value (``name`` or ``name:port``) is served."""
        if self.any_host:
            return True
        value = host.strip().lower()
        return value in self.hosts or _host_name(value) in self.hosts


def _host_name(host: str) -> str:
    """``example.com:3000`` -> ``example.com``; ``[::1]:3000`` -> ``[::1]``."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _strip_default_port(netloc: str, scheme: str) -> str:
    default = {"http": ":80", "https": ":443"}.get(scheme)
    return netloc[: -len(default)] if default and netloc.endswith(default) else netloc


def cross_site_problem(
    scope: Scope, host: str | None, own_origins: Iterable[str] = ()
) -> str | None:
    """Why a state-changing request is cross-site (None if it is not, or not a browser's).

    Browsers send ``Sec-Fetch-Site`` on every request and ``Origin`` on every POST that is
    not a plain same-origin navigation; either one naming another site is refused. An
    Origin is this site's when it matches the request's Host, or one of ``own_origins``
    (configured names, ``name`` or ``name:port``).
    """
    fetch_site = _header(scope, b"sec-fetch-site")
    if fetch_site is not None and fetch_site.strip().lower() not in ("same-origin", "none"):
        return f"the browser says it comes from another site (Sec-Fetch-Site: {fetch_site})"
    origin = _header(scope, b"origin")
    if origin is None:
        return None
    if origin.strip().lower() == "null":
        return "Origin: null (an opaque origin) may not change anything here"
    parts = urlsplit(origin.strip().lower())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"unreadable Origin {origin!r}"
    own = _strip_default_port((host or "").strip().lower(), parts.scheme)
    netloc = _strip_default_port(parts.netloc, parts.scheme)
    names = set(own_origins)
    if netloc != own and netloc not in names and _host_name(netloc) not in names:
        return f"Origin {origin} is not this site ({host})"
    return None


class SecurityHeaders:
    """Pure ASGI middleware: security headers on every HTTP response.

    Args:
        app: the wrapped ASGI app.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Add the headers to the response start, keeping any the app set itself."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        secure = scope.get("scheme") == "https"
        graphiql = scope.get("path", "").startswith("/graphql") and scope["method"] == "GET"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                kind = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                csp = GRAPHIQL_CSP if graphiql and kind.startswith(b"text/html") else UI_CSP
                wanted = [
                    (b"content-security-policy", csp.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"same-origin"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                ]
                if secure:
                    wanted.append((b"strict-transport-security", b"max-age=31536000"))
                headers.extend((k, v) for k, v in wanted if k not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
