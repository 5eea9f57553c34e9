"""Token records and revocations in the shared DynamoDB table (jitgate/state.py).

At issuance the broker records who a token belongs to (pk="token", sk=jti), so a later
DELETE can check that the caller is its subject. A revocation (pk="revocation", sk=jti) is
kept until no gateway could accept the token any more (its `exp` plus the largest leeway,
`jitgate.token.revocation_expires_at`), and a token can be revoked until then. Readers filter on
`expires_at` themselves with `jitgate.token.revocation_live`, since DynamoDB deletes expired
items late.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from jitgate.errors import NotTokenOwner, Unavailable, UnknownTokenId
from jitgate.policy import Identity
from jitgate.state import REVOCATION_PK, TOKEN_PK
from jitgate.token import Claims, revocation_expires_at, revocation_live


@dataclass(frozen=True)
class Revocation:
    jti: str
    sub: str
    revoked_by: str
    revoked_at: int
    expires_at: int
    already: bool


def _unavailable() -> Unavailable:
    return Unavailable("the token state store cannot be reached")


class TokenStore:
    def __init__(self, ddb: Any, table: str) -> None:
        self._ddb = ddb
        self._table = table

    def record_issued(self, claims: Claims, *, oidc_issuer: str) -> None:
        item = {
            "pk": {"S": TOKEN_PK},
            "sk": {"S": claims.jti},
            "sub": {"S": claims.sub},
            "oidc_iss": {"S": oidc_issuer},
            "conn": {"S": claims.conn},
            "issued_at": {"N": str(claims.iat)},
            "expires_at": {"N": str(claims.exp)},
        }
        try:
            self._ddb.put_item(TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)")
        except (ClientError, BotoCoreError):
            raise _unavailable() from None

    def revoke(self, jti: str, identity: Identity, *, admin: bool, now: int) -> Revocation:
        """Revoke `jti` if `identity` owns it or is an admin; revoking twice answers the first revocation."""
        try:
            found = self._ddb.get_item(
                TableName=self._table, Key={"pk": {"S": TOKEN_PK}, "sk": {"S": jti}}, ConsistentRead=True
            ).get("Item")
        except (ClientError, BotoCoreError):
            raise _unavailable() from None
        # A token a gateway may still accept (within its leeway past exp) can still be revoked.
        expires_at = int(found["expires_at"]["N"]) if found is not None else 0
        if found is None or not revocation_live(revocation_expires_at(expires_at), now=now):
            raise UnknownTokenId("no live token has that id")
        sub, oidc_iss = found["sub"]["S"], found["oidc_iss"]["S"]
        owner = identity.subject == sub and identity.issuer == oidc_iss
        if not (owner or admin):
            raise NotTokenOwner("only the token's subject or an admin may revoke it")
        item = {
            "pk": {"S": REVOCATION_PK},
            "sk": {"S": jti},
            "sub": {"S": sub},
            "revoked_by": {"S": identity.subject},
            "revoked_at": {"N": str(now)},
            "expires_at": {"N": str(revocation_expires_at(expires_at))},
        }
        try:
            self._ddb.put_item(TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise _unavailable() from None
            return self._existing(jti, sub, expires_at)
        except BotoCoreError:
            raise _unavailable() from None
        return Revocation(jti, sub, identity.subject, now, expires_at, already=False)

    def _existing(self, jti: str, sub: str, expires_at: int) -> Revocation:
        try:
            item = self._ddb.get_item(
                TableName=self._table, Key={"pk": {"S": REVOCATION_PK}, "sk": {"S": jti}}, ConsistentRead=True
            )["Item"]
        except (ClientError, BotoCoreError, KeyError):
            raise _unavailable() from None
        return Revocation(jti, sub, item["revoked_by"]["S"], int(item["revoked_at"]["N"]), expires_at, already=True)
