"""gateway_probe: the gateway answers `jitgate run`'s check itself, before any token is asked for.

A request to `jitgate.gateway_check.PROBE_HOST` (under the reserved `.invalid` domain: no upstream
has that name, so nothing is ever forwarded for it) gets the broker issuer and the key ids the
token gate verifies tokens with, and whether those keys are loaded: public facts, the broker's
JWKS says as much. The CLI compares them with its broker's JWKS (jitgate/gateway_check.py). Any
other path on that host is 404 `not_found`. Placed before token_gate and scope_guard: a job has no
token yet, and no connection serves the probe host.
"""

from __future__ import annotations

import json

from mitmproxy import http

from addon import meta
from addon.respond import refuse
from addon.worker_health import WorkerParts
from jitgate.errors import NotFound
from jitgate.gateway_check import PROBE_HOST, PROBE_PATH, ProbeAnswer
from jitgate.policy import normalize_host


class GatewayProbe:
    def __init__(self, parts: WorkerParts) -> None:
        self._parts = parts  # read only: token_gate's verifier (its issuer and keys)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        """A tunnel to the probe host is opened here (scope_guard would refuse a host no connection
        serves); inside it this addon answers every request, so nothing in it reaches an upstream."""
        if not meta.refused(flow) and normalize_host(flow.request.host) == PROBE_HOST:
            flow.response = http.Response.make(200)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if meta.refused(flow) or normalize_host(flow.request.host) != PROBE_HOST:
            return
        if flow.request.method != "GET" or flow.request.path.split("?", 1)[0] != PROBE_PATH:
            refuse(flow, NotFound(f"the gateway answers GET {PROBE_PATH} on {PROBE_HOST} and nothing else"))
            return
        verifier = self._parts.verifier
        if verifier is None:  # no token gate in this chain: no key a token could be checked with
            answer = ProbeAnswer("", frozenset(), False)
        else:
            answer = ProbeAnswer(verifier.issuer, verifier.keys.kids(), verifier.keys_loaded)
        headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
        flow.response = http.Response.make(200, json.dumps(answer.to_json()).encode(), headers)
