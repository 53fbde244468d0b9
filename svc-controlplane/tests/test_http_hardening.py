"""The HTTP layer as an attacker meets it: a real ``tether controlplane serve`` over HTTP.

Huge bodies are refused while they stream (the server's memory does not follow them),
bad encodings and deep nesting are a 400 (never a 500 or a traceback), only the
configured Host names are answered, browsers' cross-site state changes are refused, and
every response carries the security headers.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tether.controlplane.http.security import HostAndOriginGuard
from tether.testing import free_port

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).parents[1] / "src/tether/controlplane/ui/templates"
MB = 1024 * 1024
LIMIT = 2 * MB


@dataclass
class Server:
    """A control plane subprocess and what the tests need of it."""

    proc: subprocess.Popen[bytes]
    url: str
    port: int
    agent_token: str
    log_path: Path

    def memory_kib(self, field: str = "VmRSS") -> int:
        """A memory figure of the server process from /proc (VmRSS, VmHWM), KiB."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
        assert match is not None, status
        return int(match.group(1))

    def reset_peak(self) -> int:
        """Reset the process's peak RSS (VmHWM) to its current RSS; return that, KiB.

        Freed buffers go back to the OS, so RSS after a request says nothing of what it
        cost: the peak does.
        """
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        return self.memory_kib("VmRSS")

    def log(self) -> str:
        """Everything the server wrote so far."""
        return self.log_path.read_text(errors="replace")


def _start(tmp: Path, **env: str) -> Server:
    port = free_port()
    log_path = tmp / "server.log"
    full_env = {
        **os.environ,
        "TETHER_CONTROLPLANE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'cp.db'}",
        "TETHER_CONTROLPLANE_PORT": str(port),
        "TETHER_CONTROLPLANE_AGENT_TOKEN_FILE": str(tmp / "agent.token"),
        "TETHER_CONTROLPLANE_DAEMONS": "false",
        "TETHER_CONTROLPLANE_RUN_MONITOR": "false",
        # A body the app may buffer (GraphQL parses whole documents) costs up to the limit:
        # keep it small so what the tests measure is the body past it.
        "TETHER_CONTROLPLANE_MAX_REQUEST_BYTES": str(LIMIT),
        **env,
    }
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tether.shared.runtime.cli", "controlplane", "serve"],
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise AssertionError(f"server exited:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    token = (tmp / "agent.token").read_text().strip()
    return Server(proc=proc, url=url, port=port, agent_token=token, log_path=log_path)


def _stop(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real control plane for the module (SQLite, no anonymous access)."""
    srv = _start(tmp_path_factory.mktemp("cp"))
    try:
        yield srv
    finally:
        _stop(srv)
    # Whatever the tests sent, the server never logged a traceback.
    assert "Traceback" not in srv.log(), srv.log()


def _stream(total: int, chunk: int = MB) -> Iterator[bytes]:
    block = b"a" * chunk
    for _ in range(total // chunk):
        yield block


@pytest.mark.parametrize(
    ("path", "kind"),
    [("/signin", "application/x-www-form-urlencoded"), ("/graphql", "application/json")],
)
def test_a_300_mb_streamed_post_is_refused_without_the_server_holding_it(
    server: Server, path: str, kind: str
) -> None:
    before = server.reset_peak()
    resp = httpx.post(
        f"{server.url}{path}",
        content=_stream(300 * MB),
        headers={"content-type": kind},
        timeout=120,
    )
    grown_mib = (server.memory_kib("VmHWM") - before) / 1024
    assert resp.status_code == 413
    # A UI form has its own, smaller bound (1 MiB): either way the answer names the limit.
    assert "limit of" in resp.text and "nothing" in resp.text
    # Before: ~600 MB for /signin (the form read whole). Now a form stops at 1 MiB and
    # /graphql at the 2 MiB limit, whatever follows.
    assert grown_mib < 8, f"the server's peak memory grew by {grown_mib:.0f} MiB"


def test_a_declared_oversized_body_is_refused_before_it_is_sent(server: Server) -> None:
    # Only the head goes out: the answer comes from Content-Length alone.
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /runs/x/terminate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 314572800\r\n\r\n"
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 ")


GQL = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"query": "{ __typename }", "x": "\xff\xfe"}', "not valid UTF-8"),
        (b"[" * 100_000, "nested too deeply"),
        (
            b'{"query": "{ __typename }", "variables": {"a": ' + b"[" * 500 + b"]" * 500 + b"}}",
            "nested 502 levels deep; the limit is 100",
        ),
        (b'"just a string"', "expected a JSON object"),
        (b"{nope", "not valid JSON"),
    ],
    ids=["invalid-utf8", "100k-brackets", "deep-variables", "scalar", "syntax"],
)
@pytest.mark.parametrize("who", ["anonymous", "agent"])
def test_bad_json_bodies_are_a_clear_400(server: Server, body: bytes, says: str, who: str) -> None:
    headers = dict(GQL)
    if who == "agent":
        # The agent API is the same endpoint: its uploads get the same answer.
        headers["authorization"] = f"Bearer {server.agent_token}"
    resp = httpx.post(f"{server.url}/graphql", content=body, headers=headers, timeout=30)
    assert resp.status_code == 400, resp.text
    assert says in resp.text and "Traceback" not in resp.text


def test_deep_variables_of_a_get_are_a_clear_400(server: Server) -> None:
    resp = httpx.get(
        f"{server.url}/graphql",
        params={"query": "{ __typename }", "variables": "[" * 2000},
        timeout=30,
    )
    assert resp.status_code == 400 and "nested too deeply" in resp.text


@pytest.mark.parametrize("form", [b"token=%ff%fe", b"token=\xff"], ids=["escape", "raw-byte"])
def test_a_form_that_is_not_utf8_is_a_clear_400(server: Server, form: bytes) -> None:
    resp = httpx.post(
        f"{server.url}/signin",
        content=form,
        headers={"content-type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert resp.status_code == 400 and "not valid UTF-8" in resp.text


LAUNCH = 'mutation { reloadCodeLocation(name: "nowhere") { __typename } }'


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:3000", "127.0.0.1.evil.example", "localhostx"]
)
def test_a_foreign_host_is_refused(server: Server, host: str) -> None:
    # A DNS-rebinding page reaches 127.0.0.1 under its own name; the Host header says so.
    for resp in (
        httpx.get(f"{server.url}/healthz", headers={"host": host}),
        httpx.post(f"{server.url}/graphql", json={"query": LAUNCH}, headers={"host": host}),
    ):
        assert resp.status_code == 400
        assert "does not answer for host" in resp.text
        assert "TETHER_CONTROLPLANE_ALLOWED_HOSTS" in resp.text


@pytest.mark.parametrize(
    "host", ["localhost", "127.0.0.1", "[::1]", "LOCALHOST:{port}", "127.0.0.1:{port}"]
)
def test_loopback_names_are_answered(server: Server, host: str) -> None:
    resp = httpx.get(f"{server.url}/healthz", headers={"host": host.format(port=server.port)})
    assert resp.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://evil.example"},
        {"origin": "null"},
        {"origin": "http://127.0.0.1:1"},
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
    ],
)
@pytest.mark.parametrize(
    ("path", "kind", "body"),
    [
        ("/graphql", "application/json", b'{"query": "mutation { __typename }"}'),
        # A text/plain "simple request" is what a cross-site <form> can send.
        ("/graphql", "text/plain", b'{"query": "mutation { __typename }"}'),
        ("/signin", "application/x-www-form-urlencoded", b"token=x"),
        ("/runs/r1/terminate", "application/x-www-form-urlencoded", b""),
    ],
)
def test_a_browsers_cross_site_post_is_refused(
    server: Server, headers: dict[str, str], path: str, kind: str, body: bytes
) -> None:
    resp = httpx.post(
        f"{server.url}{path}", content=body, headers={"content-type": kind, **headers}
    )
    assert resp.status_code == 403 and "cross-site request refused" in resp.text


def test_same_origin_and_non_browser_posts_pass(server: Server) -> None:
    query = {"query": "{ __typename }"}
    for headers in (
        {},
        {"origin": server.url},
        {"origin": f"http://localhost:{server.port}", "host": f"localhost:{server.port}"},
        {"sec-fetch-site": "same-origin", "origin": server.url},
        {"sec-fetch-site": "none"},
    ):
        resp = httpx.post(f"{server.url}/graphql", json=query, headers=headers)
        assert resp.status_code == 200, (headers, resp.text)


def test_a_get_never_runs_a_mutation(server: Server) -> None:
    resp = httpx.get(
        f"{server.url}/graphql",
        params={"query": LAUNCH},
        headers={"authorization": f"Bearer {server.agent_token}"},
    )
    assert resp.status_code == 400 and "mutations are not allowed" in resp.text


def test_every_response_carries_the_security_headers(server: Server) -> None:
    answers = [
        httpx.get(f"{server.url}/signin"),
        httpx.get(f"{server.url}/healthz"),
        httpx.get(f"{server.url}/no/such/page"),
        httpx.get(f"{server.url}/static/tether.css"),
        httpx.post(f"{server.url}/graphql", json={"query": "{ __typename }"}),
        httpx.post(f"{server.url}/graphql", content=b"[" * 10, headers=GQL),
        httpx.get(f"{server.url}/healthz", headers={"host": "evil.example"}),
    ]
    for resp in answers:
        csp = resp.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp
        script_src = re.search(r"script-src ([^;]*)", csp)
        assert script_src is not None and "'unsafe-inline'" not in script_src.group(1)
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["referrer-policy"] == "same-origin"
        assert resp.headers["x-frame-options"] == "DENY"
        # Plain http: no HSTS (it would pin a name to https that has none).
        assert "strict-transport-security" not in resp.headers
    # An X-Forwarded-Proto from an address that is no trusted proxy changes nothing.
    spoofed = httpx.get(f"{server.url}/healthz", headers={"x-forwarded-proto": "https"})
    assert "strict-transport-security" not in spoofed.headers


def test_no_template_has_inline_script_or_handlers() -> None:
    # The CSP allows scripts only from /static: an inline one would silently not run.
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text):
            assert "src=" in tag, f"{template.name}: inline <script>"
        assert not re.search(r"\son[a-z]+=", text), f"{template.name}: inline event handler"
        assert "javascript:" not in text, template.name


async def test_a_configured_name_is_an_own_origin_behind_a_host_rewriting_proxy() -> None:
    # nginx `proxy_pass http://127.0.0.1:3000` sends Host 127.0.0.1:3000 while the browser's
    # Origin is the public name: listed in ALLOWED_HOSTS, it is this site, nothing else is.
    reached: list[str] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guard = HostAndOriginGuard(app, allowed_hosts=["tether.example.com"])
    transport = httpx.ASGITransport(app=guard)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:3000") as c:
        ok = await c.post("/x", headers={"origin": "https://tether.example.com"})
        other_port = await c.post("/x", headers={"origin": "http://localhost:8080"})
        lookalike = await c.post("/x", headers={"origin": "https://tether.example.com.evil"})
    assert (ok.status_code, other_port.status_code, lookalike.status_code) == (204, 403, 403)
    assert reached == ["/x"]
