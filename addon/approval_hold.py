"""approval_hold: a risky request waits for a human before it goes upstream.

The connection's approval rules (jitgate.approvals.risk_reasons) mark a request as risky: a
named operation, a rerank over a document or byte threshold (bytes of the decoded body, whatever
its Content-Encoding), or an inspection finding whose profile action is `review`. Such a flow is
intercepted, a hold item with a masked summary (who, which token by jti, operation, host, path,
sizes, findings; never a body or a secret) is written to the shared table (pk="hold"), and one
background task per gateway polls the table for all of its holds at once. Approved: the flow
resumes. Denied: 403 `approval_denied`. No decision within `jitgate_approval_timeout`: the hold
is closed with a conditional write (so a late approval cannot land after it) and the answer is
403 `approval_timeout`. Other flows are never blocked; several gateways share the table, each
polling only its own holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader

from addon import meta, settings
from addon.body import NOT_JSON, json_body
from addon.respond import refuse
from jitgate import durations
from jitgate.approval_store import ApprovalStore
from jitgate.approvals import (
    Approval,
    RequestFacts,
    State,
    close,
    hold_approvers,
    hold_summary,
    new_id,
    risk_reasons,
    state_at,
)
from jitgate.decoding import DEFAULT_DECODED_LIMIT, decoded_size
from jitgate.errors import (
    ApprovalClosed,
    ApprovalDenied,
    ApprovalTimeout,
    ApprovalUnavailable,
    BodyNotDecodable,
    JitgateError,
    RevocationUnavailable,
    TokenExpired,
    TokenRevoked,
)
from jitgate.policy import Connection, Policy
from jitgate.records import Decision
from jitgate.scope import document_count
from jitgate.state import revoked_among

logger = logging.getLogger(__name__)

HOLD = "jitgate.hold"  # flow.metadata: the hold id of a held flow
_OWN = frozenset(
    {"jitgate_approval_timeout", "jitgate_approval_poll", "jitgate_approval_topic", "jitgate_approval_max_held"}
)


@dataclass
class _Held:
    flow: http.HTTPFlow
    approval: Approval
    deadline: float  # monotonic


def request_facts(flow: http.HTTPFlow, conn: Connection, operation: str | None) -> RequestFacts:
    """The facts the approval rules judge; raises ValueError for a body that does not decode.

    `size` is the decoded body (300 kB is no 1 kB request for being sent as gzip), counted without
    holding it decoded: exact up to `bound` (`max_bytes`, at least the default inspection limit),
    past it only "more than `bound`", and such a body is not parsed for its documents either (a
    bomb). In the chain leak_guard and scope_guard refuse bodies that decode that far before this.
    """
    raw = flow.request.raw_content or b""
    encoding = flow.request.headers.get("content-encoding", "")
    bound = max(conn.approval.max_bytes or 0, DEFAULT_DECODED_LIMIT)
    size = decoded_size(raw, encoding, bound) if raw else 0
    documents: int | None = None
    # Count documents only when a rule needs the number: big bodies are not parsed for nothing.
    if operation is not None and conn.approval.max_documents is not None and size <= bound:
        body = json_body(flow)  # parsed once per flow (addon/body.py)
        documents = document_count(conn.dialect, operation, None if body is NOT_JSON else body)
    findings = flow.metadata.get(meta.FINDINGS) or []
    return RequestFacts(
        operation=operation,
        documents=documents,
        size=size,
        findings=tuple(f for f in findings if isinstance(f, dict)),
    )


def seconds(value: str, name: str) -> float:
    """Positive, finite seconds from an option string: `120`, `0.5` or `2m` (`jitgate.durations`)."""
    try:
        return durations.parse_seconds(value)
    except ValueError as exc:
        raise settings.options_error(f"{name}: {exc}") from None


class ApprovalHold:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        dynamodb: Any = None,
        sns: Any = None,
    ) -> None:
        self._clock = clock
        self._monotonic = monotonic
        self._dynamodb = dynamodb
        self._given_dynamodb = dynamodb is not None
        self._sns = sns
        self._given_sns = sns is not None
        self.policy: Policy | None = None
        self.store: ApprovalStore | None = None
        self.table = ""
        self.timeout = 120.0
        self.poll = 1.0
        self.max_held = 200
        self.topic = ""
        self.gateway = socket.gethostname()
        self.held: dict[str, _Held] = {}
        self._poller: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- configuration ----------------------------------------------------------------------

    def load(self, loader: Loader) -> None:
        settings.add_options(
            loader,
            *settings.SHARED,
            "jitgate_approval_timeout",
            "jitgate_approval_poll",
            "jitgate_approval_topic",
            "jitgate_approval_max_held",
            "jitgate_gateway_id",
        )

    def configure(self, updated: set[str]) -> None:
        if not (updated & (_OWN | settings.SHARED)):
            return
        opts = ctx.options
        self.policy = settings.policy_from(opts.jitgate_policy)
        if not opts.jitgate_table:
            raise settings.options_error("jitgate_table is required: holds are written to it")
        timeout = seconds(opts.jitgate_approval_timeout, "jitgate_approval_timeout")
        poll = seconds(opts.jitgate_approval_poll, "jitgate_approval_poll")
        if poll >= timeout:
            raise settings.options_error("jitgate_approval_poll must be shorter than jitgate_approval_timeout")
        if opts.jitgate_approval_topic and not opts.jitgate_approval_topic.startswith("arn:"):
            raise settings.options_error("jitgate_approval_topic must be an SNS topic ARN")
        if opts.jitgate_approval_max_held < 1:
            raise settings.options_error("jitgate_approval_max_held must be at least 1")
        self.timeout = timeout
        self.poll = poll
        self.max_held = opts.jitgate_approval_max_held
        self.topic = opts.jitgate_approval_topic
        if "jitgate_gateway_id" in opts and opts.jitgate_gateway_id:
            self.gateway = opts.jitgate_gateway_id
        if not self._given_dynamodb:
            self._dynamodb = settings.aws_client(
                "dynamodb", endpoint=opts.jitgate_aws_endpoint, region_name=opts.jitgate_aws_region
            )
        if self.topic and not self._given_sns:
            self._sns = settings.aws_client(
                "sns", endpoint=opts.jitgate_aws_endpoint, region_name=opts.jitgate_aws_region
            )
        self.table = opts.jitgate_table
        self.store = ApprovalStore(self._dynamodb, self.table)

    def done(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        for hold_id in list(self.held):
            self._finish(hold_id, "expired")

    # -- the hook ---------------------------------------------------------------------------

    async def request(self, flow: http.HTTPFlow) -> None:
        if meta.refused(flow) or self.policy is None or self.store is None:
            return
        claims = meta.claims(flow)
        if claims is None:
            return  # token_gate refuses such a flow; nothing here to hold
        # The token's connection (scope_guard's pick); never another one sharing the host.
        conn = meta.connection(flow, self.policy) or self.policy.connection_for_host(flow.request.host, claims.conn)
        if conn is None:
            return
        operation = flow.metadata.get(meta.OPERATION)
        try:
            facts = request_facts(flow, conn, operation if isinstance(operation, str) else None)
        except ValueError:  # leak_guard refuses such a body first; should it not run, nothing passes
            flow.request.headers.pop("content-encoding", None)  # nothing after this decodes it (recorder)
            refuse(flow, BodyNotDecodable("the request body's content encoding cannot be decoded"))
            return
        reasons = risk_reasons(conn.approval, facts)
        if not reasons:
            return
        if len(self.held) >= self.max_held:
            refuse(
                flow, ApprovalUnavailable("too many requests are waiting for approval; try again later"),
                decision=Decision.DENIED,
            )
            return
        now = self._clock()
        summary = hold_summary(
            sub=claims.sub,
            jti=claims.jti,
            job=claims.job,
            connection=conn.name,
            facts=facts,
            method=flow.request.method,
            host=flow.request.pretty_host,
            path=flow.request.path,
            reasons=reasons,
        )
        approval = Approval(
            id=new_id("hold"),
            kind="hold",
            requester=claims.sub,
            connection=conn.name,
            approvers=hold_approvers(self.policy, conn),
            created_at=now,
            expires_at=now + self.timeout,
            summary={**summary, "gateway": self.gateway, "flow": flow.id},
        )
        try:
            await asyncio.to_thread(self.store.create, approval, now=now)
        except Exception:
            refuse(
                flow, ApprovalUnavailable("this request needs an approval, and the hold cannot be recorded"),
                decision=Decision.DENIED,
            )
            return
        flow.intercept()  # type: ignore[no-untyped-call]
        flow.metadata[HOLD] = approval.id
        flow.metadata[meta.DECISION] = Decision.HELD
        self.held[approval.id] = _Held(flow, approval, self._monotonic() + self.timeout)
        logger.info("jitgate: held %s %s (%s) as %s", conn.name, operation, ",".join(reasons), approval.id)
        if self.topic:
            task = asyncio.get_running_loop().create_task(self._notify(approval))
            self._tasks.add(task)  # keep a reference until it finishes
            task.add_done_callback(self._tasks.discard)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_loop())

    # -- background ---------------------------------------------------------------------------

    async def _notify(self, approval: Approval) -> None:
        message = {"type": "jitgate.approval_requested", "id": approval.id, "kind": "hold",
                   "requester": approval.requester, "connection": approval.connection,
                   "expires_at": math.ceil(approval.expires_at), "summary": dict(approval.summary)}
        try:
            await asyncio.to_thread(
                self._sns.publish, TopicArn=self.topic, Subject=f"jitgate: request held on {approval.connection}"[:100],
                Message=json.dumps(message, separators=(",", ":")),
            )
        except Exception as exc:
            logger.warning("jitgate: hold notification not published (%s)", type(exc).__name__)

    async def _poll_loop(self) -> None:
        while self.held:
            await asyncio.sleep(self.poll)
            await self.poll_once()

    async def poll_once(self) -> None:
        """Read every hold of this gateway once; resume, refuse or time out what is due."""
        if not self.held or self.store is None:
            return
        ids = list(self.held)
        try:
            found = await asyncio.to_thread(self.store.get_many, ids, now=self._clock())
        except Exception as exc:  # keep holding; the timeout still ends every hold
            logger.warning("jitgate: hold poll failed (%s)", type(exc).__name__)
            found = {}
        now, mono = self._clock(), self._monotonic()
        approved: list[str] = []
        for hold_id in ids:
            held = self.held.get(hold_id)
            if held is None:
                continue
            entry = found.get(hold_id)
            state = state_at(entry[0], now) if entry is not None else None
            if state == "approved":
                approved.append(hold_id)
            elif state == "denied":
                self._finish(hold_id, state)
            elif state == "expired" or mono >= held.deadline:
                self._finish(hold_id, await self._close(hold_id))
        if approved:
            await self._resume_approved(approved)

    async def _resume_approved(self, hold_ids: list[str]) -> None:
        """An approval is no pass for a token revoked or expired while its request waited."""
        jtis = {h: self.held[h].approval.summary.get("jti") for h in hold_ids if h in self.held}
        try:
            revoked = await asyncio.to_thread(
                revoked_among, self._dynamodb, self.table, {str(j) for j in jtis.values()}, now=self._clock()
            )
            unreadable = False
        except Exception as exc:
            logger.warning("jitgate: revocation check before resuming failed (%s)", type(exc).__name__)
            revoked, unreadable = set(), True
        now = self._clock()
        for hold_id, jti in jtis.items():
            held = self.held.get(hold_id)
            if held is None:
                continue
            claims = meta.claims(held.flow)
            error: JitgateError | None = None
            if unreadable:
                error = RevocationUnavailable("the token's revocation state cannot be checked")
            elif jti in revoked:
                error = TokenRevoked("token has been revoked")
            elif claims is not None and now >= claims.exp:
                error = TokenExpired("token expired while its request waited for approval")
            if error is not None:
                self.held.pop(hold_id, None)
                held.flow.metadata[meta.DECISION] = Decision.DENIED
                refuse(held.flow, error, extra={"approval_id": hold_id})
                held.flow.resume()  # type: ignore[no-untyped-call]
                continue
            self._finish(hold_id, "approved")

    async def _close(self, hold_id: str) -> State:
        """End an undecided hold in the table; a decision that landed first wins."""
        store = self.store
        assert store is not None
        try:
            _, after = await asyncio.to_thread(
                store.update, hold_id, lambda a: close(a, "expired", now=self._clock()), now=self._clock
            )
            return state_at(after, self._clock())
        except ApprovalClosed:
            try:
                found = await asyncio.to_thread(store.get, hold_id, now=self._clock())
            except Exception:
                found = None
            if found is not None:
                return state_at(found[0], self._clock())
        except Exception as exc:  # unreadable table: the hold still ends, refused (fail closed)
            logger.warning("jitgate: hold %s not closed in the table (%s)", hold_id, type(exc).__name__)
        return "expired"

    def _finish(self, hold_id: str, state: State) -> None:
        held = self.held.pop(hold_id, None)
        if held is None:
            return
        flow = held.flow
        if state == "approved":
            flow.metadata[meta.DECISION] = Decision.APPROVED
        elif state == "denied":
            flow.metadata[meta.DECISION] = Decision.DENIED
            refuse(flow, ApprovalDenied("an approver denied this request"), extra={"approval_id": hold_id})
        else:
            flow.metadata[meta.DECISION] = Decision.DENIED
            refuse(
                flow,
                ApprovalTimeout(f"no approver decided within {self.timeout:g} s; the request was not forwarded"),
                extra={"approval_id": hold_id},
            )
        logger.info("jitgate: hold %s ended: %s", hold_id, state)
        flow.resume()  # type: ignore[no-untyped-call]
