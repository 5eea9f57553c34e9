"""leak_guard: secrets and PII are found in requests and responses; leaking requests are blocked.

Request (after scope_guard, before the credential is injected): headers that carry the caller's
own credential are left to credential_inject; the URL, the other headers and the decoded body
are scanned. Per the token's masking profile, a secret blocks with 403 `leak_blocked` (types
and places, never the value) and PII is masked or blocks. Response: secrets, the injected
credential and PII are masked; `text/event-stream` and bodies without a length are masked
chunk by chunk with an overlap window. A request body over `jitgate_max_inspect_bytes` gets 413;
a response that decodes past it (a decompression bomb from the upstream, sized before it is
decoded) is replaced by 502 `upstream_response_too_large`, and a streamed one is decoded a piece
at a time and cut at the limit (upstream closed, client connection ended). Nothing goes out
unscanned. Every finding goes into the flow's state (`FlowState.findings`), so into its record.
"""

from __future__ import annotations

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader

from addon import body as bodies
from addon import flow_scan, meta, response_masking, scanner_setup, settings, worker_health
from addon.respond import refuse
from jitgate import jsontext, leaks
from jitgate.errors import LeakBlocked, PayloadTooLarge
from jitgate.flow_state import Side
from jitgate.inspect import Scanner, actions
from jitgate.inspect.stream import DEFAULT_WINDOW
from jitgate.masked_stream import MaskStream
from jitgate.policy import MaskProfile, Policy
from jitgate.records import Decision


class LeakGuard:
    """`review_held`: the chain holds requests for review after this addon (approval_hold, as
    addon/jitgate_addons.py builds it); otherwise a finding whose action is `review` blocks, as
    nobody can hold it (fail closed)."""

    def __init__(
        self, scanner: Scanner | None = None, *, review_held: bool = False, aws: settings.AwsClients | None = None,
        parts: worker_health.WorkerParts | None = None,
    ) -> None:
        self._aws, self._parts = aws or settings.AwsClients(), parts
        self._given = scanner
        self.review_held = review_held
        self.scanner: Scanner | None = scanner
        self.policy: Policy | None = None
        self.max_bytes = settings.DEFAULT_MAX_INSPECT
        self.window = DEFAULT_WINDOW

    def load(self, loader: Loader) -> None:
        settings.add_options(loader, *settings.LeakGuardSettings.NAMES)

    def configure(self, updated: set[str]) -> None:
        if not updated & set(settings.LeakGuardSettings.NAMES):
            return
        opts = ctx.options
        s = settings.leak_guard(opts)
        self.max_bytes, self.window, self.policy = s.max_bytes, s.window, s.policy
        if "jitgate_max_inspect_bytes" in updated:
            scanner_setup.bound_body_size(opts, self.max_bytes)
        if self._given is None and updated & {
            "jitgate_mask_key_secret", "jitgate_inspect_engine", "jitgate_pii_phone_regions"
        }:
            self.scanner = scanner_setup.build_scanner(self._aws, s)
            worker_health.publish(self._parts, scanner=self.scanner)  # the Postgres path's, too: the same tags

    # -- reading the flow, applying the answers -----------------------------------------------

    def _profile(self, flow: http.HTTPFlow) -> MaskProfile:
        state = meta.state_of(flow)
        return leaks.profile_for(self.policy, state.claims, state.connection_in(self.policy), flow.request.pretty_host)

    def _plan(self, flow: http.HTTPFlow, side: Side) -> actions.Plan:
        return actions.plan(self._profile(flow), side)

    # -- hooks ------------------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if meta.refused(flow):
            return
        length = flow.request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            refuse(flow, PayloadTooLarge(f"the request body exceeds the inspection limit of {self.max_bytes} bytes"))

    def request(self, flow: http.HTTPFlow) -> None:
        if self.scanner is None:
            return
        if meta.refused(flow):
            flow_scan.mask_refused(self.scanner, flow, self._plan(flow, "request"), self.max_bytes)
            return
        plan, req, state = self._plan(flow, "request"), flow.request, meta.state_of(flow)
        body = flow_scan.decoded(req, self.max_bytes)
        if isinstance(body, str):
            refuse(flow, leaks.unreadable_request(body, self.max_bytes))
            return
        text = bodies.text(flow, "request")
        if text.problem is not None:
            refuse(flow, jsontext.refusal(text.problem))
            return
        found = flow_scan.scan_headers(self.scanner, flow, req, "request", plan)
        target = flow_scan.scan_target(self.scanner, flow, plan)
        result = flow_scan.scan_body(self.scanner, flow, plan, "request.body", body, text.json_text)
        found += target.findings + result.findings
        verdict = leaks.request_verdict(
            plan, found, target_unmaskable=bool(target.findings and not target.edits), review_held=self.review_held
        )
        state.mark_inspected("request")
        if verdict == "block":
            message = "the request carries secrets or personal data; nothing was forwarded"
            refuse(flow, LeakBlocked(message), extra={"findings": [leaks.public(r) for r in state.findings]})
            return
        if target.edits:
            req.path = leaks.masked_text(target, req.path)
        if result.edits:
            req.content = result.masked(body)
        if verdict == "mask":
            state.decision = Decision.MASKED

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        resp, state = flow.response, meta.state_of(flow)
        if resp is None or state.error is not None or self.scanner is None or not response_masking.streamed(resp):
            return
        response_masking.start(
            flow, resp, self.scanner, lambda: self._plan(flow, "response"), max_bytes=self.max_bytes,
            window=self.window,
        )

    def response(self, flow: http.HTTPFlow) -> None:
        try:
            self._response(flow)
        finally:
            # The injected credential stays in memory no longer than needed (a 401 retry sets it again).
            meta.state_of(flow).injected_secret = None

    def error(self, flow: http.HTTPFlow) -> None:
        response_masking.ended_early(flow)

    def _response(self, flow: http.HTTPFlow) -> None:
        resp, state = flow.response, meta.state_of(flow)
        if resp is None or self.scanner is None:
            return
        plan = self._plan(flow, "response")
        stream, state.stream = state.stream, None
        if isinstance(stream, MaskStream):
            response_masking.finish(flow, resp, stream, plan)
        elif state.error is None:  # not the gateway's own answer
            response_masking.mask_whole(self.scanner, flow, resp, plan, self.max_bytes)


addons = [LeakGuard()]
