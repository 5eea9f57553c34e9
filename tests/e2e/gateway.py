"""The real-mitmdump gateway helpers for end-to-end tests; they live in jitgate.devstack.gateway
(shared with `jitgate dev`, the demo and the benchmarks) and are re-exported here."""

from __future__ import annotations

from jitgate.devstack.gateway import ENTRY, MITMDUMP, Gateway, jitgate_options, start_gateway, write_bundle

__all__ = ["ENTRY", "MITMDUMP", "Gateway", "jitgate_options", "start_gateway", "write_bundle"]
