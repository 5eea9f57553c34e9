"""The gateway's log: JSON lines with no value from the traffic, and mitmdump's flow output off.

`LogJson` (first in the chain) gives mitmproxy's log handlers a formatter that writes each record
as one JSON object (jitgate/logline.py: named fields, the free-text message scrubbed), and keeps
`flow_detail` at 0 whoever sets it, at start (`--set`, `-v`) or later: above 0 mitmdump's dumper
prints every request's URL, query, headers (and at 3 bodies) to stdout, so tokens and secrets.

`FlowLog` (last in the chain) writes one line per flow the gateway refused or that failed:
flow id, client address, connection name, decision, error code and status, nothing else of the
request (no URL, host, method or header; any of them can carry a secret).
"""

from __future__ import annotations

import datetime
import logging
import traceback
import weakref
from typing import Any

from mitmproxy import ctx, exceptions, http

from addon import meta
from addon.mitmproxy_compat import IncompatibleMitmproxy
from jitgate.logline import render
from jitgate.records import Decision, decision_of

logger = logging.getLogger(__name__)

_CONFIGURATION_ERRORS = (exceptions.OptionsError, IncompatibleMitmproxy)


def _address(value: Any) -> Any:
    if isinstance(value, tuple) and len(value) >= 2:
        return f"{value[0]}:{value[1]}"
    return value


class JsonFormatter(logging.Formatter):
    """A log record as one JSON line (jitgate.logline.render)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = dict(record.__dict__)
        fields["client"] = _address(fields.get("client"))
        if record.exc_info and record.exc_info[0] is not None:
            # The type and where it was raised; the text only of an option error or a mitmproxy
            # that does not fit (ours, about the gateway's configuration: what an operator must
            # read), never of others (traffic).
            fields["exc"] = record.exc_info[0].__name__
            if isinstance(record.exc_info[1], _CONFIGURATION_ERRORS):
                fields["error"] = str(record.exc_info[1])
            frames = traceback.extract_tb(record.exc_info[2])
            fields["trace"] = " < ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in reversed(frames))
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds")
        return render(
            time=when, level=record.levelname.lower(), logger=record.name, message=record.getMessage(), fields=fields
        )


def _log_handlers() -> list[logging.Handler]:
    """The handlers that write mitmproxy's log (its terminal log and start-up error check)."""
    from mitmproxy import log

    return [h for h in logging.getLogger().handlers if isinstance(h, log.MitmLogHandler)]


# Libraries whose debug lines carry request and answer bodies (a secret fetched from Secrets
# Manager, a signed request): never below info, whatever termlog_verbosity says.
_QUIET = ("botocore", "boto3", "s3transfer", "urllib3", "httpx", "httpcore")


class LogJson:
    """Kept for the process's life: mitmproxy logs on after the addons' `done` (the last upload)."""

    def __init__(self) -> None:
        self.install()

    def install(self) -> None:
        formatter = JsonFormatter()
        for handler in _log_handlers():
            handler.setFormatter(formatter)
        for name in _QUIET:
            logging.getLogger(name).setLevel(logging.INFO)

    def load(self, loader: Any) -> None:
        self.install()  # handlers added after this script was imported

    def configure(self, updated: set[str]) -> None:
        if "flow_detail" in updated and getattr(ctx.options, "flow_detail", 0) != 0:
            logger.warning("jitgate: flow_detail kept at 0 (mitmdump's flow output prints URLs, headers and bodies)")
            ctx.options.update(flow_detail=0)  # type: ignore[no-untyped-call]


class FlowLog:
    def __init__(self) -> None:
        self._logged: weakref.WeakSet[http.HTTPFlow] = weakref.WeakSet()

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None and meta.state_of(flow).error is not None:
            self._log(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        self._log(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._log(flow)

    def _log(self, flow: http.HTTPFlow) -> None:
        state = meta.state_of(flow)
        code = state.error
        decision = decision_of(state.decision, code)
        failed = flow.error is not None
        if (decision is Decision.ALLOWED and code is None and not failed) or flow in self._logged:
            return
        self._logged.add(flow)
        fields = {
            "event": "flow_error" if failed else "flow",
            "flow": flow.id,
            "client": _address(flow.client_conn.peername),
            "conn": state.connection_name,
            "decision": decision.value,
            "code": code,
            "status": flow.response.status_code if flow.response is not None else None,
        }
        logger.info("jitgate: flow %s %s", decision.value, code or ("failed" if failed else ""), extra=fields)
