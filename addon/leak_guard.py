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
unscanned. Every finding goes into the flow's record (`meta.FINDINGS`).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader
from mitmproxy.utils import human

from addon import body as bodies
from addon import meta, settings
from addon.mitmproxy_compat import close_upstream
from addon.respond import refuse
from jitgate import jsontext
from jitgate.decoding import BoundedDecoder, bomb_check
from jitgate.dialects import CLIENT_CREDENTIAL_HEADERS
from jitgate.errors import (
    BodyNotDecodable,
    JitgateError,
    LeakBlocked,
    PayloadTooLarge,
    UpstreamResponseInvalid,
    UpstreamResponseNotUtf8,
    UpstreamResponseTooLarge,
)
from jitgate.inspect import Scanner, StreamMasker, actions, jsonpath
from jitgate.inspect.masking import Finding
from jitgate.inspect.scanner import ScanResult
from jitgate.inspect.stream import DEFAULT_WINDOW, HoldLimitExceeded
from jitgate.policy import MaskProfile, Policy
from jitgate.records import Decision

logger = logging.getLogger(__name__)

STREAM = "jitgate.leak_stream"  # the StreamMasker of a streamed response
# Headers that carry the caller's own credential or the JIT token: credential_inject strips them.
_CREDENTIAL_HEADERS = frozenset(name.lower() for name in CLIENT_CREDENTIAL_HEADERS)
_SKIP_HEADERS = frozenset({"content-length", "content-type", "content-encoding", "transfer-encoding", "host"})
# HTTP-date headers (RFC 9110 5.6.7). A value that is exactly an IMF-fixdate holds a date and
# nothing else, but its digits are a phone candidate: scanning it cost every response a second
# pass over each header. Any other value of these headers is scanned like the rest.
_DATE_HEADERS = frozenset(
    {"date", "expires", "last-modified", "if-modified-since", "if-unmodified-since", "retry-after"}
)
_IMF_FIXDATE = re.compile(
    rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-3][0-9] (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    rb"[0-9]{4} [0-2][0-9]:[0-5][0-9]:[0-6][0-9] GMT"
)


def _decompressor(encoding: str, limit: int) -> Callable[[bytes], bytes] | None:
    """An incremental decoder for a streamed body's content encoding, bounded at `limit` decoded
    bytes (`BoundedDecoder`); None for an encoding it does not know. Identity is not decoded, so
    it is not bounded either: it costs no more memory than it brings."""
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return lambda data: data
    try:
        decoder = BoundedDecoder(enc, limit)
    except ValueError:
        return None

    def decode(data: bytes) -> bytes:
        out = decoder.feed(data)
        if decoder.exceeded:
            raise _TooLarge
        return out

    return decode


class _TooLarge(Exception):
    """A streamed body decoded past the inspection limit."""


def _public(record: dict[str, Any]) -> dict[str, Any]:
    """What a 403 tells the caller about a finding: type and place (never the value)."""
    return {k: record[k] for k in ("type", "where", "path", "offset", "length", "tag") if k in record}


class _MaskStream:
    """The `flow.response.stream` callable: decode, mask with an overlap window, pass on.

    What went out is kept (masked, up to `keep` bytes) so the session record can hold it. A body
    that decodes past the inspection limit, or does not decode, is cut: nothing more is decoded or
    passed on, `failed` holds why and `on_fail` is told once (leak_guard closes the upstream).
    """

    def __init__(
        self,
        masker: StreamMasker,
        decode: Callable[[bytes], bytes],
        keep: int,
        on_fail: Callable[[JitgateError], None] = lambda error: None,
    ) -> None:
        self.masker = masker
        self._decode = decode
        self._keep = keep
        self._on_fail = on_fail
        self.sent = bytearray()
        self.complete = True
        self.failed: JitgateError | None = None
        self._utf8 = jsontext.Utf8Stream()

    def __call__(self, data: bytes) -> list[bytes]:
        if self.failed is not None:
            return []  # cut: the rest is dropped undecoded
        try:
            decoded = self._decode(data) if data else b""
        except _TooLarge:
            return self._fail(UpstreamResponseTooLarge("the upstream response exceeds the gateway's inspection limit"))
        except ValueError:
            return self._fail(UpstreamResponseInvalid("the upstream response cannot be decoded for inspection"))
        try:
            self._utf8.feed(decoded, final=not data)
        except ValueError:
            return self._fail(UpstreamResponseNotUtf8("the upstream response is not UTF-8, so it cannot be masked"))
        try:
            out = self.masker.feed(decoded) if data else self.masker.close()
        except HoldLimitExceeded:
            return self._fail(UpstreamResponseTooLarge("the upstream response exceeds the gateway's inspection limit"))
        if self.complete and len(self.sent) + len(out) <= self._keep:
            self.sent += out
        else:
            self.complete = False
            self.sent.clear()
        # Never an empty chunk: HTTP/1 chunked framing would read it as the end of the body.
        return [out] if out else []

    def _fail(self, error: JitgateError) -> list[bytes]:
        self.failed = error
        self.complete = False
        self.sent.clear()
        self._on_fail(error)
        return []


class LeakGuard:
    def __init__(self, scanner: Scanner | None = None) -> None:
        self._given = scanner
        self.scanner: Scanner | None = scanner
        self.policy: Policy | None = None
        self.max_bytes = settings.DEFAULT_MAX_INSPECT
        self.window = DEFAULT_WINDOW

    def load(self, loader: Loader) -> None:
        settings.add_options(
            loader,
            *settings.SHARED,
            "jitgate_max_inspect_bytes",
            "jitgate_mask_key_secret",
            "jitgate_inspect_engine",
            "jitgate_pii_phone_regions",
            "jitgate_stream_window",
        )

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        if "jitgate_max_inspect_bytes" in updated:
            if opts.jitgate_max_inspect_bytes < 1024:
                raise settings.options_error("jitgate_max_inspect_bytes must be at least 1024")
            self.max_bytes = opts.jitgate_max_inspect_bytes
            # A body refused in `requestheaders` is still read into memory whole by mitmproxy; past
            # twice the limit mitmproxy itself refuses it (413) before reading it, so memory stays bounded.
            bound = 2 * self.max_bytes
            has_limit = "body_size_limit" in opts  # absent when this addon runs without mitmproxy's own
            current = human.parse_size(opts.body_size_limit) if has_limit and opts.body_size_limit else None
            if has_limit and (current is None or current > bound):
                ctx.options.update(body_size_limit=str(bound))  # type: ignore[no-untyped-call]
        if "jitgate_stream_window" in updated:
            if not 256 <= opts.jitgate_stream_window <= 1 << 20:
                raise settings.options_error("jitgate_stream_window must be between 256 and 1048576")
            self.window = opts.jitgate_stream_window
        if "jitgate_inspect_engine" in updated and opts.jitgate_inspect_engine not in ("auto", "hyperscan", "re"):
            raise settings.options_error("jitgate_inspect_engine must be auto, hyperscan or re")
        if updated & settings.SHARED:
            self.policy = settings.policy_from(opts.jitgate_policy)
        if self._given is None and updated & {
            "jitgate_mask_key_secret", "jitgate_inspect_engine", "jitgate_pii_phone_regions"
        }:
            regions = [r.strip().upper() for r in opts.jitgate_pii_phone_regions.split(",") if r.strip()]
            try:
                self.scanner = Scanner(
                    self._mask_key(), engine=opts.jitgate_inspect_engine, phone_regions=regions or None
                )
            except RuntimeError as exc:  # hyperscan asked for but missing
                raise settings.options_error(f"jitgate_inspect_engine: {exc}") from None
            except ValueError as exc:  # a region phonenumbers does not know
                raise settings.options_error(f"jitgate_pii_phone_regions: {exc}") from None

    def _mask_key(self) -> bytes:
        secret_id = ctx.options.jitgate_mask_key_secret
        if not secret_id:
            logger.warning("jitgate: no jitgate_mask_key_secret; masking tags correlate only within this process")
            return secrets.token_bytes(32)
        client = settings.aws_client(
            "secretsmanager", endpoint=ctx.options.jitgate_aws_endpoint, region_name=ctx.options.jitgate_aws_region
        )
        try:
            value = client.get_secret_value(SecretId=secret_id).get("SecretString") or ""
        except Exception as exc:
            msg = f"jitgate_mask_key_secret: cannot read the key ({type(exc).__name__})"
            raise settings.options_error(msg) from None
        if len(value) < 16:
            raise settings.options_error("jitgate_mask_key_secret: the key must be at least 16 characters")
        return value.encode()

    # -- helpers ----------------------------------------------------------------------------

    def _profile(self, flow: http.HTTPFlow) -> MaskProfile:
        policy = self.policy
        if policy is None:
            return MaskProfile()
        claims = meta.claims(flow)
        if claims is not None:
            return policy.profile(claims.mask)
        conn = meta.connection(flow, policy)
        if conn is None:
            # No token: only a host served by a single connection names a profile (a shared host
            # cannot say whose, so the policy's default applies).
            conn = policy.connection_for_host(flow.request.pretty_host)
        return policy.profile(conn.mask if conn is not None else "default")

    @staticmethod
    def _literals(flow: http.HTTPFlow) -> list[bytes]:
        value = flow.metadata.get(meta.INJECTED_SECRET)
        return [value.encode()] if isinstance(value, str) and value else []

    @staticmethod
    def _record(
        flow: http.HTTPFlow, plan: actions.Plan, where: str, findings: list[Finding], json_body: bytes | None = None
    ) -> list[dict[str, Any]]:
        paths = (
            jsonpath.locate(json_body, [f.start for f in findings], hidden=[(f.start, f.end) for f in findings])
            if json_body and findings
            else {}
        )
        records = [f.record(where, actions.action_for(plan, f), paths.get(f.start)) for f in findings]
        if records:
            flow.metadata.setdefault(meta.FINDINGS, []).extend(records)
        return records

    def _scan(self, data: bytes, plan: actions.Plan, literals: list[bytes], *, json_text: bool = False) -> ScanResult:
        assert self.scanner is not None
        return self.scanner.scan(data, pii=plan.pii_types, literals=literals, json_strings=json_text)

    def _headers(self, flow: http.HTTPFlow, message: http.Message, side: str, plan: actions.Plan) -> list[Finding]:
        """Scan and mask header values in place; the findings (recorded)."""
        found: list[Finding] = []
        literals = self._literals(flow)
        fields: list[tuple[str, bytes]] = []
        for name, value in message.headers.items(multi=True):  # type: ignore[no-untyped-call]
            low = name.lower()
            if low in _SKIP_HEADERS or (side == "request" and low in _CREDENTIAL_HEADERS):
                continue
            raw = value.encode("utf-8", "surrogateescape")
            if low in _DATE_HEADERS and _IMF_FIXDATE.fullmatch(raw):
                continue
            fields.append((name, raw))
        assert self.scanner is not None
        # One pass over all names and values first: most messages have nothing in their headers.
        names = [name.encode("utf-8", "surrogateescape") for name, _ in fields]
        if not self.scanner.may_find([*names, *(raw for _, raw in fields)], pii=plan.pii_types, literals=literals):
            return found
        for (name, raw), encoded in zip(fields, names, strict=True):
            low = name.lower()
            in_name = self._scan(encoded, plan, literals)
            if in_name.findings:
                # A name is no place for a value: the header goes, and its name is in no record.
                self._record(flow, plan, f"{side}.header-name", in_name.findings)
                found += in_name.findings
                message.headers.pop(name, None)
                continue
            result = self._scan(raw, plan, literals)
            if result.findings:
                self._record(flow, plan, f"{side}.header:{low}", result.findings)
                found += result.findings
                message.headers[name] = result.masked(raw).decode("utf-8", "surrogateescape")
        return found

    # -- hooks ------------------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if meta.refused(flow):
            return
        length = flow.request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            refuse(flow, PayloadTooLarge(f"the request body exceeds the inspection limit of {self.max_bytes} bytes"))

    def _decoded(self, message: http.Message) -> bytes | str:
        """The decoded body, or why it cannot be inspected: "undecodable" or "too_large" (the
        content encoding is dropped then, so nothing after this decodes it: the recorder)."""
        # Sized before decoding: a bomb costs one piece, not its size.
        over = bomb_check(message.raw_content or b"", message.headers.get("content-encoding", ""), self.max_bytes)
        if over is not False:
            message.headers.pop("content-encoding", None)
            return "undecodable" if over is None else "too_large"
        try:
            body = message.get_content(strict=True) or b""
        except ValueError:
            return "undecodable"
        return "too_large" if len(body) > self.max_bytes else body

    def request(self, flow: http.HTTPFlow) -> None:
        if self.scanner is None:
            return
        if meta.refused(flow):
            self._inspect_refused(flow)
            return
        plan = actions.plan(self._profile(flow), "request")
        req = flow.request
        body = self._decoded(req)
        if isinstance(body, str):
            refuse(flow, _request_unreadable(body, self.max_bytes))
            return
        text = bodies.text(flow, "request")
        if text.problem is not None:
            refuse(flow, jsontext.refusal(text.problem))
            return
        found = self._headers(flow, req, "request", plan)
        path_result = self._path(req, plan)
        self._record(flow, plan, "request.path", path_result.findings)
        result = self._scan(body, plan, self._literals(flow), json_text=text.json_text)
        self._record(flow, plan, "request.body", result.findings, body if text.json_text else None)
        found += path_result.findings + result.findings
        decision = actions.decide(plan, found)
        if decision == "review" and ctx.master.addons.get("approvalhold") is None:  # type: ignore[no-untyped-call]
            decision = "block"  # nobody can hold it for review: fail closed
        if decision == "block" or (decision != "allow" and path_result.findings and not path_result.edits):
            _inspected(flow, "request")
            refuse(
                flow,
                LeakBlocked("the request carries secrets or personal data; nothing was forwarded"),
                extra={"findings": [_public(r) for r in flow.metadata.get(meta.FINDINGS, [])]},
            )
            return
        if path_result.edits:
            req.path = _masked_text(path_result, req.path)
        if result.edits:
            req.content = result.masked(body)
        if found:
            flow.metadata[meta.DECISION] = Decision.MASKED
        _inspected(flow, "request")

    def _path(self, req: http.Request, plan: actions.Plan) -> ScanResult:
        """Scan the request target; what is found only once percent-decoded has no edit (nothing to
        mask in place: the flow blocks, or its path is withheld from the record)."""
        raw_path = req.path.encode("utf-8", "surrogateescape")
        result = self._scan(raw_path, plan, [])
        if not result.findings and b"%" in raw_path:
            result = self._scan(unquote_to_bytes(raw_path), plan, [])
            result.edits.clear()
        return result

    def _inspect_refused(self, flow: http.HTTPFlow) -> None:
        """A flow an earlier addon refused goes nowhere, but its record must be masked too: its
        target and body are scanned and masked in place for the recorder. A body that cannot be
        read stays unmarked, so the recorder keeps it out of the record."""
        if meta.INSPECTED in flow.metadata:
            return
        plan = actions.plan(self._profile(flow), "request")
        req = flow.request
        path_result = self._path(req, plan)
        self._record(flow, plan, "request.path", path_result.findings)
        if path_result.edits:
            req.path = _masked_text(path_result, req.path)
        body = self._decoded(req) if req.raw_content else b""
        if isinstance(body, str):
            return
        text = bodies.text(flow, "request")
        if text.problem is not None:
            return
        result = self._scan(body, plan, self._literals(flow), json_text=text.json_text)
        self._record(flow, plan, "request.body", result.findings, body if text.json_text else None)
        if result.edits:
            req.content = result.masked(body)
        _inspected(flow, "request")

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        if resp is None or meta.ERROR in flow.metadata or self.scanner is None:
            return
        # Event streams and explicitly chunked bodies go out chunk by chunk; the rest is buffered
        # (and masked whole in `response`), so the session record keeps the body.
        ctype = resp.headers.get("content-type", "").lower()
        chunked = "chunked" in resp.headers.get("transfer-encoding", "").lower()
        if not (ctype.startswith("text/event-stream") or chunked):
            return
        decode = _decompressor(resp.headers.get("content-encoding", ""), self.max_bytes)
        if decode is None:
            return  # unknown encoding: buffered, and the response hook refuses it
        if flow.metadata.get(meta.BUFFER_RESPONSE):
            return  # a later check needs the whole answer (a store's field filter): buffered, bounded
        plan = actions.plan(self._profile(flow), "response")
        # The headers go out now, before any of the body: they are masked here, not in `response`.
        if self._headers(flow, resp, "response", plan):
            flow.metadata.setdefault(meta.DECISION, Decision.MASKED)
        # JSON strings in the stream (an event's data, a chunked JSON answer) are read as a client
        # parses them: their escapes are decoded, each string whole, held back at most to the limit.
        masker = StreamMasker(
            self.scanner, pii=plan.pii_types, literals=self._literals(flow), window=self.window,
            json_strings=True, max_hold=self.max_bytes,
        )
        resp.headers.pop("content-encoding", None)
        resp.headers.pop("content-length", None)
        stream = _MaskStream(masker, decode, self.max_bytes, lambda error: self._cut(flow, error))
        flow.metadata[STREAM] = stream
        resp.stream = stream

    def response(self, flow: http.HTTPFlow) -> None:
        try:
            self._response(flow)
        finally:
            # The injected credential stays in memory no longer than needed (a 401 retry sets it again).
            flow.metadata.pop(meta.INJECTED_SECRET, None)

    def error(self, flow: http.HTTPFlow) -> None:
        # A stream cut short never reaches `response`: its masker is no plain data (flow files,
        # addon/meta.py), and the injected credential is held no longer than the flow.
        stream = flow.metadata.pop(STREAM, None)
        flow.metadata.pop(meta.INJECTED_SECRET, None)
        if isinstance(stream, _MaskStream) and stream.failed is not None:
            # Cut here (upstream closed by `_cut`): the flow is recorded as failed with its code,
            # like any flow the upstream left without an answer, not as the upstream's status.
            flow.response = None

    def _cut(self, flow: http.HTTPFlow, error: JitgateError) -> None:
        """A streamed response went over the limit or does not decode: stop reading the upstream."""
        flow.metadata[meta.ERROR] = error.code
        flow.metadata[meta.DECISION] = Decision.BLOCKED
        logger.warning("jitgate: streamed response of flow %s cut (%s)", flow.id, error.code)
        close_upstream(flow)

    def _response(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        if resp is None or self.scanner is None:
            return
        plan = actions.plan(self._profile(flow), "response")
        stream = flow.metadata.pop(STREAM, None)
        if isinstance(stream, _MaskStream):
            if stream.failed is not None:  # the body ended before the close landed: answer was cut
                self._replace(flow, stream.failed)
                if flow.killable:
                    flow.kill()  # type: ignore[no-untyped-call]  # the client must not take it as complete
                return
            if stream.complete:  # already sent; this copy is what the session record sees
                resp.data.content = bytes(stream.sent)
            records = self._record(flow, plan, "response.body", stream.masker.findings)
            if records:
                flow.metadata.setdefault(meta.DECISION, Decision.MASKED)
            if stream.complete:
                _inspected(flow, "response")
            return
        if meta.ERROR in flow.metadata:
            return  # the gateway's own answer
        body = self._decoded(resp)
        if isinstance(body, str):
            self._replace(flow, _response_unreadable(body))
            return
        text = bodies.text(flow, "response")
        if text.problem is not None:
            self._replace(flow, UpstreamResponseNotUtf8("the upstream response is not UTF-8, so it cannot be masked"))
            return
        found = self._headers(flow, resp, "response", plan)
        result = self._scan(body, plan, self._literals(flow), json_text=text.json_text)
        self._record(flow, plan, "response.body", result.findings, body if text.json_text else None)
        if result.edits:
            resp.content = result.masked(body)
        if found or result.findings:
            flow.metadata.setdefault(meta.DECISION, Decision.MASKED)
        _inspected(flow, "response")

    @staticmethod
    def _replace(flow: http.HTTPFlow, error: JitgateError) -> None:
        """Answer with an error instead of an upstream response that cannot be inspected."""
        flow.response = None
        refuse(flow, error)


def _inspected(flow: http.HTTPFlow, side: str) -> None:
    """Mark a side whose body is masked as it now stands: the recorder records no other body."""
    done = flow.metadata.setdefault(meta.INSPECTED, [])
    if side not in done:
        done.append(side)


def _masked_text(result: ScanResult, text: str) -> str:
    return result.masked(text.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")


def _request_unreadable(why: str, limit: int) -> JitgateError:
    if why == "too_large":
        return PayloadTooLarge(f"the request body exceeds the inspection limit of {limit} bytes")
    return BodyNotDecodable("the request body's content encoding cannot be decoded")


def _response_unreadable(why: str) -> JitgateError:
    if why == "too_large":
        return UpstreamResponseTooLarge("the upstream response exceeds the gateway's inspection limit")
    return UpstreamResponseInvalid("the upstream response cannot be decoded for inspection")


addons = [LeakGuard()]
