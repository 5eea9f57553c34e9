"""A small client of the broker's HTTP API, for the CLI and the local stack."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from jitgate.errors import BadRequest, BrokerError, BrokerUnreachable, JitgateError, error_for


@dataclass(frozen=True)
class Minted:
    """The broker's answer to a mint: the token and what it is for (never logged)."""

    token: str
    jti: str
    expires_at: int
    connection: str
    proxy_hint: str | None
    key_env: tuple[str, ...]  # the variables that carry the token as the API key (may be none)
    dialect: str | None = None
    database: str | None = None
    upstream: str | None = None  # a store connection's URL, for its client's host/port variables

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Minted:
        try:
            return cls(
                token=str(data["token"]),
                jti=str(data["jti"]),
                expires_at=int(data["expires_at"]),
                connection=str(data["connection"]),
                proxy_hint=data.get("proxy_hint"),
                key_env=_key_envs(data),
                dialect=data.get("dialect"),
                database=data.get("database"),
                upstream=data.get("upstream"),
            )
        except (KeyError, TypeError, ValueError):
            raise BadRequest("the broker's answer is missing fields") from None


def _key_envs(data: dict[str, Any]) -> tuple[str, ...]:
    """`key_envs` (a list), else the single `key_env` an older broker answers."""
    names = data.get("key_envs")
    if names is None:
        one = data.get("key_env")
        names = [one] if one else []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise TypeError("key_envs")
    return tuple(names)


@dataclass(frozen=True)
class Pending:
    """Issuance needs approval: the broker answered 202 with an approval id."""

    approval_id: str
    state: str


def _error(resp: httpx.Response) -> JitgateError:
    """The broker's error answer as the jitgate error it names (jitgate.errors.CODES)."""
    try:
        body = resp.json()
        code, message = str(body["code"]), str(body["message"])
    except (ValueError, KeyError, TypeError):
        return BrokerError(f"the broker answered HTTP {resp.status_code}", status=resp.status_code)
    return error_for(code, message, status=resp.status_code)


class BrokerClient:
    def __init__(self, base_url: str, *, http: httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http or httpx.Client(timeout=10.0)

    def _call(self, method: str, path: str, oidc_token: str | None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {oidc_token}"} if oidc_token else {}
        try:
            resp = self._http.request(method, self.base_url + path, headers=headers, **kw)
        except httpx.HTTPError:
            raise BrokerUnreachable(f"the broker at {self.base_url} is unreachable") from None
        if resp.status_code >= 400:
            raise _error(resp)
        return resp

    def mint(
        self,
        oidc_token: str,
        connection: str,
        *,
        operations: list[str] | None = None,
        ttl: int | str | None = None,
        job: str | None = None,
        purpose: str | None = None,
    ) -> Minted | Pending:
        body: dict[str, Any] = {"connection": connection}
        for name, value in (("operations", operations), ("ttl", ttl), ("job", job), ("purpose", purpose)):
            if value is not None:
                body[name] = value
        resp = self._call("POST", "/v1/tokens", oidc_token, json=body)
        data = resp.json()
        if resp.status_code == 202:
            return Pending(str(data.get("approval_id") or data.get("id")), str(data.get("state", "pending")))
        return Minted.from_json(data)

    def revoke(self, oidc_token: str, jti: str) -> None:
        self._call("DELETE", f"/v1/tokens/{jti}", oidc_token)

    def approval(self, oidc_token: str, approval_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self._call("GET", f"/v1/approvals/{approval_id}", oidc_token).json()
        return data

    def approvals(self, oidc_token: str) -> list[dict[str, Any]]:
        """Pending approvals the caller may decide."""
        data = self._call("GET", "/v1/approvals", oidc_token).json()
        items = data.get("approvals") if isinstance(data, dict) else None
        return [a for a in items if isinstance(a, dict)] if isinstance(items, list) else []

    def decide(self, oidc_token: str, approval_id: str, decision: str, reason: str) -> dict[str, Any]:
        path = f"/v1/approvals/{approval_id}/{decision}"
        data: dict[str, Any] = self._call("POST", path, oidc_token, json={"reason": reason}).json()
        return data

    def connections(self, oidc_token: str) -> list[dict[str, Any]]:
        """The connections and operations the caller's own identity may get (GET /v1/connections)."""
        data = self._call("GET", "/v1/connections", oidc_token).json()
        items = data.get("connections") if isinstance(data, dict) else None
        return [c for c in items if isinstance(c, dict)] if isinstance(items, list) else []

    def jwks(self) -> dict[str, Any]:
        data: dict[str, Any] = self._call("GET", "/.well-known/jwks.json", None).json()
        return data
