"""The recorder-only gateway: a test addon standing in for token_gate/scope_guard, then the recorder.

It takes the identity from `X-Test-Sub` / `X-Test-Jti` headers (removed before forwarding) and
names the operation from the Cohere dialect and marks the bodies inspected (as leak_guard
would), so the recorder sees the metadata the real chain would give it.
"""

from __future__ import annotations

import os
import resource
import signal

from mitmproxy import http

from addon import meta
from addon.session_recorder import SessionRecorder
from jitgate.dialects import DEFAULT_ROUTES, match_route
from jitgate.token import Claims, Limits, Scope


class FakeGate:
    def request(self, flow: http.HTTPFlow) -> None:
        sub = flow.request.headers.pop("X-Test-Sub", None)
        jti = flow.request.headers.pop("X-Test-Jti", None)
        if sub and jti:
            meta.state_of(flow).claims = Claims(
                iss="https://broker.test",
                aud="jitgate",
                sub=sub,
                iat=0,
                nbf=0,
                exp=2**31,
                jti=jti,
                conn="cohere-test",
                scope=Scope(operations=("rerank",)),
                limits=Limits(),
                mask="default",
            )
        route = match_route(DEFAULT_ROUTES["cohere"], flow.request.method, flow.request.path)
        if route is not None:
            meta.state_of(flow).operation = route.operation
        meta.state_of(flow).decision = "allowed"
        meta.state_of(flow).inspected = ["request"]  # no leak_guard here: these test bodies hold nothing

    def response(self, flow: http.HTTPFlow) -> None:
        meta.state_of(flow).mark_inspected("response")


# A disk that fills up: JITGATE_TEST_FSIZE caps every file this process writes (EFBIG beyond).
if os.environ.get("JITGATE_TEST_FSIZE"):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = int(os.environ["JITGATE_TEST_FSIZE"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

# JITGATE_TEST_NO_RECORDER=1: the same gateway without the recorder (benchmark baseline).
addons = [FakeGate()] if os.environ.get("JITGATE_TEST_NO_RECORDER") else [FakeGate(), SessionRecorder()]
