"""Approvals in the shared DynamoDB table, written only with conditions so nobody races.

A new approval is created with `attribute_not_exists`; every later change is a read, a pure
step from jitgate.approvals, and a write conditional on the `version` read. Two approvers
voting at once therefore both count (the loser re-reads and votes on the new state), and a
gateway closing a timed-out hold cannot overwrite an approval that landed a moment earlier.
The DynamoDB client is passed in (low-level `dynamodb` client); this module imports no boto3.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from jitgate.approvals import Approval, Kind, from_item, item_expired, pk_for, to_item
from jitgate.errors import ApprovalUnavailable, NotFound
from jitgate.state import APPROVAL_PK, HOLD_PK

_BATCH = 100
_ATTEMPTS = 8


class Conflict(Exception):
    """The item changed (or appeared) since it was read; read again and redo the step."""


def _is_conditional_failure(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    return isinstance(response, dict) and response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _unavailable() -> ApprovalUnavailable:
    return ApprovalUnavailable("the approval state cannot be read or written right now")


class ApprovalStore:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._ddb = dynamodb
        self._table = table

    def create(self, approval: Approval, *, now: float) -> None:
        try:
            self._ddb.put_item(
                TableName=self._table,
                Item=to_item(approval, version=1, now=now),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except Exception as exc:
            if _is_conditional_failure(exc):
                raise Conflict(approval.id) from None
            raise _unavailable() from None

    def get(self, approval_id: str, *, now: float) -> tuple[Approval, int] | None:
        """The approval and its version; None when it does not exist (or is past its retention)."""
        try:
            resp = self._ddb.get_item(
                TableName=self._table,
                Key={"pk": {"S": pk_for(approval_id)}, "sk": {"S": approval_id}},
                ConsistentRead=True,
            )
        except Exception:
            raise _unavailable() from None
        item = resp.get("Item")
        if not item or item_expired(item, now):
            return None
        try:
            return from_item(item)
        except ValueError:
            return None

    def put(self, approval: Approval, *, version: int, now: float) -> int:
        """Write `approval` if the item is still at `version`; return the new version."""
        try:
            self._ddb.put_item(
                TableName=self._table,
                Item=to_item(approval, version=version + 1, now=now),
                ConditionExpression="version = :v",
                ExpressionAttributeValues={":v": {"N": str(version)}},
            )
        except Exception as exc:
            if _is_conditional_failure(exc):
                raise Conflict(approval.id) from None
            raise _unavailable() from None
        return version + 1

    def update(
        self,
        approval_id: str,
        step: Callable[[Approval], Approval],
        *,
        now: Callable[[], float],
        attempts: int = _ATTEMPTS,
    ) -> tuple[Approval, Approval]:
        """Apply the pure `step` with optimistic concurrency; return (before, after).

        `step` may raise a JitgateError (not allowed) which is passed through unchanged.
        """
        for _ in range(attempts):
            t = now()
            found = self.get(approval_id, now=t)
            if found is None:
                raise NotFound("no such approval")
            before, version = found
            after = step(before)
            try:
                self.put(after, version=version, now=t)
            except Conflict:
                continue
            return before, after
        raise ApprovalUnavailable("the approval is changing too fast; try again")

    def scan(self, kinds: Iterable[Kind] = ("issuance", "hold"), *, now: float) -> list[tuple[Approval, int]]:
        """Every live approval of `kinds` (callers filter by state and approver)."""
        out: list[tuple[Approval, int]] = []
        for kind in kinds:
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "KeyConditionExpression": "pk = :pk",
                "FilterExpression": "expires_at > :now",
                "ExpressionAttributeValues": {
                    ":pk": {"S": HOLD_PK if kind == "hold" else APPROVAL_PK},
                    ":now": {"N": str(int(now))},
                },
                "ConsistentRead": True,
            }
            while True:
                try:
                    page = self._ddb.query(**kwargs)
                except Exception:
                    raise _unavailable() from None
                for item in page.get("Items", []):
                    try:
                        out.append(from_item(item))
                    except ValueError:
                        continue
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return out

    def get_many(self, approval_ids: Iterable[str], *, now: float) -> dict[str, tuple[Approval, int]]:
        """Batch read (what a gateway polls for its holds); ids not returned this time are absent."""
        ids = list(dict.fromkeys(approval_ids))
        out: dict[str, tuple[Approval, int]] = {}
        for i in range(0, len(ids), _BATCH):
            keys = [{"pk": {"S": pk_for(a)}, "sk": {"S": a}} for a in ids[i : i + _BATCH]]
            try:
                resp = self._ddb.batch_get_item(
                    RequestItems={self._table: {"Keys": keys, "ConsistentRead": True}}
                )
            except Exception:
                raise _unavailable() from None
            for item in resp.get("Responses", {}).get(self._table, []):
                if item_expired(item, now):
                    continue
                try:
                    approval, version = from_item(item)
                except ValueError:
                    continue
                out[approval.id] = (approval, version)
        return out

