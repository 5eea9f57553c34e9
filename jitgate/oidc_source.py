"""Where a job's OIDC identity token comes from, tried in a fixed order.

1. `--oidc-token` on the command line, 2. `JITGATE_OIDC_TOKEN`, 3. a token file
(`JITGATE_OIDC_TOKEN_FILE`, else `AWS_WEB_IDENTITY_TOKEN_FILE`), 4. GitHub Actions
(`ACTIONS_ID_TOKEN_REQUEST_URL` + `ACTIONS_ID_TOKEN_REQUEST_TOKEN`), 5. the dev issuer that
`jitgate dev` runs (`JITGATE_DEV_ISSUER`). The first that is configured wins; a configured source
that fails is an error, not a reason to fall through to a weaker one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from jitgate.errors import NoOidcToken

SOURCES = (
    "--oidc-token",
    "JITGATE_OIDC_TOKEN",
    "token file (JITGATE_OIDC_TOKEN_FILE or AWS_WEB_IDENTITY_TOKEN_FILE)",
    "GitHub Actions (ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN)",
    "the dev issuer of `jitgate dev` (JITGATE_DEV_ISSUER)",
)


@dataclass(frozen=True)
class OidcToken:
    token: str
    source: str


def _clean(token: str, source: str) -> OidcToken:
    token = token.strip()
    if not token or token.count(".") != 2:
        raise NoOidcToken(f"the OIDC token from {source} is empty or not a JWT")
    return OidcToken(token, source)


def find_oidc_token(
    *,
    explicit: str | None,
    env: Mapping[str, str],
    http: httpx.Client,
    audience: str = "jitgate",
    subject: str | None = None,
) -> OidcToken:
    """The job's OIDC token from the first configured source (see module doc)."""
    if explicit:
        return _clean(explicit, SOURCES[0])
    if env.get("JITGATE_OIDC_TOKEN"):
        return _clean(env["JITGATE_OIDC_TOKEN"], SOURCES[1])
    token_file = env.get("JITGATE_OIDC_TOKEN_FILE") or env.get("AWS_WEB_IDENTITY_TOKEN_FILE")
    if token_file:
        try:
            return _clean(Path(token_file).read_text(encoding="utf-8"), f"token file {token_file}")
        except OSError as exc:
            raise NoOidcToken(f"cannot read the OIDC token file {token_file}: {exc.strerror}") from None
    gha_url, gha_token = env.get("ACTIONS_ID_TOKEN_REQUEST_URL"), env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if gha_url and gha_token:
        try:
            resp = http.get(gha_url, params={"audience": audience}, headers={"Authorization": f"bearer {gha_token}"})
            resp.raise_for_status()
            value = resp.json().get("value", "")
        except (httpx.HTTPError, ValueError, AttributeError):
            raise NoOidcToken("GitHub Actions did not hand out an OIDC token (is `id-token: write` set?)") from None
        return _clean(str(value), "GitHub Actions")
    dev = env.get("JITGATE_DEV_ISSUER")
    if dev:
        sub = subject or env.get("JITGATE_DEV_SUBJECT") or env.get("USER") or "dev-user"
        try:
            claims = json.loads(env.get("JITGATE_DEV_CLAIMS") or "{}")
            resp = http.post(f"{dev.rstrip('/')}/dev/token", json={"sub": sub, "aud": audience, "claims": claims})
            resp.raise_for_status()
            value = resp.json().get("token", "")
        except (httpx.HTTPError, ValueError, AttributeError):
            raise NoOidcToken(f"the dev issuer at {dev} did not hand out a token (is `jitgate dev` running?)") from None
        return _clean(str(value), "the dev issuer")
    raise NoOidcToken("no OIDC token source is configured; tried, in order: " + "; ".join(SOURCES))
