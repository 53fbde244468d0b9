"""The launcher's Prometheus metrics (``/metrics`` on its health port): work items handled,
runs launched and how long a launch took, run workers alive, claims taken over.

Labelled by substrate, so one scrape of several launchers (process, Docker, Kubernetes)
tells them apart; an HPA can scale on ``tether_launcher_work_items_total`` or on the run
workers a replica holds.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from tether.shared.runtime.metrics import LATENCY_BUCKETS

WORK_ITEMS = Counter(
    "tether_launcher_work_items",
    "Work items a launcher handled, by kind.",
    ["substrate", "kind"],
)
LAUNCHES = Counter(
    "tether_launcher_launches",
    "Launches of run workers by outcome: launched, failed (the substrate refused), lost (taken "
    "over by another launcher while waiting), skipped (claimed elsewhere already).",
    ["substrate", "outcome"],
)
LAUNCH_SECONDS = Histogram(
    "tether_launcher_launch_seconds",
    "From a launch item's arrival to its run worker started (cold-start waits included).",
    ["substrate", "start"],
    buckets=(*LATENCY_BUCKETS, 120.0, 300.0),
)
RUN_WORKERS = Gauge(
    "tether_launcher_run_workers",
    "Run workers this launcher started that are alive.",
    ["substrate"],
)
TAKEOVERS = Counter(
    "tether_launcher_claim_takeovers",
    "Unlaunched run claims of a dead launcher taken over by this one.",
    ["substrate"],
)
