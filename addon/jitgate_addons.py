"""The jitgate addon chain, for `mitmdump -s addon/jitgate_addons.py`.

Order matters (DESIGN.md, addon/meta.py): each request hook skips flows an earlier addon
answered; response hooks run in the same order. Every addon is wrapped by
`fail_closed` (addon/failsafe.py): a hook that raises refuses its flow instead of letting
mitmproxy skip the rest of the chain and forward it.
"""

from __future__ import annotations

from addon import mitmproxy_compat
from addon.approval_hold import ApprovalHold
from addon.credential_inject import CredentialInject, CredentialRetry
from addon.failsafe import fail_closed
from addon.flow_metadata import FlowMetadata
from addon.gateway_probe import GatewayProbe
from addon.gc_freeze import GcFreeze
from addon.graceful_stop import GracefulStop
from addon.http_only import HttpOnly
from addon.leak_guard import LeakGuard
from addon.log_json import FlowLog, LogJson
from addon.metrics import Metrics
from addon.pg_listener import PgListener
from addon.policy_refresh import PolicyRefresh
from addon.scope_guard import ScopeGuard
from addon.session_recorder import SessionRecorder
from addon.settings import AwsClients
from addon.token_gate import TokenGate
from addon.upstream_sni import UpstreamSni
from addon.upstream_timeout import UpstreamTimeout
from addon.worker_health import WorkerParts

# Before anything logs: JSON log lines with nothing of the traffic, mitmdump's flow output kept off.
log_json = LogJson()
# mitmproxy's own 502/413/400 answers as JSON, raw relays parsed as HTTP, upstreams closable, and a
# cheaper event dispatch: each checked against the mitmproxy it was written for. Where a needed one
# differs this raises, and mitmdump exits at start ("error logged during startup").
mitmproxy_compat.install()

# First: the gateway forwards inspected HTTP only (no raw relays, no protocol upgrades).
http_only = fail_closed(HttpOnly())
# The upstream TLS name comes from the policy; a client naming another host than its tunnel is refused.
upstream_sni = fail_closed(UpstreamSni())
# One AWS client per service for the whole chain (one DynamoDB client for revocations, usage
# counters and holds), built when the options are first configured.
aws = AwsClients()
# The parts other addons read (the verifier, the revocation list, the secret cache, the holds, the
# spool, the scanner): each published by the addon that owns it, read by gateway_probe, metrics and
# pg_listener. No addon is handed another addon.
parts = WorkerParts()
token_gate = fail_closed(TokenGate(aws=aws, parts=parts))
# `jitgate run`'s check (issue 25): answered by the gateway itself, before a token is asked for.
gateway_probe = fail_closed(GatewayProbe(parts))
credential_inject = fail_closed(CredentialInject(aws=aws, parts=parts))
# A Chroma collection id it has not seen in an answer is looked up at the store with the credential.
scope_guard = fail_closed(ScopeGuard(aws=aws, lookup=credential_inject.store_lookup))
# approval_hold follows: findings whose action is `review` are held, not blocked.
leak_guard = fail_closed(LeakGuard(review_held=True, aws=aws, parts=parts))
approval_hold = fail_closed(ApprovalHold(aws=aws, parts=parts))
# Its retry after a 401 comes before the response checks, so they run on the answer the client gets.
credential_retry = fail_closed(CredentialRetry(credential_inject))
# At SIGTERM: stop accepting, let flows in flight finish (their records written), then the recorder ships.
graceful_stop = fail_closed(GracefulStop())
session_recorder = fail_closed(SessionRecorder(aws=aws, parts=parts))
# Last: its timer starts once every request hook (and any approval hold) is through.
upstream_timeout = fail_closed(UpstreamTimeout())

# Issue 22: counts every flow after the chain is through; serves /metrics, /healthz, /readyz.
metrics = Metrics(parts)

addons = [
    log_json, PolicyRefresh(), http_only, upstream_sni, gateway_probe,
    token_gate, credential_retry, scope_guard, leak_guard, approval_hold, credential_inject, graceful_stop,
    session_recorder,
    upstream_timeout,
    FlowLog(),  # one JSON line per refused or failed flow (after every other hook decided)
    metrics,  # last flow hooks: after every request and response hook of the chain
    FlowMetadata(),  # after every flow hook: the flow's state into flow.metadata, for flow files
    # The Postgres path: a listener of its own on this event loop (no flow hooks; off unless jitgate_pg_listen).
    PgListener(aws=aws, scanner=lambda: parts.scanner),  # the HTTP path's scanner: the same tags
    GcFreeze(),  # no flow hooks: start-up heap out of the cyclic GC's full scans
]
