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
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import boto3
from mitmproxy import exceptions
from mitmproxy.addonmanager import Loader

from jitgate.errors import PolicyError
from jitgate.inspect.stream import DEFAULT_WINDOW
from jitgate.policy import Policy, load_policy

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


OPTIONS: dict[str, Option] = {
    o.name: o
    for o in (
        # shared
        Option("jitgate_policy", str, "", "Path of the jitgate policy YAML (the same file the broker reads)."),
        Option("jitgate_table", str, "", "DynamoDB table shared with the broker (revocations, usage counters)."),
        Option(
            "jitgate_aws_endpoint", str, "", "AWS endpoint URL for local use (a moto server); empty means AWS itself."
        ),
        Option("jitgate_aws_region", str, "", "AWS region; empty means AWS_REGION / AWS_DEFAULT_REGION."),
        Option("jitgate_gateway_id", str, "", "This gateway's id in records, holds and object keys; empty: hostname."),
        Option(
            "jitgate_max_inspect_bytes", int, DEFAULT_MAX_INSPECT,
            "Largest decoded body the gateway inspects; larger bodies are refused with 413.",
        ),
        # token_gate
        Option("jitgate_jwks_url", str, "", "The broker's JWKS URL (https://<broker>/.well-known/jwks.json)."),
        Option(
            "jitgate_issuer", str, "",
            "Expected token `iss` (the broker URL); empty: the JWKS URL without its path.",
        ),
        Option("jitgate_revocation_refresh", str, "2", "Seconds between revocation list refreshes."),
        Option(
            "jitgate_revocation_staleness", str, "5",
            "Refuse every request (503) when the last good revocation refresh is older than this many seconds.",
        ),
        Option("jitgate_jwks_refetch_interval", str, "10", "Least seconds between JWKS refetches for an unknown kid."),
        Option(
            "jitgate_jwks_refresh", str, "300",
            "Seconds between routine JWKS refreshes; a key the broker dropped stops verifying cached tokens.",
        ),
        # scope_guard
        Option(
            "jitgate_usage_lease", int, DEFAULT_LEASE,
            "Uses of a token's max_requests a gateway reserves per DynamoDB update (1: one update per request).",
        ),
        # leak_guard
        Option(
            "jitgate_mask_key_secret", str, "",
            "Secrets Manager id of the HMAC key for masking tags; empty means a random key per process.",
        ),
        Option("jitgate_inspect_engine", str, "auto", "Detection engine: auto, hyperscan or re."),
        Option(
            "jitgate_pii_phone_regions", str, "",
            "Comma-separated regions (US,GB,JP,...) where a phone number without + is read; empty: the major ones.",
        ),
        Option(
            "jitgate_stream_window", int, DEFAULT_WINDOW,
            "Bytes held back when masking a streamed response (overlap window); the default exceeds the longest match.",
        ),
        # approval_hold
        Option(
            "jitgate_approval_timeout", str, "120",
            "Seconds (or '2m') a risky request waits for an approver before it is answered 403 approval_timeout.",
        ),
        Option(
            "jitgate_approval_poll", str, "1",
            "Seconds between reads of the shared table for this gateway's holds.",
        ),
        Option("jitgate_approval_topic", str, "", "SNS topic ARN told about new holds; empty: approvers list them."),
        Option(
            "jitgate_approval_max_held", int, 200,
            "Most requests this gateway holds at once; more are refused (503).",
        ),
        # credential_inject
        Option(
            "jitgate_secret_ttl", int, DEFAULT_SECRET_TTL,
            "Seconds an upstream secret is used before it is re-read.",
        ),
        Option("jitgate_upstream_ca", str, "", "PEM file of a private CA trusted upstream, besides the public roots."),
        # session_recorder
        Option("jitgate_bucket", str, "", "Audit bucket for session records; empty keeps them in the spool."),
        Option("jitgate_spool_dir", str, "", "Durable spool directory; empty means <confdir>/jitgate-spool."),
        Option("jitgate_sessions_prefix", str, "sessions/", "Key prefix of session objects in the bucket."),
        Option("jitgate_segment_bytes", int, 8 * 1024 * 1024, "Rotate a spool segment at this size."),
        Option("jitgate_segment_ms", int, 60_000, "Rotate a spool segment at this age (ms)."),
        Option("jitgate_fsync_ms", int, 1000, "Milliseconds between fsyncs of the open segment."),
        Option(
            "jitgate_spool_max_bytes", int, 1024 * 1024 * 1024,
            "Spool quota; when reached, flows are refused (503).",
        ),
        Option("jitgate_record_body_cap", int, 8192, "Bytes of each masked body kept in a record."),
        Option("jitgate_upload_backoff_max_ms", int, 30_000, "Longest wait (ms) between upload retries."),
        Option(
            "jitgate_audit_required", bool, True,
            "Refuse a flow (503 audit_unavailable) when its record cannot be written to the spool.",
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


@lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int) -> Policy:
    return load_policy(path)


def policy_from(path: str) -> Policy:
    """The validated policy at `path`; a missing or bad file is an OptionsError that stops the start."""
    if not path:
        raise options_error("jitgate_policy is required: the path of the policy YAML")
    try:
        mtime = Path(path).stat().st_mtime_ns
    except OSError as exc:
        raise options_error(f"jitgate_policy: cannot read {path}: {exc.strerror}") from None
    try:
        return _load(path, mtime)
    except PolicyError as exc:
        raise options_error(f"jitgate_policy: {exc.message}") from None


def region(value: str) -> str:
    return value or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def aws_client(service: str, *, endpoint: str, region_name: str) -> Any:
    """A boto3 client for `service`, pointed at `endpoint` when one is set (local moto server)."""
    return boto3.client(service, endpoint_url=endpoint or None, region_name=region(region_name))  # type: ignore[call-overload]
