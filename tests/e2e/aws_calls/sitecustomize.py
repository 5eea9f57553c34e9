"""Loaded into the gateway process (PYTHONPATH) by tests/e2e/test_gateway_aws_calls.py: every AWS
API call botocore makes is appended to $JITGATE_AWS_CALLS as one JSON line (service, operation
and, for DynamoDB, the partition keys it touches). Names and keys only, never values."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

_PATH = os.environ.get("JITGATE_AWS_CALLS")
_LOCK = threading.Lock()


def _pks(params: dict[str, Any]) -> list[str]:
    keys: list[Any] = []
    for name in ("Key", "Item"):
        if name in params:
            keys.append(params[name])
    for spec in params.get("RequestItems", {}).values():
        keys.extend(spec.get("Keys", []))
    out = [k["pk"]["S"] for k in keys if "pk" in k]
    values = params.get("ExpressionAttributeValues", {})
    if "pk = :pk" in params.get("KeyConditionExpression", ""):
        out.append(values[":pk"]["S"])
    return out


if _PATH:
    from botocore.client import BaseClient

    _original = BaseClient._make_api_call

    def _recorded(self: Any, operation: str, params: dict[str, Any]) -> Any:
        line = {"service": self.meta.service_model.service_name, "operation": operation, "pks": _pks(params)}
        with _LOCK, open(_PATH, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        return _original(self, operation, params)

    BaseClient._make_api_call = _recorded  # type: ignore[method-assign]
