"""The scope checks of one request around `jitgate.scope.scope_error`, whatever protocol carried it.

Which connection a verified token may use for a host (`token_connection`: only the token names
it, a host or tunnel can only make the request fail), the token's body limits (`limits_error`:
bytes as sent and once decoded, sized without decoding a bomb, and the document count), and
this gateway's share of a token's `max_requests` (`UsageLeases`: uses reserved in blocks from the
shared counter, so most requests make no AWS call).
"""

from __future__ import annotations

from collections.abc import Callable

from jitgate import jsontext
from jitgate.decoding import DEFAULT_DECODED_LIMIT, bomb_check
from jitgate.errors import BadRequest, BodyNotDecodable, HostNotAllowed, JitgateError, PayloadTooLarge, WrongConnection
from jitgate.jsontext import NOT_JSON, BodyText
from jitgate.policy import Connection, Policy
from jitgate.scope import document_count
from jitgate.token import Claims, Limits

NO_OPEN_PROXY = "this host belongs to no connection; the gateway is no open proxy"


def served(policy: Policy | None, host: str) -> bool:
    """True when some connection serves `host` (a host of none is refused: no open proxy)."""
    return bool(policy.connections_for_host(host)) if policy is not None else False


def token_connection(
    policy: Policy | None, claims: Claims, host: str, tunnel_host: str | None
) -> Connection | JitgateError:
    """The token's connection for a request to `host` (inside a tunnel to `tunnel_host`), or why
    the request may not use it. Only the token names the connection: a Host header, CONNECT target
    or key header can at most make the request fail, never switch it to another connection
    serving the same host."""
    if policy is None or not served(policy, host) or (tunnel_host is not None and not served(policy, tunnel_host)):
        return HostNotAllowed(NO_OPEN_PROXY)
    conn = policy.connection_for_host(host, claims.conn)
    if conn is None:
        return WrongConnection(f"this token is for connection {claims.conn!r}, which does not serve this host")
    # Inside a CONNECT tunnel the Host header must stay on the tunnel's connection.
    if tunnel_host is not None and policy.connection_for_host(tunnel_host, claims.conn) is None:
        return HostNotAllowed("the Host header leaves the tunnel's connection")
    return conn


def limits_error(
    limits: Limits, dialect: str, operation: str, raw: bytes, encoding: str, text: Callable[[], BodyText]
) -> JitgateError | None:
    """Why the request body is over the token's limits, or None. `text()` reads the body (once per
    request, shared with the inspection), asked only when the documents must be counted."""
    if limits.max_bytes is not None and len(raw) > limits.max_bytes:
        return PayloadTooLarge(f"the request body is over this token's {limits.max_bytes} bytes")
    # Sized without decoding it whole: a gzip bomb must not cost its decoded size.
    bound = limits.max_bytes if limits.max_bytes is not None else DEFAULT_DECODED_LIMIT
    over = bomb_check(raw, encoding, bound)
    if over is None:
        return BodyNotDecodable("the request body's content encoding cannot be decoded")
    if over:
        return PayloadTooLarge(f"the request body is over {bound} bytes once decoded")
    if limits.max_documents is None:
        return None
    body = text()
    if body.problem is not None:
        return jsontext.refusal(body.problem)  # as the inspection would answer it
    if body.value is NOT_JSON:
        return BadRequest("the request body is not JSON, so its documents cannot be counted")
    count = document_count(dialect, operation, body.value)
    if count is None:
        return BadRequest("the request's documents cannot be counted")
    if count > limits.max_documents:
        return PayloadTooLarge(f"{count} documents are over this token's {limits.max_documents}")
    return None


class UsageLeases:
    """This gateway's unused reservations of each token's `max_requests`, refilled from the
    shared counter by the caller; counters only grow, so a token once exhausted is refused here
    without asking again."""

    def __init__(self, prune_at: int = 10_000) -> None:
        self.prune_at = prune_at
        self.left: dict[str, tuple[int, int]] = {}  # jti -> (reserved uses left, token exp)
        self.exhausted: dict[str, int] = {}  # jti -> token exp

    def take(self, jti: str) -> bool:
        """One use from this gateway's reservation; False when none is left."""
        left, exp = self.left.get(jti, (0, 0))
        if left <= 0:
            return False
        self.left[jti] = (left - 1, exp)
        return True

    def full(self) -> bool:
        """Time to `prune`: the books hold more tokens than `prune_at`."""
        return len(self.left) + len(self.exhausted) > self.prune_at

    def granted(self, jti: str, exp: int, uses: int) -> bool:
        """Book a block of `uses` reserved from the shared counter (0: the budget is gone) and
        take one use of it; False when the token is exhausted."""
        if uses == 0:
            self.exhausted[jti] = exp
            return False
        self.left[jti] = (uses - 1, exp)
        return True

    def prune(self, now: float) -> list[str]:
        """Forget the tokens expired by `now`; their jtis (their locks can go too)."""
        gone = [j for j, (_, exp) in self.left.items() if exp < now]
        for jti in gone:
            self.left.pop(jti, None)
        for jti in [j for j, exp in self.exhausted.items() if exp < now]:
            self.exhausted.pop(jti, None)
        return gone
