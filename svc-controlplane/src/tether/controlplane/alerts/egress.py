"""Where alerts may connect: the control plane's guard against server-side request forgery.

A policy's webhook URL or SMTP host is chosen by a deployment's editor, yet the connection
is made by the control plane, from inside its network. Unguarded, a policy could reach the
cloud metadata service (169.254.169.254), the metadata database, a NATS monitor or the
control plane's own port, and the delivery log would echo what answered. So every alert
connection:

- resolves its host once and refuses it when any address is not public (loopback, private,
  link-local, shared/CGNAT, multicast, reserved, unspecified, and the IPv4 addresses that
  IPv4-mapped, NAT64, 6to4 and Teredo IPv6 addresses carry), unless a network of
  ``TETHER_CONTROLPLANE_ALERT_EGRESS_ALLOW`` holds the address (an internal SMTP relay, a
  receiver in the same VPC; ``tether dev`` allows loopback);
- connects to the address it checked, so a DNS server that answers differently the second
  time (rebinding) cannot steer it elsewhere; TLS still verifies the certificate against
  the host's name;
- never follows redirects and never uses the environment's proxy settings (a proxy would
  resolve the name itself, past the guard).

A refusal is permanent (a retry cannot cure it) and says which rule refused, never what
the name resolved to: an editor must not be able to map the internal network through the
delivery log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import smtplib
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
from tether.controlplane.errors import ControlPlaneError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The settings variable that allows non-public networks (named in every refusal).
ALLOW_VARIABLE = "TETHER_CONTROLPLANE_ALERT_EGRESS_ALLOW"
#: Loopback, for ``tether dev`` and tests whose receivers listen on 127.0.0.1.
LOOPBACK = ("127.0.0.0/8", "::1/128")

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class EgressRefusedError(ControlPlaneError):
    """An alert's destination is not one the control plane may connect to."""


def _kind(address: Address) -> str | None:
    """Why ``address`` is not public (None: it is)."""
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified:
        return "unspecified"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "non-public"
    return None


def _embedded(address: Address) -> Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``values`` as networks (``10.0.0.0/8``, ``::1``); raises ValueError naming a bad one."""
    networks: list[Network] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP network: {value!r}") from None
    return tuple(networks)


@dataclass(frozen=True)
class EgressGuard:
    """The destinations alerts may connect to: every public address, and ``allow``."""

    allow: tuple[Network, ...] = ()

    @classmethod
    def allowing(cls, *networks: str) -> EgressGuard:
        return cls(parse_networks(networks))

    def refusal(self, address: Address) -> str | None:
        """Why a connection to ``address`` is refused (None: it may be made)."""
        # An IPv6 address carrying an IPv4 one reaches that one: it decides.
        target = _embedded(address) or address
        if any(a in network for network in self.allow for a in (address, target)):
            return None
        kind = _kind(target)
        return None if kind is None else f"a {kind} address"

    def check_addresses(self, host: str, addresses: Sequence[str]) -> str:
        """The address to connect to among ``host``'s; raises EgressRefusedError if any is refused
        (a name that mixes public and internal answers is a rebinding attempt)."""
        if not addresses:
            raise EgressRefusedError(f"{host!r} resolves to no address")
        for value in addresses:
            why = self.refusal(ipaddress.ip_address(value.split("%", 1)[0]))
            if why is not None:
                raise EgressRefusedError(
                    f"refused {host!r}: it is or resolves to {why}; alerts go only to "
                    f"public addresses unless {ALLOW_VARIABLE} allows the network"
                )
        return addresses[0]

    def check_literal(self, host: str) -> None:
        """Refuse ``host`` now if it is an IP address (or ``localhost``) the guard refuses:
        a clear error when a policy is saved. Names are checked when they are used."""
        name = host.strip("[]").rstrip(".").lower()
        if name == "localhost" or name.endswith(".localhost"):
            name = "127.0.0.1"
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return
        self.check_addresses(host, [str(address)])

    async def resolve(self, host: str, port: int) -> str:
        """The checked address of ``host`` to connect to (one lookup)."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as err:
            raise ConnectionError(f"cannot resolve {host!r}: {err}") from None
        return self.check_addresses(host, _addresses(infos))

    def resolve_blocking(self, host: str, port: int) -> str:
        """:meth:`resolve` for code in a thread (SMTP)."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as err:
            raise ConnectionError(f"cannot resolve {host!r}: {err}") from None
        return self.check_addresses(host, _addresses(infos))

    def http_client(self, *, timeout_s: float) -> httpx.AsyncClient:
        """An HTTP client whose every connection passes this guard."""
        return httpx.AsyncClient(
            transport=_GuardedTransport(self),
            timeout=timeout_s,
            follow_redirects=False,
            trust_env=False,
        )

    def smtp(
        self, security: str, host: str, port: int, *, timeout_s: float, context: Any
    ) -> smtplib.SMTP:
        """A connected SMTP session (implicit TLS when ``security`` is ``ssl``) to ``host``'s
        checked address; TLS verifies ``host``'s name."""
        if security == "ssl":
            return _GuardedSMTPSSL(self, host, port, timeout=timeout_s, context=context)
        return _GuardedSMTP(self, host, port, timeout=timeout_s)


def _addresses(infos: list[tuple[Any, ...]]) -> list[str]:
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the guard checked."""

    def __init__(self, guard: EgressGuard) -> None:
        self._guard = guard
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            address = await self._guard.resolve(host, port)
        except ConnectionError as err:
            raise httpcore.ConnectError(str(err)) from None
        return await self._inner.connect_tcp(
            address, port, timeout=timeout, local_address=local_address,
            socket_options=socket_options,
        )  # fmt: skip

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise EgressRefusedError("alerts do not connect to Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a pool whose connections pass the guard. (httpx has no
    parameter for a network backend, so the pool it built is replaced by one that has.)"""

    def __init__(self, guard: EgressGuard) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=_GuardedBackend(guard),
        )


class _GuardedSMTP(smtplib.SMTP):
    def __init__(self, guard: EgressGuard, *args: Any, **kwargs: Any) -> None:
        self._guard = guard  # set first: SMTP() connects in its constructor
        super().__init__(*args, **kwargs)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        # STARTTLS and implicit TLS verify the certificate against self._host, the name.
        return super()._get_socket(  # type: ignore[misc]
            self._guard.resolve_blocking(host, port), port, timeout
        )


class _GuardedSMTPSSL(_GuardedSMTP, smtplib.SMTP_SSL):
    pass


__all__ = ["ALLOW_VARIABLE", "LOOPBACK", "EgressGuard", "EgressRefusedError", "parse_networks"]
