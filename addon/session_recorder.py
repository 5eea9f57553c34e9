"""session_recorder: one record per flow, after masking, into the durable spool, shipped to S3.

Last in the chain. Its `request` hook reserves room in the spool for the flow's record before
anything is forwarded: a spool that cannot take it (quota reached, disk failing) refuses the flow
with 503 `audit_unavailable` (option `jitgate_audit_required`, on by default). Its `response`
and `error` hooks build the record from the flow and its state (addon/meta.py) and append
it: one `write(2)` into the page cache on the event loop, or on a writer thread whenever that
write could wait (a rotation's fsync, the uploader holding the segment, a failing disk), so the
event loop never waits on the disk. The answer goes back to the client only once the record's
write returned. Refused flows are recorded like any other.

Never recorded: headers (the JIT token and the injected credential live there), query strings,
raw embedding vectors (dimension + SHA-256 instead), store fields the token could not see, and a
body holding a finding that was not masked in place (blocked, held for review or allowed).
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from botocore.config import Config as BotoConfig
from mitmproxy import ctx, http
from mitmproxy import flow as mflow
from mitmproxy.addonmanager import Loader

from addon import body, meta, settings
from addon.respond import refuse
from jitgate.errors import AuditUnavailable
from jitgate.recording import Exchange, record_of
from jitgate.records import SessionRecord
from jitgate.spool import Spool, SpoolConfig, Uploader, append_record

logger = logging.getLogger(__name__)



def _json(flow: http.HTTPFlow, side: body.Side) -> Any:
    value = body.json_body(flow, side)  # parsed once per flow, shared with scope_guard / approval_hold
    return None if value is body.NOT_JSON else value


def exchange(flow: http.HTTPFlow) -> Exchange:
    """What the record needs from the flow itself (jitgate/recording.py)."""
    request, response = flow.request, flow.response
    req_content = request.raw_content and request.get_content(strict=False)
    resp_content = response.raw_content and response.get_content(strict=False) if response is not None else None
    peer = flow.client_conn.peername
    failure = None
    if flow.error is not None:
        failure = "flow_killed" if flow.error.msg == mflow.Error.KILLED_MESSAGE else "upstream_error"
    return Exchange(
        flow_id=flow.id,
        method=request.method,
        host=request.pretty_host,
        path=request.path,
        client=f"{peer[0]}:{peer[1]}" if peer else None,
        started=request.timestamp_start,
        ended=response.timestamp_end if response is not None else None,
        request_bytes=len(request.raw_content or b""),
        request_content=req_content or None,
        request_json=_json(flow, "request") if req_content else None,
        status=response.status_code if response is not None else None,
        response_bytes=len(response.raw_content or b"") if response is not None else 0,
        response_content=resp_content or None,
        response_json=_json(flow, "response") if resp_content and response is not None else None,
        failure=failure,
    )


def build_record(flow: http.HTTPFlow, *, gateway: str, body_cap: int, now: float) -> SessionRecord:
    """The record of `flow` as it stands after the chain."""
    return record_of(meta.state_of(flow), exchange(flow), gateway=gateway, body_cap=body_cap, now=now)


def _check_durable(path: Path) -> None:
    """The durable spool must take files now: a stop is too late to find out it does not."""
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".probe-{os.getpid()}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    probe.unlink()


class SessionRecorder:
    def __init__(self, *, s3: Any = None, clock: Any = time.time, aws: settings.AwsClients | None = None) -> None:
        self._aws = aws or settings.AwsClients()
        self._s3 = s3
        self._clock = clock
        self.spool: Spool | None = None
        self.uploader: Uploader | None = None
        self.gateway = ""
        self.body_cap = 8192
        self.required = True
        self.reserve_bytes = 0
        self.ship_timeout = 60.0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jitgate-recorder")
        self.write_failures = 0
        self._wiring: tuple[Any, ...] = ()

    # -- configuration ----------------------------------------------------------------------

    def load(self, loader: Loader) -> None:
        settings.add_options(loader, *settings.SessionRecorderSettings.NAMES)

    def configure(self, updated: set[str]) -> None:
        if not updated & {*settings.SessionRecorderSettings.NAMES, "confdir"}:
            return
        opts = ctx.options
        s = settings.session_recorder(opts)
        config = SpoolConfig(
            directory=s.directory,
            gateway=s.gateway,
            max_segment_bytes=s.segment_bytes,
            max_segment_age=s.segment_seconds,
            fsync_interval=s.fsync_seconds,
            max_bytes=s.spool_max_bytes,
            # A record holds two capped bodies, the query and its lists: hold room for the worst case.
            probe_bytes=4 * s.body_cap + 64 * 1024,
        )
        self.gateway, self.body_cap, self.required = s.gateway, s.body_cap, s.audit_required
        self.ship_timeout = s.ship_timeout
        self.reserve_bytes = config.probe_bytes
        wiring = (
            config, s.bucket, opts.jitgate_aws_endpoint, opts.jitgate_aws_region, s.prefix, s.backoff_max_seconds,
            s.durable,
        )
        if self.uploader is not None and wiring == self._wiring:
            return  # only the body cap / audit switch changed: keep the running spool
        self._wiring = wiring
        self._stop()
        spool = Spool(config, clock=self._clock)
        try:
            spool.start()
        except OSError as exc:
            raise settings.options_error(f"jitgate_spool_dir: cannot use {s.directory}: {exc.strerror}") from None
        if s.durable is not None:
            try:
                _check_durable(s.durable)
            except OSError as exc:
                spool.release()
                raise settings.options_error(
                    f"jitgate_durable_spool: cannot use {s.durable}: {exc.strerror}"
                ) from None
        self.spool = spool
        self.uploader = Uploader(
            spool,
            self._put_fn(opts, s.bucket),
            prefix=s.prefix,
            backoff_base=min(0.5, s.backoff_max_seconds),
            backoff_max=s.backoff_max_seconds,
            durable=s.durable,
        )
        self.uploader.start()  # ships leftovers of a previous run first, then what the durable spool holds

    def _put_fn(self, opts: Any, bucket: str) -> Any:
        if not bucket:
            logger.warning("jitgate_bucket is empty: session records stay in the spool")
            return None
        # Short timeouts and few SDK retries: the uploader has its own backoff, and a black-holed
        # endpoint must not pin the thread (or the shutdown) for minutes.
        s3 = self._s3 or self._aws.client(
            "s3", opts,
            config=BotoConfig(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"}),
        )

        def put(key: str, body: bytes) -> None:
            s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/x-ndjson")

        return put

    def _stop(self, **budget: float) -> None:
        if self.uploader is not None:
            self.uploader.stop(**budget)
            self.uploader = None

    def done(self) -> None:
        # At exit (SIGTERM: after addon/graceful_stop.py let the flows in flight finish): the open
        # segment closes and every segment ships, within jitgate_ship_timeout all told.
        self._stop(flush_timeout=self.ship_timeout, join_timeout=self.ship_timeout)
        self._executor.shutdown(wait=True)

    # -- hooks --------------------------------------------------------------------------------

    def request(self, flow: http.HTTPFlow) -> None:
        if meta.refused(flow) or self.spool is None:
            return
        if self.spool.admit(self.reserve_bytes):
            meta.state_of(flow).spool_reserved = self.reserve_bytes
        elif self.required:
            refuse(flow, AuditUnavailable("the session record cannot be written; the request is refused"))
            return
        meta.state_of(flow).audit_checked = True

    async def response(self, flow: http.HTTPFlow) -> None:
        await self._record(flow)

    async def error(self, flow: http.HTTPFlow) -> None:
        # No response, or an upstream that failed after its headers (truncated, over the body
        # size limit, cut mid-stream): `response` never ran, so the record is taken here.
        if not meta.state_of(flow).recorded:
            await self._record(flow)

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        # A CONNECT refused by token_gate never reaches `response`: record it here.
        if flow.response is not None and flow.response.status_code != 200:
            await self._record(flow)

    async def _record(self, flow: http.HTTPFlow) -> None:
        spool = self.spool
        if spool is None:
            return
        state = meta.state_of(flow)
        reserved, state.spool_reserved, state.recorded = state.spool_reserved, 0, True
        try:  # the line is built on the event loop; the write goes to the writer thread if it would wait
            await append_record(spool, lambda: self._line(flow), reserved=reserved, executor=self._executor)
        except Exception as exc:
            self.write_failures += 1
            logger.error("session record of flow %s not written: %s", flow.id, type(exc).__name__)
            if self.required and state.audit_checked and flow.response is not None:
                # The upstream answered but the answer cannot be recorded: it goes no further.
                flow.response = None
                refuse(flow, AuditUnavailable("the session record cannot be written; the answer is withheld"))

    def _line(self, flow: http.HTTPFlow) -> bytes:
        """The flow's record as one JSON line (CPU only: built on the event loop)."""
        try:
            record = build_record(flow, gateway=self.gateway, body_cap=self.body_cap, now=self._clock())
        finally:
            body.forget(flow)  # the recorder is the last reader of the parsed bodies
        return record.to_json_line()
