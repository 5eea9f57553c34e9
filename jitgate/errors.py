"""One root error with narrow children, each carrying a stable `code` and HTTP status.

The codes are a public contract: clients, tests and dashboards match on them. Every code any
part of jitgate answers or reports is defined here and nowhere else (`CODES` maps each to its
class). The tree follows the HTTP status: a child answers its parent's status, and a class with
a status of its own hangs from the root. Messages are for humans and never contain a token, a
secret or an exception's text from below.
"""

from __future__ import annotations


class JitgateError(Exception):
    """Root of every error jitgate reports across a boundary."""

    code: str = "internal_error"
    status: int = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class BadRequest(JitgateError):
    """The request is malformed: bad JSON, a missing or ill-typed field."""

    code = "bad_request"
    status = 400


class Unauthenticated(JitgateError):
    """No identity could be established (missing or invalid OIDC token)."""

    code = "unauthenticated"
    status = 401


class InvalidToken(Unauthenticated):
    """A token failed verification; every signature failure collapses into this one error."""

    code = "invalid_token"


class UnknownKeyId(InvalidToken):
    """The token names a `kid` the verifier does not hold; the caller may refresh its JWKS once."""


class TokenExpired(InvalidToken):
    """The token's signature is good but its `exp` has passed."""

    code = "token_expired"


class TokenNotYetValid(InvalidToken):
    """The token's signature is good but its `nbf` lies in the future."""

    code = "token_not_yet_valid"


class Forbidden(JitgateError):
    """The caller is known but may not do this."""

    code = "forbidden"
    status = 403


class NotGranted(Forbidden):
    """No grant in the policy allows this identity this connection or these operations."""

    code = "not_granted"


class TokenRevoked(Forbidden):
    """The token was revoked."""

    code = "token_revoked"


class NotFound(JitgateError):
    """The named thing does not exist."""

    code = "not_found"
    status = 404


class UnknownConnection(NotFound):
    """The policy has no connection of that name."""

    code = "unknown_connection"


class Unavailable(JitgateError):
    """A check could not be made (a dependency is down); the request is refused, fail closed."""

    code = "unavailable"
    status = 503


class PolicyError(JitgateError):
    """The policy file is invalid; the message names the field and the line."""

    code = "policy_invalid"
    status = 500


class CaInvalid(JitgateError):
    """The gateway CA given (a secret's value, a file) is not one CA certificate with its key."""

    code = "ca_invalid"
    status = 500


class CaUnavailable(Unavailable):
    """The gateway CA could not be read from or stored in Secrets Manager."""

    code = "ca_unavailable"


class GatewayStopping(Unavailable):
    """The gateway is stopping (SIGTERM): a new request on an open connection is refused, to retry elsewhere."""

    code = "gateway_stopping"


class AuditUnavailable(Unavailable):
    """The record cannot be written (a gateway's flow record, the broker's token event); nothing goes on unrecorded."""

    code = "audit_unavailable"


# -- gateway data path (token_gate, scope_guard, credential_inject) -------------------------------


class TokenRequired(JitgateError):
    """No JIT token came with the request: neither as proxy credentials nor as the API key (407, as proxyauth)."""

    code = "token_required"
    status = 407


class KeysUnavailable(Unavailable):
    """The token names an unknown `kid` and the broker's JWKS could not be fetched."""

    code = "jwks_unavailable"


class RevocationUnavailable(Unavailable):
    """The revocation list is older than its staleness bound; no token can be trusted."""

    code = "revocation_unavailable"


class HostNotAllowed(Forbidden):
    """The destination host belongs to no connection: the gateway is no open proxy."""

    code = "host_not_allowed"


class WrongConnection(Forbidden):
    """The token was issued for another connection than the one this host belongs to."""

    code = "wrong_connection"


class OperationNotAllowed(Forbidden):
    """The request is not one of the token's operations (or no named operation at all)."""

    code = "operation_not_allowed"


class CollectionNotAllowed(Forbidden):
    """The request touches a store collection outside the token's scope."""

    code = "collection_not_allowed"


class DatabaseNotAllowed(Forbidden):
    """The request names a store tenant or database other than the token's."""

    code = "database_not_allowed"


class FieldNotAllowed(Forbidden):
    """A store query filters on a record field or metadata key the token may not see."""

    code = "field_not_allowed"


class CollectionUnresolved(Forbidden):
    """A store collection id the gateway cannot resolve to a name: refused, never passed on."""

    code = "collection_unresolved"


class UpgradeNotAllowed(Forbidden):
    """The request asks to switch protocols (WebSocket, raw TCP), which the gateway cannot inspect."""

    code = "upgrade_not_allowed"


class TrailersNotAllowed(Forbidden):
    """The request carries trailer fields (HTTP/2), which the gateway does not inspect."""

    code = "trailers_not_allowed"


class HeaderNotAllowed(Forbidden):
    """The request carries a header by which upstreams take another method, URL or host than the scope checked."""

    code = "header_not_allowed"


class MethodNotAllowed(BadRequest):
    """The request method is no exact upper-case token (RFC 9110 §9.1), so an upstream may read it otherwise."""

    code = "method_not_allowed"


class HostInvalid(BadRequest):
    """The request has no Host, more than one, or one that is no host[:port] (RFC 9112 §3.2)."""

    code = "host_invalid"


class RequestLimitExceeded(JitgateError):
    """The token has used up its `max_requests`."""

    code = "request_limit_exceeded"
    status = 429


class PayloadTooLarge(JitgateError):
    """The request is over the token's `max_bytes` or `max_documents`."""

    code = "payload_too_large"
    status = 413


class UsageUnavailable(Unavailable):
    """The per-token request counter could not be updated."""

    code = "usage_unavailable"


class CredentialUnavailable(Unavailable):
    """The upstream credential could not be read from Secrets Manager and none is cached."""

    code = "credential_unavailable"


class UpstreamResponseInvalid(JitgateError):
    """A store response could not be filtered to the token's fields, so it is withheld."""

    code = "upstream_response_invalid"
    status = 502


class UpstreamResponseTooLarge(JitgateError):
    """The upstream's response decodes to more than the gateway inspects (a decompression bomb), so it is withheld."""

    code = "upstream_response_too_large"
    status = 502


class UpstreamTimeout(JitgateError):
    """The upstream sent no response headers within the gateway's upstream timeout."""

    code = "upstream_timeout"
    status = 504


class UpstreamUnavailable(JitgateError):
    """The upstream could not be reached, or closed the connection before it answered."""

    code = "upstream_unavailable"
    status = 502


class GatewayError(JitgateError):
    """The gateway could not complete the request for a reason no narrower code names."""

    code = "gateway_error"
    status = 500


# -- broker (issuance, revocation) -----------------------------------------------------------------


class UnknownTokenId(NotFound):
    """No live token with that `jti` was issued by this broker (or it has already expired)."""

    code = "unknown_token"


class NotTokenOwner(Forbidden):
    """Only the token's own subject or a policy admin may revoke it."""

    code = "not_token_owner"


class ApprovalRequired(Forbidden):
    """The grant needs a human approval before issuance, and none was given."""

    code = "approval_required"


class SigningUnavailable(Unavailable):
    """The KMS signing key could not be used; no token is issued."""

    code = "signing_unavailable"


class IssuerUnavailable(Unavailable):
    """The OIDC issuer's keys could not be fetched and none are cached."""

    code = "issuer_unavailable"


# -- approvals (issuance approvals and data-path holds) -------------------------------------------


class ApprovalDenied(Forbidden):
    """An approver denied the request (one denial denies)."""

    code = "approval_denied"


class ApprovalTimeout(Forbidden):
    """No approver decided a held request before its timeout; the request was not forwarded."""

    code = "approval_timeout"


class ApprovalExpired(JitgateError):
    """The approval request expired before enough approvers agreed."""

    code = "approval_expired"
    status = 410


class ApprovalClosed(JitgateError):
    """The approval was already decided (or collected); it takes no more votes."""

    code = "approval_closed"
    status = 409


class SelfApproval(Forbidden):
    """The requester may never approve or deny their own request."""

    code = "self_approval"


class NotAnApprover(Forbidden):
    """The caller is not among the approvers the policy names for this request."""

    code = "not_an_approver"


class AlreadyVoted(JitgateError):
    """This approver already voted on this approval; N of M counts distinct approvers."""

    code = "already_voted"
    status = 409


class ApprovalUnavailable(Unavailable):
    """The approval state could not be read or written; the request stays held or is refused."""

    code = "approval_unavailable"


class LeakBlocked(Forbidden):
    """The request carries a secret (or PII the profile blocks); the answer lists types and places, never values."""

    code = "leak_blocked"


class BodyNotDecodable(BadRequest):
    """A body's content encoding cannot be decoded, so it cannot be inspected."""

    code = "body_not_decodable"


class BodyNotUtf8(BadRequest):
    """A body is not UTF-8 without a byte order mark (RFC 8259 §8.1): inspection cannot read it as a parser would."""

    code = "body_not_utf8"


class BodyInvalidJson(BadRequest):
    """A body that is or claims to be JSON is no strict JSON (duplicate keys, NaN, an overflowing number, too deep)."""

    code = "body_invalid_json"


class UpstreamResponseNotUtf8(UpstreamResponseInvalid):
    """An upstream answer is not UTF-8 without a byte order mark, so it cannot be masked as a client would read it."""

    code = "upstream_response_not_utf8"


class MisdirectedRequest(JitgateError):
    """The client's TLS server name (SNI) names another host than the tunnel it came through."""

    code = "misdirected_request"
    status = 421



# -- the Postgres listener (SQLSTATE 42501 for a refusal, 28000 for the token, 08P01 for the protocol) ----


class SqlRefused(Forbidden):
    """A statement the token may not run, or one the gateway cannot read as the server would."""

    code = "sql_refused"


class SqlNotParsed(SqlRefused):
    """PostgreSQL's parser (pglast) rejects the statement, so it cannot be checked."""

    code = "sql_not_parsed"


class StatementNotAllowed(SqlRefused):
    """A kind of statement or clause the gateway never forwards (COPY, DO, PREPARE, CREATE, ...)."""

    code = "statement_not_allowed"


class TableNotAllowed(SqlRefused):
    """A table outside the token's `collections`, or a catalog that is never readable."""

    code = "table_not_allowed"


class ColumnNotAllowed(SqlRefused):
    """A column outside the token's `fields` for its table, or `*` on a table with column limits."""

    code = "column_not_allowed"


class ColumnMasked(SqlRefused):
    """A column the grant's `mask_columns` masks, used other than selected as it is (filtered, computed, ...)."""

    code = "column_masked"


class FunctionNotAllowed(SqlRefused):
    """A function or operator outside the gateway's allow-list."""

    code = "function_not_allowed"


class SettingNotAllowed(SqlRefused):
    """A SET / SHOW of a setting outside the harmless list (search_path, role, session_authorization, ...)."""

    code = "setting_not_allowed"


class InFailedTransaction(SqlRefused):
    """A statement after a refusal inside a transaction: as on the server, only ROLLBACK ends it."""

    code = "in_failed_transaction"


class SessionSettingsInvalid(Forbidden):
    """The token's identity cannot be handed to the database as `jitgate.*` settings (too long, a NUL)."""

    code = "session_settings_invalid"


class TlsRequired(Unauthenticated):
    """A Postgres client started without TLS: the token is a password and never crosses the wire in clear."""

    code = "tls_required"


class ReplicationNotAllowed(Forbidden):
    """A Postgres replication startup: the gateway relays queries only."""

    code = "replication_not_allowed"


class ProtocolViolation(BadRequest):
    """A Postgres frontend message the gateway cannot accept (unknown type, bad length, out of order)."""

    code = "pg_protocol_violation"


class RowLimitExceeded(Forbidden):
    """A statement's result passed the token's row or byte limit: an error, never a silent cut."""

    code = "row_limit_exceeded"


class ResultNotMaskable(Forbidden):
    """Result rows arrived without a row description the gateway read: they cannot be masked, so
    they are refused (fail closed)."""

    code = "result_not_maskable"


# -- broker configuration and the broker's clients (CLI, local stack) ------------------------------


class BrokerMisconfigured(JitgateError):
    """A required broker setting is missing or invalid; the broker refuses every request."""

    code = "broker_misconfigured"
    status = 500


class NoOidcToken(Unauthenticated):
    """No OIDC token source is configured, or the configured one gave nothing."""

    code = "oidc_token_missing"


class BrokerUnreachable(Unavailable):
    """The broker could not be reached at all (connection refused, timeout, TLS failure)."""

    code = "broker_unreachable"


class BrokerError(JitgateError):
    """The broker answered an error the client cannot read as a jitgate error (no JSON, an unknown code)."""

    code = "broker_error"
    status = 502


class GatewayUnreachable(Unavailable):
    """`jitgate run` could not reach the gateway, or what answered is no jitgate gateway; nothing was minted."""

    code = "gateway_unreachable"


class GatewayUntrusted(JitgateError):
    """The gateway answered but does not verify this broker's tokens, or the job would not trust its CA."""

    code = "gateway_untrusted"
    status = 502


class ApprovalPending(JitgateError):
    """Issuance still waits for approvers after the client's wait; the approval stays open (202, no token)."""

    code = "approval_pending"
    status = 202


def _defined(root: type[JitgateError]) -> dict[str, type[JitgateError]]:
    found = {root.code: root} if "code" in vars(root) else {}
    for child in root.__subclasses__():
        for code, cls in _defined(child).items():
            if code in found:
                raise RuntimeError(f"error code {code!r} is defined twice")  # an import-time bug
            found[code] = cls
    return found


CODES: dict[str, type[JitgateError]] = _defined(JitgateError)
"""Every stable code, mapped to the class that defines it."""


def error_for(code: str, message: str, *, status: int) -> JitgateError:
    """The error a jitgate service answered (`code`, `message`, `status`) as its class; BrokerError when unknown."""
    cls = CODES.get(code)
    if cls is None:
        return BrokerError(f"the broker answered HTTP {status} with an unknown code: {message}", status=status)
    return cls(message, status=status)
