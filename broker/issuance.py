"""Issuing one token, the same way for POST /v1/tokens and for an approval's collection.

The grant decision (jitgate.policy.evaluate_grants, with the broker's default TTL) is the only
place the token's lifetime is decided; this module turns a decision into claims, records who
owns the token, signs it with KMS and writes the `issued` token event. An issuance whose event
cannot be written is refused (the signed token is never handed out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from broker.audit import EventSink
from broker.observability import logger, metrics
from broker.revocation import TokenStore
from broker.signer import KmsSigner
from jitgate.events import TokenEvent
from jitgate.policy import Decision, Identity, Policy, TokenRequest, evaluate_grants
from jitgate.token import AUDIENCE, Claims, Scope, new_jti

PROXY_HINT = "HTTPS_PROXY=http://jit:<token>@<gateway>:8080"
# Dialects whose clients are pointed at the upstream by URL (no public vendor name): the answer says where.
SELF_HOSTED = frozenset({"chroma", "tei"})


@dataclass(frozen=True)
class Issuance:
    """Decide and mint tokens: the policy, the broker's default TTL, the signer, the token store, the audit sink."""

    policy: Policy
    default_ttl: int
    signer: KmsSigner
    tokens: TokenStore
    events: EventSink

    def decide(self, identity: Identity, request: TokenRequest) -> Decision:
        """The grant's decision for `request`, its TTL included (the one the token will get)."""
        return evaluate_grants(self.policy, identity, request, default_ttl=self.default_ttl)

    def issue(
        self,
        *,
        broker_url: str,
        identity: Identity,
        request: TokenRequest,
        decision: Decision,
        fields: dict[str, Any],
        now: int,
        jti: str | None = None,
        apv: str | None = None,
    ) -> dict[str, Any]:
        """Mint, record and audit one token; the answer body. `apv` names the approval it was collected from.

        `fields` is the token event so far (route, identity, request); it is completed here.
        """
        conn = self.policy.connections[decision.connection]
        claims = Claims(
            iss=broker_url,
            aud=AUDIENCE,
            sub=identity.subject,
            iat=now,
            nbf=now,
            exp=now + decision.ttl,
            jti=jti or new_jti(),
            conn=decision.connection,
            scope=Scope(
                operations=decision.operations, collections=decision.collections, fields=decision.fields,
                tenant=decision.tenant, database=decision.database, mask_columns=decision.mask_columns,
            ),
            limits=decision.limits,
            mask=decision.mask,
            job=request.job,
            apv=apv,
            groups=tuple(identity.values("groups")) or None,
        )
        fields.update(apv=apv, jti=claims.jti, ttl=decision.ttl, clamped=decision.clamped, expires_at=claims.exp)
        fields.update(mask=claims.mask, kid=self.signer.key_id)
        self.tokens.record_issued(claims, oidc_issuer=identity.issuer)
        token = self.signer.sign(claims)
        self.events.write(TokenEvent(**fields, status=201))
        metrics.add_metric(name="TokensIssued", unit=MetricUnit.Count, value=1)
        logger.info(
            "token issued", extra={"jti": claims.jti, "sub": claims.sub, "conn": claims.conn, "ttl": decision.ttl}
        )
        return {
            "token": token,
            "jti": claims.jti,
            "expires_at": claims.exp,
            "ttl": decision.ttl,
            "clamped": decision.clamped,
            "connection": claims.conn,
            "operations": list(decision.operations),
            "key_env": conn.key_env[0] if conn.key_env else None,  # older clients read one name
            "key_envs": list(conn.key_env),
            "proxy_hint": PROXY_HINT,
            # A postgres connection: `jitgate run` sets libpq's variables instead of a proxy; a
            # self-hosted one (Chroma, TEI): where its client points (through the gateway), for
            # CHROMA_HOST & co. and so that NO_PROXY does not send a loopback upstream around it.
            "dialect": conn.dialect,
            "database": conn.database or None,
            **({"upstream": conn.upstream} if conn.dialect in SELF_HOSTED else {}),
        }
