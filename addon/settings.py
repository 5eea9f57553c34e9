"""Every jitgate option, declared once, and what the addons share: the policy, AWS clients.

`OPTIONS` is the one table of the gateway's options: name, type, default and help. An addon calls
`add_options(loader, *names)` from its `load()` for the options it reads (mitmproxy accepts the
same option declared twice with the same signature), so any subset of the chain runs on its own
and no addon reads an option another addon owns: the options belong to this module.
Durations are strings (mitmproxy's `--set` cannot parse floats) read by `jitgate.durations`, or
integer milliseconds where the name ends in `_ms`.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
from botocore.config import Config as BotoConfig
from mitmproxy import exceptions
from mitmproxy.addonmanager import Loader

from jitgate import durations
from jitgate import option_checks as checks
from jitgate.errors import PolicyError
from jitgate.inspect.stream import DEFAULT_WINDOW
from jitgate.policy import Policy
from jitgate.policy_source import S3_SCHEME, PolicySource
from jitgate.token import KeySet

DEFAULT_MAX_INSPECT = 16 * 1024 * 1024
DEFAULT_SECRET_TTL = 300
DEFAULT_LEASE = 16
DEFAULT_UPSTREAM_TIMEOUT = "60s"


@dataclass(frozen=True)
class Option:
    name: str
    typespec: type
    default: Any
    help: str
    check: Callable[[Any, str], Any] = checks.as_is  # the typed value, or ValueError with the message


OPTIONS: dict[str, Option] = {
    o.name: o
    for o in (
        # shared
        Option(
            "jitgate_policy", str, "",
            "The jitgate policy YAML (the same file the broker reads): a path or s3://bucket/key.",
        ),
        # policy_refresh
        Option(
            "jitgate_policy_refresh", str, "30",
            "Seconds (or '1m') between checks of the policy's version (file mtime, S3 ETag); 0: never re-read.",
            check=checks.seconds(zero_ok=True),
        ),
        Option("jitgate_table", str, "", "DynamoDB table shared with the broker (revocations, usage counters)."),
        Option(
            "jitgate_aws_endpoint", str, "", "AWS endpoint URL for local use (a moto server); empty means AWS itself."
        ),
        Option("jitgate_aws_region", str, "", "AWS region; empty means AWS_REGION / AWS_DEFAULT_REGION."),
        Option("jitgate_gateway_id", str, "", "This gateway's id in records, holds and object keys; empty: hostname.",
            check=checks.plain_name),
        Option(
            "jitgate_max_inspect_bytes", int, DEFAULT_MAX_INSPECT,
            "Largest decoded body the gateway inspects; larger bodies are refused with 413.",
            check=checks.at_least(1024),
        ),
        # token_gate
        Option("jitgate_jwks_url", str, "", "The broker's JWKS URL (https://<broker>/.well-known/jwks.json).",
            check=checks.http_url("the broker's")),
        Option(
            "jitgate_issuer", str, "",
            "Expected token `iss` (the broker URL); empty: the JWKS URL without its path.",
        ),
        Option("jitgate_revocation_refresh", str, "2", "Seconds between revocation list refreshes.",
            check=checks.seconds()),
        Option(
            "jitgate_revocation_staleness", str, "5",
            "Refuse every request (503) when the last good revocation refresh is older than this many seconds.",
            check=checks.seconds(),
        ),
        Option("jitgate_jwks_refetch_interval", str, "10", "Least seconds between JWKS refetches for an unknown kid.",
            check=checks.seconds(zero_ok=True)),
        Option(
            "jitgate_jwks_refresh", str, "300",
            "Seconds between routine JWKS refreshes; a key the broker dropped stops verifying cached tokens.",
            check=checks.seconds(),
        ),
        # scope_guard
        Option(
            "jitgate_usage_lease", int, DEFAULT_LEASE,
            "Uses of a token's max_requests a gateway reserves per DynamoDB update (1: one update per request).",
            check=checks.between(1, 1000),
        ),
        # leak_guard
        Option(
            "jitgate_mask_key_secret", str, "",
            "Secrets Manager id of the HMAC key for masking tags; empty means a random key per process.",
        ),
        Option("jitgate_inspect_engine", str, "auto", "Detection engine: auto, hyperscan or re.",
            check=checks.one_of("auto", "hyperscan", "re")),
        Option(
            "jitgate_pii_phone_regions", str, "",
            "Comma-separated regions (US,GB,JP,...) where a phone number without + is read; empty: the major ones.",
            check=checks.upper_list,
        ),
        Option(
            "jitgate_stream_window", int, DEFAULT_WINDOW,
            "Bytes held back when masking a streamed response (overlap window); the default exceeds the longest match.",
            check=checks.between(256, 1 << 20),
        ),
        # approval_hold
        Option(
            "jitgate_approval_timeout", str, "120",
            "Seconds (or '2m') a risky request waits for an approver before it is answered 403 approval_timeout.",
            check=checks.seconds(),
        ),
        Option(
            "jitgate_approval_poll", str, "1",
            "Seconds between reads of the shared table for this gateway's holds.", check=checks.seconds(),
        ),
        Option("jitgate_approval_topic", str, "", "SNS topic ARN told about new holds; empty: approvers list them.",
            check=checks.arn("SNS topic")),
        Option(
            "jitgate_approval_max_held", int, 200,
            "Most requests this gateway holds at once; more are refused (503).", check=checks.at_least(1),
        ),
        # credential_inject
        Option(
            "jitgate_secret_ttl", int, DEFAULT_SECRET_TTL,
            "Seconds an upstream secret is used before it is re-read.", check=checks.at_least(1, " second"),
        ),
        Option("jitgate_upstream_ca", str, "", "PEM file of a private CA trusted upstream, besides the public roots."),
        # graceful_stop
        Option(
            "jitgate_drain_timeout", str, "30s",
            "At SIGTERM, how long flows in flight may take to finish before the spool ships and the gateway exits.",
            check=checks.seconds(zero_ok=True),
        ),
        # session_recorder
        Option("jitgate_bucket", str, "", "Audit bucket for session records; empty keeps them in the spool."),
        Option("jitgate_spool_dir", str, "", "Durable spool directory; empty means <confdir>/jitgate-spool."),
        Option(
            "jitgate_durable_spool", str, "",
            "Directory shared by the fleet (EFS) that outlives a task: segments a stop could not ship move "
            "there, and every gateway ships what others left there; empty: none.",
        ),
        Option("jitgate_sessions_prefix", str, "sessions/", "Key prefix of session objects in the bucket."),
        Option("jitgate_segment_bytes", int, 8 * 1024 * 1024, "Rotate a spool segment at this size.",
            check=checks.positive),
        Option("jitgate_segment_ms", int, 60_000, "Rotate a spool segment at this age (ms).", check=checks.positive),
        Option("jitgate_fsync_ms", int, 1000, "Milliseconds between fsyncs of the open segment.",
            check=checks.positive),
        Option(
            "jitgate_spool_max_bytes", int, 1024 * 1024 * 1024,
            "Spool quota; when reached, flows are refused (503).", check=checks.positive,
        ),
        Option("jitgate_record_body_cap", int, 8192, "Bytes of each masked body kept in a record.",
            check=checks.positive),
        Option("jitgate_upload_backoff_max_ms", int, 30_000, "Longest wait (ms) between upload retries.",
            check=checks.positive),
        Option(
            "jitgate_ship_timeout", str, "60s",
            "At exit, how long the recorder goes on shipping the spool (segments left are shipped at the next start).",
            check=checks.seconds(),
        ),
        Option(
            "jitgate_audit_required", bool, True,
            "Refuse a flow (503 audit_unavailable) when its record cannot be written to the spool.",
        ),
        # pg_listener
        Option(
            "jitgate_pg_listen", str, "",
            "HOST:PORT of the Postgres listener (TLS, the JIT token as password); empty: no Postgres path.",
        ),
        # reuse_port, metrics (issue 22: workers, metrics and health)
        Option(
            "jitgate_reuse_port", bool, False,
            "The metrics port with SO_REUSEPORT, shared by the workers of jitgate gateway --workers N.",
        ),
        Option(
            "jitgate_metrics_port", int, -1,
            "Port of /metrics, /healthz and /readyz (shared by the workers); -1: off, 0: any free port.",
        ),
        Option("jitgate_metrics_host", str, "127.0.0.1", "Address of the metrics and health endpoint."),
        # upstream_timeout
        Option(
            "jitgate_upstream_timeout", str, DEFAULT_UPSTREAM_TIMEOUT,
            "How long the gateway waits for the upstream's response headers after sending a request "
            "(60s, 1500ms, 2.5); then the client gets 504 upstream_timeout and the upstream connection is closed.",
            check=checks.seconds(units=("ms", "s"), at_most=3600.0),
        ),
    )
}
SHARED = frozenset({"jitgate_policy", "jitgate_table", "jitgate_aws_endpoint", "jitgate_aws_region"})


def add_options(loader: Loader, *names: str) -> None:
    """Declare the options `names` (as `OPTIONS` says) for an addon that reads them."""
    for name in names:
        option = OPTIONS[name]
        loader.add_option(option.name, option.typespec, option.default, option.help)


def options_error(message: str) -> exceptions.OptionsError:
    """The error mitmproxy shows when an option is bad; it stops `mitmdump` at start."""
    return exceptions.OptionsError(message)  # type: ignore[no-untyped-call]


_POLICY_AWS: list[AwsClients] = []  # one factory for the policy's S3 reads, made on first use


def _s3_for_policy() -> Any:
    from mitmproxy import ctx

    if not _POLICY_AWS:
        _POLICY_AWS.append(AwsClients())
    return _POLICY_AWS[0].client("s3", ctx.options)


# One per process: every addon runs on the same policy, and addon/policy_refresh.py replaces it.
POLICIES = PolicySource(_s3_for_policy)


def policy_from(location: str) -> Policy:
    """The policy in use at `location` (a file or s3://bucket/key); a file that changed is read again.

    Missing, unreadable or invalid: an OptionsError, which stops the start (or refuses the option
    change). Changes while running are picked up by addon/policy_refresh.py, which keeps the last
    good policy when a new version is bad.
    """
    if not location:
        raise options_error("jitgate_policy is required: the policy YAML, a file or s3://bucket/key")
    try:
        if not location.startswith(S3_SCHEME):
            POLICIES.refresh(location)  # a stat: an edited file is read at the next configure
        return POLICIES.current(location).policy
    except PolicyError as exc:
        raise options_error(f"jitgate_policy: {exc.message}") from None


def seconds(value: str, name: str, *, zero_ok: bool = False) -> float:
    """Seconds from the duration option `name` (`120`, `0.5`, `2m`: jitgate.durations); a bad one stops the start."""
    try:
        return durations.parse_seconds(value, zero_ok=zero_ok)
    except ValueError as exc:
        raise options_error(f"{name}: {exc}") from None


JWKS_PATH = "/.well-known/jwks.json"


def fetch_jwks(url: str) -> KeySet:
    """The broker's JWKS (blocking; called from a worker thread): token_gate's default fetcher."""
    resp = httpx.get(url, timeout=3.0, follow_redirects=False)
    resp.raise_for_status()
    return KeySet.from_jwks(resp.json())


def broker_keys(opts: Any) -> tuple[str, str]:
    """The broker's JWKS URL and the token issuer from the options; a bad pair stops the start."""
    url = str(opts.jitgate_jwks_url)
    if not url.startswith(("https://", "http://")):
        raise options_error("jitgate_jwks_url must be the broker's http(s) JWKS URL")
    issuer = opts.jitgate_issuer or (url.removesuffix(JWKS_PATH) if url.endswith(JWKS_PATH) else "")
    if not issuer:
        raise options_error("jitgate_issuer is required when the JWKS URL does not end in " + JWKS_PATH)
    return url, str(issuer)


def region(value: str) -> str:
    return value or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


class AwsClients:
    """The one factory of the gateway's AWS clients: one boto3 client per service, endpoint and
    region, built on first use (at `configure`, so after a test's `mock_aws` started) and shared
    by every addon handed this object (addon/jitgate_addons.py hands one to the whole chain).
    An addon built without one gets its own. boto3 clients are thread-safe; building one is not,
    hence the lock. `config` (timeouts, retries) applies when the client is first built."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, str, str], Any] = {}
        self._lock = threading.Lock()

    def client(self, service: str, opts: Any, *, config: BotoConfig | None = None) -> Any:
        """The client of `service` for the options' `jitgate_aws_endpoint` / `jitgate_aws_region`
        (pointed at a local moto server when an endpoint is set)."""
        key = (service, opts.jitgate_aws_endpoint or "", region(opts.jitgate_aws_region))
        with self._lock:
            made = self._clients.get(key)
            if made is None:
                made = self._clients[key] = boto3.client(  # type: ignore[call-overload]
                    service, endpoint_url=key[1] or None, region_name=key[2], config=config
                )
        return made


# -- each addon's options, read and checked in one place ---------------------------------------


def value(opts: Any, name: str) -> Any:
    """Option `name` of `opts` as its `OPTIONS` entry parses and checks it; a bad one stops the start."""
    try:
        return OPTIONS[name].check(getattr(opts, name), name)
    except ValueError as exc:
        raise options_error(str(exc)) from None


def _required(opts: Any, name: str, why: str) -> str:
    try:
        return checks.required(getattr(opts, name), name, why)
    except ValueError as exc:
        raise options_error(str(exc)) from None


@dataclass(frozen=True)
class TokenGateSettings:
    NAMES = (
        *sorted(SHARED), "jitgate_jwks_url", "jitgate_issuer", "jitgate_revocation_refresh",
        "jitgate_revocation_staleness", "jitgate_jwks_refetch_interval", "jitgate_jwks_refresh",
    )
    policy: Policy
    table: str
    jwks_url: str
    issuer: str
    revocation_refresh: float
    revocation_staleness: float
    jwks_refetch_interval: float
    jwks_refresh: float


def token_gate(opts: Any, jwks_path: str) -> TokenGateSettings:
    """token_gate's options; the issuer defaults to the JWKS URL without `jwks_path`."""
    policy = policy_from(opts.jitgate_policy)
    url = value(opts, "jitgate_jwks_url")
    issuer = opts.jitgate_issuer or (url.removesuffix(jwks_path) if url.endswith(jwks_path) else "")
    if not issuer:
        raise options_error("jitgate_issuer is required when the JWKS URL does not end in " + jwks_path)
    table = _required(opts, "jitgate_table", "revocations are read from it")
    refresh = value(opts, "jitgate_revocation_refresh")
    staleness = value(opts, "jitgate_revocation_staleness")
    refetch = value(opts, "jitgate_jwks_refetch_interval")
    jwks_refresh = value(opts, "jitgate_jwks_refresh")
    if staleness <= refresh:
        raise options_error("jitgate_revocation_staleness must be longer than jitgate_revocation_refresh")
    return TokenGateSettings(policy, table, url, issuer, refresh, staleness, refetch, jwks_refresh)


@dataclass(frozen=True)
class ScopeGuardSettings:
    NAMES = (*sorted(SHARED), "jitgate_usage_lease", "jitgate_max_inspect_bytes")
    lease: int
    policy: Policy
    table: str


def scope_guard(opts: Any) -> ScopeGuardSettings:
    lease = value(opts, "jitgate_usage_lease")
    policy = policy_from(opts.jitgate_policy)
    return ScopeGuardSettings(lease, policy, _required(opts, "jitgate_table", "per-token request counters live in it"))


@dataclass(frozen=True)
class LeakGuardSettings:
    NAMES = (
        *sorted(SHARED), "jitgate_max_inspect_bytes", "jitgate_mask_key_secret", "jitgate_inspect_engine",
        "jitgate_pii_phone_regions", "jitgate_stream_window",
    )
    max_bytes: int
    window: int
    engine: str
    policy: Policy
    phone_regions: tuple[str, ...]
    mask_key_secret: str


def leak_guard(opts: Any) -> LeakGuardSettings:
    max_bytes = value(opts, "jitgate_max_inspect_bytes")
    window = value(opts, "jitgate_stream_window")
    engine = value(opts, "jitgate_inspect_engine")
    policy = policy_from(opts.jitgate_policy)
    regions = value(opts, "jitgate_pii_phone_regions")
    return LeakGuardSettings(max_bytes, window, engine, policy, regions, opts.jitgate_mask_key_secret)


@dataclass(frozen=True)
class ApprovalHoldSettings:
    NAMES = (
        *sorted(SHARED), "jitgate_approval_timeout", "jitgate_approval_poll", "jitgate_approval_topic",
        "jitgate_approval_max_held", "jitgate_gateway_id",
    )
    policy: Policy
    table: str
    timeout: float
    poll: float
    topic: str
    max_held: int
    gateway: str  # empty: the addon's own default


def approval_hold(opts: Any) -> ApprovalHoldSettings:
    policy = policy_from(opts.jitgate_policy)
    table = _required(opts, "jitgate_table", "holds are written to it")
    timeout = value(opts, "jitgate_approval_timeout")
    poll = value(opts, "jitgate_approval_poll")
    if poll >= timeout:
        raise options_error("jitgate_approval_poll must be shorter than jitgate_approval_timeout")
    topic = value(opts, "jitgate_approval_topic")
    max_held = value(opts, "jitgate_approval_max_held")
    gateway = value(opts, "jitgate_gateway_id") if "jitgate_gateway_id" in opts else ""
    return ApprovalHoldSettings(policy, table, timeout, poll, topic, max_held, gateway)


@dataclass(frozen=True)
class SessionRecorderSettings:
    NAMES = (
        *sorted(SHARED), "jitgate_audit_required", "jitgate_bucket", "jitgate_fsync_ms", "jitgate_gateway_id",
        "jitgate_record_body_cap", "jitgate_segment_bytes", "jitgate_segment_ms", "jitgate_sessions_prefix",
        "jitgate_spool_dir", "jitgate_spool_max_bytes", "jitgate_upload_backoff_max_ms", "jitgate_ship_timeout",
        "jitgate_durable_spool",
    )
    gateway: str
    directory: Path
    durable: Path | None
    bucket: str
    prefix: str
    segment_bytes: int
    segment_seconds: float
    fsync_seconds: float
    spool_max_bytes: int
    body_cap: int
    backoff_max_seconds: float
    audit_required: bool
    ship_timeout: float


def durable_spool(opts: Any, spool: Path) -> Path | None:
    """`jitgate_durable_spool` (None: none), which must neither hold nor lie in `spool`."""
    durable = Path(opts.jitgate_durable_spool).expanduser() if opts.jitgate_durable_spool else None
    if durable is not None:
        live, shared = spool.resolve(), durable.resolve()
        if live.is_relative_to(shared) or shared.is_relative_to(live):
            # An adopter would take the live spool's directories for stopped gateways' leftovers.
            raise options_error("jitgate_durable_spool must be outside jitgate_spool_dir (and not hold it)")
    return durable


def session_recorder(opts: Any) -> SessionRecorderSettings:
    """session_recorder's options; the spool defaults to <confdir>/jitgate-spool, the gateway id to the host name."""
    counts = {
        name: value(opts, name)
        for name in (
            "jitgate_segment_bytes", "jitgate_spool_max_bytes", "jitgate_record_body_cap",
            "jitgate_segment_ms", "jitgate_fsync_ms", "jitgate_upload_backoff_max_ms",
        )
    }
    gateway = value(opts, "jitgate_gateway_id") or socket.gethostname()
    try:
        gateway = checks.plain_name(gateway, "jitgate_gateway_id")
    except ValueError as exc:
        raise options_error(str(exc)) from None
    directory = Path(opts.jitgate_spool_dir or os.path.join(os.path.expanduser(opts.confdir), "jitgate-spool"))
    durable = durable_spool(opts, directory)
    return SessionRecorderSettings(
        gateway=gateway,
        directory=directory,
        durable=durable,
        bucket=opts.jitgate_bucket,
        prefix=opts.jitgate_sessions_prefix,
        segment_bytes=counts["jitgate_segment_bytes"],
        segment_seconds=counts["jitgate_segment_ms"] / 1000,
        fsync_seconds=counts["jitgate_fsync_ms"] / 1000,
        spool_max_bytes=counts["jitgate_spool_max_bytes"],
        body_cap=counts["jitgate_record_body_cap"],
        backoff_max_seconds=counts["jitgate_upload_backoff_max_ms"] / 1000,
        audit_required=opts.jitgate_audit_required,
        ship_timeout=value(opts, "jitgate_ship_timeout"),
    )
