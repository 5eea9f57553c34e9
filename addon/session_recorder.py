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
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader

from addon import body, meta, record_shipping, settings, worker_health
from addon.flow_record import build_record
from addon.respond import refuse
from jitgate.errors import AuditUnavailable
from jitgate.spool import Spool, Uploader, append_record

logger = logging.getLogger(__name__)


class SessionRecorder:
    def __init__(
        self, *, s3: Any = None, clock: Any = time.time, aws: settings.AwsClients | None = None,
        parts: worker_health.WorkerParts | None = None,
    ) -> None:
        self._aws = aws or settings.AwsClients()
        self._parts = parts  # its spool and uploader, read by metrics
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
        config = record_shipping.spool_config(s)
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
        self.spool = record_shipping.start_spool(config, s, self._clock)
        put = record_shipping.put_fn(self._aws, self._s3, opts, s.bucket)
        self.uploader = record_shipping.start_uploader(self.spool, s, put)
        worker_health.publish(self._parts, spool=self.spool, uploader=self.uploader)

    def _stop(self, **budget: float) -> None:
        if self.uploader is not None:
            self.uploader.stop(**budget)
            self.uploader = None
            worker_health.publish(self._parts, uploader=None)

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
