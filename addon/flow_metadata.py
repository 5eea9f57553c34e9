"""flow_metadata: a finished flow's state goes into `flow.metadata` once, as plain data.

Last in the chain, so after every other addon's `response` / `error` hook and before mitmproxy's
own flow writer (`mitmdump -w`, which runs after the script addons) saves the flow; at `done`
the flows still in flight get it too, as the writer saves those as well. The plain form holds no
credential (jitgate/flow_state.py `plain`).
"""

from __future__ import annotations

from mitmproxy import http

from addon import meta


class FlowMetadata:
    def response(self, flow: http.HTTPFlow) -> None:
        meta.publish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        meta.publish(flow)

    def done(self) -> None:
        for flow in meta.live():
            meta.publish(flow)


addons = [FlowMetadata()]
