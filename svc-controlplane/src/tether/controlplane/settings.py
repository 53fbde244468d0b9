"""Settings of the control plane (env prefix ``TETHER_CONTROLPLANE_``)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from tether.shared.wire.signing import MAX_LIFETIME_S


class ControlPlaneSettings(BaseSettings):
    """Where the control plane keeps its metadata, where it listens, and its dev bootstrap."""

    model_config = SettingsConfigDict(env_prefix="TETHER_CONTROLPLANE_", extra="ignore")

    database_url: str = Field(
        default="sqlite+aiosqlite:///.tether/controlplane.db",
        description=(
            "SQLAlchemy async URL of the metadata DB. SQLite (sqlite+aiosqlite:///path): "
            "the file is created 0600 (its -wal/-shm follow; an existing readable one is "
            "tightened, with a warning) in a directory created 0700. PostgreSQL: "
            "postgresql+psycopg://USER:PASSWORD@HOST:5432/DB (psycopg 3 for the app and "
            "for Alembic)."
        ),
    )
    host: str = Field(default="127.0.0.1", description="Interface the HTTP server binds.")
    port: int = Field(default=3000, ge=0, description="HTTP port (0 picks a free one).")
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Interface of the metrics port (loopback: only this host scrapes it).",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description=(
            "Port of GET /metrics (Prometheus: requests by route, waiting claims, daemon "
            "leadership and check durations, live runs and waiting work items), with "
            "/healthz and /readyz; on `serve` and `daemons` alike. Unset: off."
        ),
    )
    metrics_interval_s: float = Field(
        default=15.0,
        gt=0,
        description="Seconds between the metrics' readings of live runs and waiting work.",
    )
    agent_token_file: Path | None = Field(
        default=None,
        description=(
            "Dev bootstrap: if the file is missing, create an agent token and write it there "
            "(mode 0600, a directory created 0700); if it exists, register the token it holds "
            "(made 0600 if others could read it). Only its hash (SHA-256) is stored."
        ),
    )
    work_signing_key_file: Path | None = Field(
        default=None,
        description=(
            "Ed25519 private key that signs every work item handed to agents (PEM, mode "
            "0600; created at startup when missing). Replicas share the file (a volume or "
            "a mounted secret); agents pin its public key (`tether controlplane work-key`). "
            "Unset: work-signing.key beside a SQLite database, else .tether/work-signing.key."
        ),
    )
    work_item_lifetime_s: float = Field(
        default=3600.0,
        gt=0,
        le=MAX_LIFETIME_S,
        description=(
            "Signed work items expire this long after they are claimed (sooner when the "
            "item itself expires sooner); an agent refuses them after that."
        ),
    )
    trace_url_template: str | None = Field(
        default=None,
        description=(
            "URL of a trace in your tracing backend, with {trace_id} where the id goes "
            "(e.g. http://127.0.0.1:16686/trace/{trace_id} for Jaeger); the UI links runs to it."
        ),
    )
    anonymous_role: Literal["viewer", "editor", "admin"] | None = Field(
        default=None,
        description=(
            "Role of user-API requests that send no token (they act on the default "
            "deployment). Unset: every request needs a token. For tests only (`tether dev` "
            "mints an admin token instead); the agent API always needs an agent token."
        ),
    )
    workspace_file: Path | None = Field(
        default=None,
        description=(
            "TOML file with [[locations]] tables (LocationConfig fields) seeding locations at "
            "startup: an entry applies when new or edited in the file (API removals and "
            "changes otherwise stand), and one load_location is queued per existing location. "
            "Relative working_directory/python_file are resolved against the file's directory."
        ),
    )
    work_lease_s: float = Field(
        default=60.0,
        gt=0,
        description="Lease of claimed work items when the agent asks for none (leaseSeconds <= 0).",
    )
    claim_recheck_s: float = Field(
        default=1.0,
        gt=0,
        description="While a claim long-polls, how often it rechecks the DB for expired leases.",
    )
    claim_max_wait_s: float = Field(
        default=60.0, ge=0, description="Upper bound of one claimWork long-poll, whatever asked."
    )
    run_monitor: bool = Field(
        default=True,
        description=(
            "Run the run monitor inside `serve`. Turn it off where it runs on its own "
            "(`tether controlplane daemons` or `run-monitor`); on PostgreSQL one process "
            "at a time leads it anyway."
        ),
    )
    run_monitor_interval_s: float = Field(
        default=10.0,
        gt=0,
        description="How often the run monitor looks for stuck runs (0 < interval).",
    )
    run_start_timeout_s: float = Field(
        default=180.0,
        gt=0,
        description="A run in STARTING longer than this is failed (its worker never started).",
    )
    worker_exit_grace_s: float = Field(
        default=60.0,
        gt=0,
        description=(
            "A run still unfinished this long after its launcher reported the worker exited "
            "is failed (the terminal event may lag the exit report by up to this much)."
        ),
    )
    worker_exit_backlog_max_s: float = Field(
        default=900.0,
        gt=0,
        description=(
            "After a clean worker exit, a run's terminal event may wait behind its agent's "
            "backlog: while the deployment's events are still being stored the run is not "
            "failed, up to this long after the exit."
        ),
    )
    launch_answer_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description=(
            "A run's launch_run item dispatched to the agent but answered by no launcher "
            "this long after it was queued is dispatched once more; unanswered this long "
            "after that, the run is failed (LAUNCH_FAILED) instead of waiting QUEUED "
            "forever, holding its slot. Above the longest a launch may wait for a "
            "cold-start slot."
        ),
    )
    run_health_interval_s: float = Field(
        default=120.0,
        gt=0,
        description=(
            "How often the run monitor asks the launcher whether each unfinished run's worker "
            "still runs (a worker that vanished without an exit report is then failed, and a "
            "CANCELING run whose worker is gone ends CANCELED)."
        ),
    )
    run_max_runtime_s: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Longest a run may stay STARTED (seconds) when it has no tether/max_runtime tag: "
            "the run monitor then fails it (RUN_TIMEOUT) and terminates its worker. Unset: "
            "no bound."
        ),
    )
    run_max_retries: int = Field(
        default=0,
        ge=0,
        le=100,
        description=(
            "Retries of a failed run that has no tether/max_retries tag (0: none). A retry "
            "is a new run linked to the failed one by parent and root run id."
        ),
    )
    run_retry_strategy: Literal["FROM_FAILURE", "ALL_STEPS"] = Field(
        default="FROM_FAILURE",
        description=(
            "Steps a retry runs when the run has no tether/retry_strategy tag: FROM_FAILURE "
            "(what did not succeed and everything downstream, reusing the other outputs) "
            "or ALL_STEPS."
        ),
    )
    run_retry_on_asset_or_op_failure: bool = Field(
        default=True,
        description=(
            "Whether a run that failed because a step (op or asset) failed is retried, when "
            "it has no tether/retry_on_asset_or_op_failure tag. False: only runs that "
            "failed for infrastructure reasons (the worker died or vanished, the launch "
            "failed, it never started) are retried."
        ),
    )
    daemons: bool = Field(
        default=True,
        description=(
            "Run the scheduler, sensor, backfill, run retrier, alert (and run coordinator) "
            "daemons inside `serve` (`serve --no-daemons` turns them and the run monitor off). On "
            "PostgreSQL each daemon runs in one process at a time, the holder of its advisory "
            "lock; the others stand by and take over when it dies."
        ),
    )
    migrate_on_start: bool | None = Field(
        default=None,
        description=(
            "Run the database migrations when `serve`, `daemons` or `run-monitor` starts "
            "(under the migration lock). Unset: yes on SQLite (one process, `tether dev`), "
            "no on PostgreSQL, where `tether controlplane migrate` runs them once (an init "
            "job) and a start against a database not migrated to this version fails, saying so."
        ),
    )
    leader_retry_s: float = Field(
        default=3.0,
        gt=0,
        description=(
            "PostgreSQL: how often a standby daemon retries the advisory lock that makes one "
            "process the leader of each daemon; it takes over within about this long after "
            "the leader's connection closes (a killed leader's closes at once)."
        ),
    )
    startup_load_window_s: float = Field(
        default=30.0,
        ge=0,
        description=(
            "A start queues a load of each workspace location unless one is still waiting for "
            "an agent or was queued this recently (several replicas starting together load "
            "once); a location whose workspace entry changed is always loaded."
        ),
    )
    daemon_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="How often the scheduler, sensor and backfill daemons check for work.",
    )
    schedule_catchup: Literal["latest", "all", "none"] = Field(
        default="latest",
        description=(
            "Catch-up policy of schedules that have none of their own (setScheduleCatchup): "
            "what happens to ticks missed while the scheduler was down. 'latest': only the "
            "newest missed tick runs; 'all': the newest schedule_max_catchup_ticks run; "
            "'none': none runs. Missed ticks that do not run are recorded SKIPPED. The "
            "default of deployments that set none (updateDeploymentSettings)."
        ),
    )
    schedule_max_catchup_ticks: int = Field(
        default=5,
        ge=1,
        le=500,
        description="With catch-up policy 'all', most missed ticks of a schedule that run.",
    )
    schedule_catchup_grace_s: float = Field(
        default=60.0,
        gt=0,
        description=(
            "A schedule tick the scheduler notices at most this late is on time; later "
            "ones were missed (downtime) and follow the catch-up policy."
        ),
    )
    tick_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description=(
            "A schedule or sensor tick whose evaluation no agent answered this long fails "
            "(TickTimeout); its work item expires with it."
        ),
    )
    backfill_max_in_flight: int = Field(
        default=10,
        ge=1,
        description="Most unfinished runs one backfill may have at once.",
    )
    max_concurrent_runs: int = Field(
        default=0,
        ge=0,
        description=(
            "Run queue: most runs of a deployment launched and unfinished at once; more wait "
            "QUEUED for the run coordinator. 0: no limit (runs launch as they are created). "
            "The default of deployments that set none (updateDeploymentSettings)."
        ),
    )
    run_tag_concurrency_limits: dict[str, int] = Field(
        default_factory=dict,
        description=(
            "Run queue: per-tag limits, 'key' (any value) or 'key=value' -> most unfinished "
            'launched runs carrying it, e.g. {"tether/backfill": 4}. JSON in the env var. '
            "The default of deployments that set none (updateDeploymentSettings)."
        ),
    )
    retention_days: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Default retention of `tether controlplane prune` run without --older-than: "
            "history older than this many days goes, in deployments that set no "
            "retention_days of their own (updateDeploymentSettings). Unset: only those "
            "deployments are pruned."
        ),
    )
    max_request_bytes: int = Field(
        default=16 * 1024 * 1024,
        gt=0,
        description=(
            "Largest request body of any route, counted while it streams; a larger one gets "
            "a 413, on /graphql a GraphQL error with extensions.code REQUEST_TOO_LARGE "
            "(nothing stored; retry in smaller batches)."
        ),
    )
    upload_max_items: int = Field(
        default=10_000,
        gt=0,
        description=(
            "Most items (events, results, log chunks, pointers) in one agent upload; more "
            "are refused as BAD_INPUT (a relay splits the batch)."
        ),
    )
    upload_max_item_bytes: int = Field(
        default=8 * 1024 * 1024,
        gt=0,
        description="Largest item of an agent upload (its JSON); a larger one is refused alone.",
    )
    work_max_lease_s: float = Field(
        default=3600.0,
        gt=0,
        description="Longest lease a claimWork may ask for (longer ones are shortened to it).",
    )
    run_tags_max_bytes: int = Field(
        default=64 * 1024,
        gt=0,
        description="Largest tags of a run (their JSON), refused at launchRun over it.",
    )
    run_config_max_bytes: int = Field(
        default=512 * 1024,
        gt=0,
        description=(
            "Largest run config of a run (its JSON), refused at launchRun over it. Whatever "
            "these limits, a run whose launch work item would exceed 768 KiB (NATS's 1 MiB "
            "message, with headroom) is refused on every path."
        ),
    )
    snapshot_max_bytes: int = Field(
        default=32 * 1024 * 1024,
        gt=0,
        description=(
            "Largest location snapshot a compressed load_location result may inflate to "
            "(inflation stops there); a larger one is refused as BAD_INPUT."
        ),
    )
    snapshots_per_request: int = Field(
        default=4,
        gt=0,
        description=(
            "Most successful load_location results (snapshots) in one submitResults "
            "request; more are refused as BAD_INPUT (a relay splits the batch)."
        ),
    )
    graphql_introspection: bool = Field(
        default=False,
        description=(
            "Answer GraphQL introspection (__schema, __type). Off in production; "
            "`tether dev` turns it on for GraphiQL."
        ),
    )
    graphiql: bool = Field(
        default=False,
        description="Serve the GraphiQL IDE on GET /graphql (`tether dev` turns it on).",
    )
    graphql_max_tokens: int = Field(
        default=5000,
        gt=0,
        description="Most lexical tokens in one GraphQL document (refused while parsing).",
    )
    graphql_max_depth: int = Field(
        default=20,
        gt=0,
        description=(
            "Deepest nesting of fields in one GraphQL operation (GraphiQL's introspection "
            "query nests about 15 deep; the API's own types less than 10)."
        ),
    )
    graphql_max_aliases: int = Field(
        default=50, ge=0, description="Most aliased fields in one GraphQL document."
    )
    graphql_max_cost: int = Field(
        default=1_000_000,
        gt=0,
        description=(
            "Cost budget of one GraphQL document: each field costs 1, and what a list "
            "field selects counts once per item it may return (its `limit` argument, else "
            "graphql_default_list_size)."
        ),
    )
    graphql_default_list_size: int = Field(
        default=10,
        gt=0,
        description="How many items the cost budget assumes of a list field without a limit.",
    )
    graphql_max_response_bytes: int = Field(
        default=64 * 1024 * 1024,
        gt=0,
        description=(
            "Largest GraphQL response body; a larger one is replaced by an error with "
            "extensions.code RESPONSE_TOO_LARGE (ask for less, or page)."
        ),
    )
    compute_logs_default_limit: int = Field(
        default=4 * 1024 * 1024,
        gt=0,
        description="Bytes per (step, stream) of a computeLogs answer that names no limit.",
    )
    compute_logs_max_limit: int = Field(
        default=8 * 1024 * 1024,
        gt=0,
        description="Largest computeLogs limit accepted (bytes per (step, stream)).",
    )
    compute_logs_response_bytes: int = Field(
        default=16 * 1024 * 1024,
        gt=0,
        description=(
            "Log bytes one GraphQL response may carry across all its computeLogs fields "
            "(aliases included); past it the answers are cut short, read on from nextOffset."
        ),
    )
    max_json_depth: int = Field(
        default=100,
        ge=2,
        description=(
            "Deepest nesting of arrays and objects accepted in a JSON request body (GraphQL "
            "and its variables); a deeper one is refused with 400 before anything runs."
        ),
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Host names (or host:port) the HTTP server answers, besides localhost, 127.0.0.1, "
            "[::1] and `host`; a request for any other Host gets 400 (this defeats DNS "
            'rebinding). Set the public name of a hosted control plane here; ["*"] allows any. '
            "JSON in the env var."
        ),
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description=(
            "Addresses or networks (CIDR) of reverse proxies whose X-Forwarded-Proto is "
            "believed (a TLS proxy says https, so cookies get Secure and HSTS is sent); "
            "the header is ignored from anyone else. JSON in the env var."
        ),
    )
    session_max_age_s: float = Field(
        default=12 * 3600.0,
        gt=0,
        description="A UI session ends this long after sign-in, however active (absolute expiry).",
    )
    session_idle_timeout_s: float = Field(
        default=3600.0,
        gt=0,
        description="A UI session unused this long ends (idle timeout).",
    )
    admin_token_file: Path | None = Field(
        default=None,
        description=(
            "Dev bootstrap (`tether dev`): if the file is missing, create an admin token of the "
            "default deployment and write it there (mode 0600); if it exists, register the "
            "token it holds. Only its hash is stored."
        ),
    )
    graceful_shutdown_timeout: float = Field(
        default=10.0, gt=0, description="Seconds open requests get to finish after SIGTERM."
    )
    public_url: str | None = Field(
        default=None,
        description=(
            "Public base URL of the web UI (https://tether.example.com): alerts link to the "
            "run, tick or location page under it. Unset: http://<host>:<port>."
        ),
    )
    alert_max_attempts: int = Field(
        default=6,
        ge=1,
        description=(
            "Attempts to deliver an alert (a failure a retry may cure) before it is FAILED."
        ),
    )
    alert_retry_base_s: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Wait before an alert's second attempt; each later one waits twice longer (jittered)."
        ),
    )
    alert_retry_max_s: float = Field(
        default=600.0, gt=0, description="Longest wait between two attempts of an alert."
    )
    alert_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds one alert delivery (HTTP request, SMTP session) may take.",
    )
    alert_egress_allow: list[str] = Field(
        default_factory=list,
        description=(
            "Non-public networks alerts may connect to (JSON list of CIDRs: an internal SMTP "
            'relay, a receiver in the VPC: ["10.1.2.0/24"]). Unset: alerts go only to public '
            "addresses; loopback, private, link-local (cloud metadata) and other internal "
            "addresses are refused, whatever a policy's URL or host resolves to."
        ),
    )
    alert_smtp_ca_file: Path | None = Field(
        default=None,
        description=(
            "CA bundle (PEM) the alert e-mails' SMTP TLS trusts (a private CA); unset: the "
            "system's."
        ),
    )

    @field_validator("alert_egress_allow")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ipaddress.ip_network(network.strip(), strict=False)
            except ValueError:
                raise ValueError(f"not an IP network (CIDR): {network!r}") from None
        return value

    @property
    def work_signing_key_path(self) -> Path:
        """Where the work signing key is (see ``work_signing_key_file``)."""
        if self.work_signing_key_file is not None:
            return self.work_signing_key_file
        url = make_url(self.database_url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return Path(url.database).parent / "work-signing.key"
        return Path(".tether/work-signing.key")

    @property
    def ui_base_url(self) -> str:
        """The base URL alert links start with (see ``public_url``)."""
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def migrates_on_start(self) -> bool:
        """Whether a start migrates (see ``migrate_on_start``)."""
        if self.migrate_on_start is not None:
            return self.migrate_on_start
        return make_url(self.database_url).get_backend_name() == "sqlite"

    @property
    def run_queue_enabled(self) -> bool:
        """Whether runs wait for the run coordinator (some concurrency limit is set)."""
        return self.max_concurrent_runs > 0 or bool(self.run_tag_concurrency_limits)
