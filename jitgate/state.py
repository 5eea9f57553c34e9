"""Item shapes of the one DynamoDB table shared by broker and gateways.

Key schema: `pk` (S, partition) and `sk` (S, sort); `expires_at` (N, epoch seconds) is the TTL
attribute. DynamoDB deletes expired items late (moto never does), so every reader filters
on `expires_at` itself.
"""

from __future__ import annotations

REVOCATION_PK = "revocation"  # sk = jti; attrs: sub, revoked_by, revoked_at, expires_at
APPROVAL_PK = "approval"  # sk = approval id; attrs: state, requester, decisions, expires_at, ...
HOLD_PK = "hold"  # sk = hold id (data-path approvals held by a gateway)


def usage_pk(jti: str) -> str:
    """Per-token request counter; its own partition so gateways do not contend on one key."""
    return f"usage#{jti}"


USAGE_SK = "count"

TOKEN_PK = "token"  # sk = jti; attrs: sub, oidc_iss, conn, issued_at, expires_at (who may revoke it)
