"""Test helpers of the poller: a small, real HTTP GraphQL endpoint speaking the agent
API's work-queue subset, and a log watcher.

The endpoint lets tests take "the control plane" away and bring it back on the same port,
shorten leases and watch acks; the real control plane is exercised in
test_poller_controlplane.py. It leases work items, re-offers unacked ones after their
lease, long-polls, and records acks and heartbeats; it parses only the operation name
and the variables.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tether.shared.wire.work import WorkItem


@dataclass
class _Lease:
    item: WorkItem
    until: float = 0.0
    acked: bool = False


@dataclass
class WorkQueueEndpoint:
    """State of the fake agent API; thread-safe."""

    port: int
    token: str = "test-token"
    leases: dict[str, _Lease] = field(default_factory=dict)
    acked: list[str] = field(default_factory=list)
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    claims: int = 0
    polls_started: int = 0
    on_claim: Callable[[list[WorkItem]], None] | None = None
    cond: threading.Condition = field(default_factory=threading.Condition)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, *items: WorkItem) -> None:
        with self.cond:
            for item in items:
                self.leases[item.id] = _Lease(item)
            self.cond.notify_all()

    def wait_acked(self, ids: set[str], timeout: float = 20.0) -> None:
        """Block until every id in ``ids`` is acked (test safety timeout only)."""
        with self.cond:
            if not self.cond.wait_for(lambda: ids <= set(self.acked), timeout):
                raise AssertionError(f"not acked: {ids - set(self.acked)}")

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise AssertionError("condition not reached")

    def _claim(self, variables: dict[str, Any]) -> list[dict[str, Any]]:
        deadline = time.monotonic() + variables["waitMs"] / 1000
        with self.cond:
            self.polls_started += 1
            self.cond.notify_all()
            while True:
                now = time.time()
                free = [
                    lease
                    for lease in self.leases.values()
                    if not lease.acked
                    and lease.until <= now
                    and lease.item.location.substrate in variables["substrates"]
                ][: variables["max"]]
                if free or time.monotonic() >= deadline:
                    break
                # Wake up for new items or for a lease running out.
                self.cond.wait(min(0.1, max(deadline - time.monotonic(), 0)))
            for lease in free:
                lease.until = now + variables["leaseSeconds"]
            self.claims += 1
            self.cond.notify_all()
        items = [lease.item for lease in free]
        if self.on_claim is not None and items:
            self.on_claim(items)
        return [item.model_dump(mode="json") for item in items]

    def _ack(self, variables: dict[str, Any]) -> int:
        with self.cond:
            n = 0
            for item_id in variables["ids"]:
                lease = self.leases.get(item_id)
                if lease is not None and not lease.acked:
                    lease.acked = True
                    n += 1
                self.acked.append(item_id)
            self.cond.notify_all()
        return n

    def _heartbeat(self, variables: dict[str, Any]) -> bool:
        with self.cond:
            self.heartbeats.append(variables["hb"])
            self.cond.notify_all()
        return True

    def answer(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        if "claimWork" in query:
            return {"claimWork": self._claim(variables)}
        if "ackWork" in query:
            return {"ackWork": self._ack(variables)}
        if "heartbeat" in query:
            return {"heartbeat": self._heartbeat(variables)}
        raise ValueError(f"unsupported operation: {query[:60]}")

    def start(self) -> None:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {endpoint.token}":
                    self._send(401, {"errors": [{"message": "bad agent token"}]})
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                try:
                    data = endpoint.answer(body["query"], body.get("variables") or {})
                except ValueError as err:
                    self._send(200, {"errors": [{"message": str(err)}]})
                    return
                self._send(200, {"data": data})

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class LogSeen(logging.Handler):
    """Sets ``seen`` once a record containing ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.INFO)
        self.text = text
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()
