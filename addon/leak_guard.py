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

import logging
import secrets

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader
from mitmproxy.utils import human

from addon import body as bodies
from addon import meta, settings
from addon.mitmproxy_compat import close_upstream
from addon.respond import refuse
from jitgate import jsontext, leaks
from jitgate.digest import blank_vectors
from jitgate.errors import JitgateError, LeakBlocked, PayloadTooLarge, UpstreamResponseNotUtf8
from jitgate.flow_state import Side
from jitgate.inspect import Scanner, StreamMasker, actions
from jitgate.inspect.masking import Finding
from jitgate.inspect.scanner import ScanResult
from jitgate.inspect.stream import DEFAULT_WINDOW
from jitgate.masked_stream import MaskStream, decompressor
from jitgate.policy import MaskProfile, Policy
from jitgate.records import Decision

logger = logging.getLogger(__name__)


class LeakGuard:
    """`review_held`: the chain holds requests for review after this addon (approval_hold, as
    addon/jitgate_addons.py builds it); otherwise a finding whose action is `review` blocks, as
    nobody can hold it (fail closed)."""

    def __init__(
        self, scanner: Scanner | None = None, *, review_held: bool = False, aws: settings.AwsClients | None = None
    ) -> None:
        self._aws = aws or settings.AwsClients()
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
            # A body refused in `requestheaders` is still read into memory whole by mitmproxy; past
            # twice the limit mitmproxy itself refuses it (413) before reading it, so memory stays bounded.
            bound = 2 * self.max_bytes
            has_limit = "body_size_limit" in opts  # absent when this addon runs without mitmproxy's own
            current = human.parse_size(opts.body_size_limit) if has_limit and opts.body_size_limit else None
            if has_limit and (current is None or current > bound):
                ctx.options.update(body_size_limit=str(bound))  # type: ignore[no-untyped-call]
        if self._given is None and updated & {
            "jitgate_mask_key_secret", "jitgate_inspect_engine", "jitgate_pii_phone_regions"
        }:
            try:
                self.scanner = Scanner(
                    self._mask_key(s.mask_key_secret), engine=s.engine, phone_regions=list(s.phone_regions) or None
                )
            except RuntimeError as exc:  # hyperscan asked for but missing
                raise settings.options_error(f"jitgate_inspect_engine: {exc}") from None
            except ValueError as exc:  # a region phonenumbers does not know
                raise settings.options_error(f"jitgate_pii_phone_regions: {exc}") from None

    def _mask_key(self, secret_id: str) -> bytes:
        if not secret_id:
            logger.warning("jitgate: no jitgate_mask_key_secret; masking tags correlate only within this process")
            return secrets.token_bytes(32)
        client = self._aws.client("secretsmanager", ctx.options)
        try:
            value = client.get_secret_value(SecretId=secret_id).get("SecretString") or ""
        except Exception as exc:
            msg = f"jitgate_mask_key_secret: cannot read the key ({type(exc).__name__})"
            raise settings.options_error(msg) from None
        if len(value) < 16:
            raise settings.options_error("jitgate_mask_key_secret: the key must be at least 16 characters")
        return value.encode()

    # -- reading the flow, applying the answers -----------------------------------------------

    def _profile(self, flow: http.HTTPFlow) -> MaskProfile:
        state = meta.state_of(flow)
        return leaks.profile_for(self.policy, state.claims, state.connection_in(self.policy), flow.request.pretty_host)

    def _plan(self, flow: http.HTTPFlow, side: Side) -> actions.Plan:
        return actions.plan(self._profile(flow), side)

    @staticmethod
    def _literals(flow: http.HTTPFlow) -> list[bytes]:
        value = meta.state_of(flow).injected_secret
        return [value.encode()] if value else []

    def _scan(self, flow: http.HTTPFlow, plan: actions.Plan, where: str, body: bytes, json_text: bool) -> ScanResult:
        assert self.scanner is not None
        # Embedding vectors are no text: a JSON body is scanned with them blanked (offsets kept).
        scanned = blank_vectors(body) if json_text else body
        result = leaks.scan(self.scanner, scanned, plan, self._literals(flow), json_text=json_text)
        records = leaks.finding_records(plan, where, result.findings, body if json_text else None)
        meta.state_of(flow).findings.extend(records)
        return result

    def _target(self, flow: http.HTTPFlow, plan: actions.Plan) -> ScanResult:
        assert self.scanner is not None
        result = leaks.scan_target(self.scanner, plan, flow.request.path)
        meta.state_of(flow).findings.extend(leaks.finding_records(plan, "request.path", result.findings))
        return result

    def _headers(self, flow: http.HTTPFlow, message: http.Message, side: Side, plan: actions.Plan) -> list[Finding]:
        """Scan and mask header values in place; the findings (recorded)."""
        assert self.scanner is not None
        fields = leaks.header_fields(side, message.headers.items(multi=True))  # type: ignore[no-untyped-call]
        found = leaks.scan_headers(self.scanner, plan, side, fields, self._literals(flow))
        meta.state_of(flow).findings.extend(found.records)
        for name, value in found.edits:
            if value is None:
                message.headers.pop(name, None)
            else:
                message.headers[name] = value
        return found.findings

    def _decoded(self, message: http.Message) -> bytes | leaks.Unreadable:
        """The decoded body, or why it cannot be inspected (the content encoding is dropped then,
        so nothing after this decodes it: the recorder)."""
        encoding = message.headers.get("content-encoding", "")
        why = leaks.body_problem(message.raw_content or b"", encoding, self.max_bytes)
        if why is not None:
            message.headers.pop("content-encoding", None)
            return why
        try:
            body = message.get_content(strict=True) or b""
        except ValueError:
            return "undecodable"
        return "too_large" if len(body) > self.max_bytes else body

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
            self._inspect_refused(flow)
            return
        plan, req, state = self._plan(flow, "request"), flow.request, meta.state_of(flow)
        body = self._decoded(req)
        if isinstance(body, str):
            refuse(flow, leaks.unreadable_request(body, self.max_bytes))
            return
        text = bodies.text(flow, "request")
        if text.problem is not None:
            refuse(flow, jsontext.refusal(text.problem))
            return
        found = self._headers(flow, req, "request", plan)
        target = self._target(flow, plan)
        result = self._scan(flow, plan, "request.body", body, text.json_text)
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

    def _inspect_refused(self, flow: http.HTTPFlow) -> None:
        """A flow an earlier addon refused goes nowhere, but its record must be masked too: its
        target and body are scanned and masked in place for the recorder. A body that cannot be
        read stays unmarked, so the recorder keeps it out of the record."""
        if meta.state_of(flow).inspected:
            return
        plan, req = self._plan(flow, "request"), flow.request
        target = self._target(flow, plan)
        if target.edits:
            req.path = leaks.masked_text(target, req.path)
        body = self._decoded(req) if req.raw_content else b""
        if isinstance(body, str):
            return
        text = bodies.text(flow, "request")
        if text.problem is not None:
            return
        result = self._scan(flow, plan, "request.body", body, text.json_text)
        if result.edits:
            req.content = result.masked(body)
        meta.state_of(flow).mark_inspected("request")

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        resp, state = flow.response, meta.state_of(flow)
        if resp is None or state.error is not None or self.scanner is None:
            return
        # Event streams and explicitly chunked bodies go out chunk by chunk; the rest is buffered
        # (and masked whole in `response`), so the session record keeps the body.
        ctype = resp.headers.get("content-type", "").lower()
        chunked = "chunked" in resp.headers.get("transfer-encoding", "").lower()
        if not (ctype.startswith("text/event-stream") or chunked):
            return
        decode = decompressor(resp.headers.get("content-encoding", ""), self.max_bytes)
        if decode is None or state.buffer_response:
            # An unknown encoding (the response hook refuses it) or a later check needs the whole
            # answer (a store's field filter): buffered, bounded.
            return
        plan = self._plan(flow, "response")
        # The headers go out now, before any of the body: they are masked here, not in `response`.
        if self._headers(flow, resp, "response", plan):
            state.decide(Decision.MASKED)
        # JSON strings in the stream (an event's data, a chunked JSON answer) are read as a client
        # parses them: their escapes are decoded, each string whole, held back at most to the limit.
        masker = StreamMasker(  # allowed PII is not looked for in a stream: it could only be masked there
            self.scanner, pii=plan.pii_types if plan.pii != "allow" else (), literals=self._literals(flow),
            window=self.window,
            json_strings=True, max_hold=self.max_bytes,
        )
        resp.headers.pop("content-encoding", None)
        resp.headers.pop("content-length", None)
        state.stream = resp.stream = MaskStream(masker, decode, self.max_bytes, lambda error: self._cut(flow, error))

    def response(self, flow: http.HTTPFlow) -> None:
        try:
            self._response(flow)
        finally:
            # The injected credential stays in memory no longer than needed (a 401 retry sets it again).
            meta.state_of(flow).injected_secret = None

    def error(self, flow: http.HTTPFlow) -> None:
        # A stream cut short never reaches `response`: its masker and the injected credential are
        # held no longer than the flow.
        state = meta.state_of(flow)
        stream, state.stream, state.injected_secret = state.stream, None, None
        if isinstance(stream, MaskStream) and stream.failed is not None:
            # Cut here (upstream closed by `_cut`): the flow is recorded as failed with its code,
            # like any flow the upstream left without an answer, not as the upstream's status.
            flow.response = None

    def _cut(self, flow: http.HTTPFlow, error: JitgateError) -> None:
        """A streamed response went over the limit or does not decode: stop reading the upstream."""
        state = meta.state_of(flow)
        state.error, state.decision = error.code, Decision.BLOCKED
        logger.warning("jitgate: streamed response of flow %s cut (%s)", flow.id, error.code)
        close_upstream(flow)

    def _response(self, flow: http.HTTPFlow) -> None:
        resp, state = flow.response, meta.state_of(flow)
        if resp is None or self.scanner is None:
            return
        plan = self._plan(flow, "response")
        stream, state.stream = state.stream, None
        if isinstance(stream, MaskStream):
            self._streamed(flow, resp, stream, plan)
            return
        if state.error is not None:
            return  # the gateway's own answer
        body = self._decoded(resp)
        if isinstance(body, str):
            self._replace(flow, leaks.unreadable_response(body))
            return
        text = bodies.text(flow, "response")
        if text.problem is not None:
            self._replace(flow, UpstreamResponseNotUtf8("the upstream response is not UTF-8, so it cannot be masked"))
            return
        found = self._headers(flow, resp, "response", plan)
        result = self._scan(flow, plan, "response.body", body, text.json_text)
        if result.edits:
            resp.content = result.masked(body)
        if found or result.findings:
            state.decide(Decision.MASKED)
        state.mark_inspected("response")

    def _streamed(self, flow: http.HTTPFlow, resp: http.Response, stream: MaskStream, plan: actions.Plan) -> None:
        state = meta.state_of(flow)
        if stream.failed is not None:  # the body ended before the close landed: answer was cut
            self._replace(flow, stream.failed)
            if flow.killable:
                flow.kill()  # type: ignore[no-untyped-call]  # the client must not take it as complete
            return
        if stream.complete:  # already sent; this copy is what the session record sees
            resp.data.content = bytes(stream.sent)
        records = leaks.finding_records(plan, "response.body", stream.masker.findings)
        state.findings.extend(records)
        if records:
            state.decide(Decision.MASKED)
        if stream.complete:
            state.mark_inspected("response")

    @staticmethod
    def _replace(flow: http.HTTPFlow, error: JitgateError) -> None:
        """Answer with an error instead of an upstream response that cannot be inspected."""
        flow.response = None
        refuse(flow, error)


addons = [LeakGuard()]
