"""Item shapes of the one DynamoDB table shared by broker and gateways.

Key schema: `pk` (S, partition) and `sk` (S, sort); `expires_at` (N, epoch seconds) is the TTL
attribute. DynamoDB deletes expired items late (moto never does), so every reader filters
on `expires_at` itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jitgate.token import Claims, revocation_live

# sk = jti; attrs: sub, revoked_by, revoked_at, expires_at (the token's exp plus the largest leeway)
REVOCATION_PK = "revocation"
APPROVAL_PK = "approval"  # sk = approval id; attrs: state, requester, decisions, expires_at, ...
HOLD_PK = "hold"  # sk = hold id (data-path approvals held by a gateway)


def usage_pk(jti: str) -> str:
    """Per-token request counter; its own partition so gateways do not contend on one key."""
    return f"usage#{jti}"


USAGE_SK = "count"

TOKEN_PK = "token"  # sk = jti; attrs: sub, oidc_iss, conn, issued_at, expires_at (who may revoke it)


def revocation_item_live(item: Mapping[str, Any], *, now: float) -> bool:
    """Whether a revocation item read from the table is still in force at `now`.

    An item whose `expires_at` cannot be read counts as in force: refusing a token too long fails
    closed, dropping a revocation early does not.
    """
    try:
        expires_at = float(item["expires_at"]["N"])
    except (KeyError, TypeError, ValueError):
        return True
    return revocation_live(expires_at, now=now)


def reserve_requests(dynamodb: Any, table: str, claims: Claims, block: int) -> int:
    """Reserve up to `block` uses on the token's shared counter; how many were granted (0: used up).

    One conditional update reserves the whole block while the budget has room for it; near the end
    of the budget it falls back to single uses, so the limit is never exceeded across gateways.
    """
    limit = claims.limits.max_requests
    assert limit is not None
    for size in (block, 1) if block > 1 else (1,):
        try:
            dynamodb.update_item(
                TableName=table,
                Key={"pk": {"S": usage_pk(claims.jti)}, "sk": {"S": USAGE_SK}},
                UpdateExpression="ADD n :k SET expires_at = if_not_exists(expires_at, :exp)",
                ConditionExpression="attribute_not_exists(n) OR n <= :room",
                ExpressionAttributeValues={
                    ":k": {"N": str(size)},
                    ":room": {"N": str(limit - size)},
                    ":exp": {"N": str(claims.exp)},
                },
            )
        except dynamodb.exceptions.ConditionalCheckFailedException:
            continue
        return size
    return 0


def fetch_revocations(dynamodb: Any, table: str, *, now: float) -> frozenset[str]:
    """Revoked `jti`s still in force at `now` (DynamoDB TTL deletes late, so filter).

    The filter is `revocation_item_live`, the rule the broker's revoke also uses, applied
    here rather than restated as a DynamoDB filter expression.
    """
    revoked: set[str] = set()
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk",
        "ProjectionExpression": "sk, expires_at",
        "ExpressionAttributeValues": {":pk": {"S": REVOCATION_PK}},
        "ConsistentRead": True,
    }
    while True:
        page = dynamodb.query(**kwargs)
        revoked.update(item["sk"]["S"] for item in page.get("Items", []) if revocation_item_live(item, now=now))
        if "LastEvaluatedKey" not in page:
            return frozenset(revoked)
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def revoked_among(dynamodb: Any, table: str, jtis: set[str], *, now: float) -> set[str]:
    """Which of `jtis` are revoked right now (one consistent batch read of pk="revocation")."""
    revoked: set[str] = set()
    ids = sorted(jtis)
    for i in range(0, len(ids), 100):
        keys = [{"pk": {"S": REVOCATION_PK}, "sk": {"S": j}} for j in ids[i : i + 100]]
        resp = dynamodb.batch_get_item(RequestItems={table: {"Keys": keys, "ConsistentRead": True}})
        if resp.get("UnprocessedKeys"):
            raise RuntimeError("revocation read incomplete")
        for item in resp.get("Responses", {}).get(table, []):
            if revocation_item_live(item, now=now):
                revoked.add(item["sk"]["S"])
    return revoked
