"""TLS server names (SNI) on the data path: which one the upstream hears, which one a client may send.

A front that routes by SNI (a CDN, an API gateway, a shared load balancer) picks its backend by the
name in the ClientHello, so that name decides who receives the injected credential. The gateway's
upstream handshake therefore names the policy connection's upstream host and nothing the client
said; and a client whose own ClientHello names another host than its tunnel goes to is misdirected
(RFC 9110 §15.5.20: 421), the way a server refuses a request it did not get the name for.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from jitgate.policy import Policy, normalize_host


def _upstream_address(upstream: str) -> tuple[str, int]:
    target = urlsplit(upstream)
    port = target.port or (443 if target.scheme == "https" else 80)
    return normalize_host(target.hostname or ""), port


def upstream_server_name(policy: Policy, host: str, port: int) -> str | None:
    """The server name for a connection to `host`:`port`: the host of the policy connection whose
    upstream is there (an IP for an IP upstream, which sends no SNI); None when no connection's
    upstream is at that address, so the gateway has no business connecting there."""
    wanted = (normalize_host(host), port)
    for conn in policy.connections.values():
        if _upstream_address(conn.upstream) == wanted:
            return conn.upstream_host
    return None


def misdirected(client_name: str | None, tunnel_host: str | None) -> bool:
    """True when the client's ClientHello named a host other than the one its tunnel goes to.

    No name (an IP target, or a client that sends none) and no tunnel (a plain-HTTP proxy request)
    are never misdirected; names compare as hosts do (case, a final dot).
    """
    if not client_name or not tunnel_host:
        return False
    return normalize_host(client_name) != normalize_host(tunnel_host)
