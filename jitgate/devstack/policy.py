"""The example-style policy the local stack runs with, bound to a local OIDC issuer.

Broker and gateway must share connection names and grants; only the gateway cares where an
upstream really lives, so `upstreams` lets the gateway side point the same connections at its
local parts (a sample rerank upstream per dialect, the real Chroma server, Postgres) while the
broker can use the defaults. Both Chroma connections name the same kind of server: `chroma-dev`
is the one a reader or maintainer uses at once, `store-test` the one whose maintenance tokens
need an issuance approval first.
"""

from __future__ import annotations

from collections.abc import Mapping

import yaml

from jitgate.policy import Policy, parse_policy

RERANK_CONNECTIONS = {"cohere-test": "cohere", "jina-test": "jina", "voyage-test": "voyage", "tei-test": "tei"}
STORE_CONNECTION = "store-test"
PG_CONNECTION = "pg-dev"
# The real Chroma server (jitgate.devstack.chroma); plain HTTP on loopback, the gateway its only path.
CHROMA_CONNECTION = "chroma-dev"
DEFAULT_UPSTREAMS = {
    "cohere-test": "https://cohere.upstream.test",
    "jina-test": "https://jina.upstream.test",
    "voyage-test": "https://voyage.upstream.test",
    "tei-test": "https://tei.upstream.test",
    STORE_CONNECTION: "https://store.upstream.test",
    PG_CONNECTION: "postgres://127.0.0.1:5432/ranking",
    CHROMA_CONNECTION: "http://chroma.upstream.test:8000",
}
ADMIN_GROUP = "platform-security"
APPROVER_GROUP = "search-leads"
# Identities the grants below match (for the OIDC issuer's `mint`).
CI_CLAIMS = {"repository": "acme/search-ranker", "ref": "refs/heads/main"}
READER_SUB = "system:serviceaccount:ranking:reranker"
MAINTAINER_SUB = "system:serviceaccount:ranking-admin:janitor"


def secret_id(connection: str) -> str:
    return f"jitgate/test/{connection}"


# The variables each dialect's SDKs read for the API key (cohere's SDK: CO_API_KEY; llama-index's
# Cohere rerank: COHERE_API_KEY).
KEY_ENV: dict[str, list[str]] = {
    "cohere": ["CO_API_KEY", "COHERE_API_KEY"],
    "jina": ["JINA_API_KEY"],
    "voyage": ["VOYAGE_API_KEY"],
    "tei": [],  # TEI's clients send `Authorization: Bearer`; no variable of their own
}


def approvers(issuer: str, group: str, *, count: int = 1) -> dict[str, object]:
    """An `approvers` block: any `count` members of `issuer`'s `group`."""
    return {"count": count, "members": [{"issuer": issuer, "group": group}]}


def policy_dict(issuer: str, *, upstreams: Mapping[str, str] | None = None) -> dict[str, object]:
    ups = {**DEFAULT_UPSTREAMS, **(upstreams or {})}
    connections: dict[str, object] = {}
    for name, dialect in RERANK_CONNECTIONS.items():
        connections[name] = {
            "dialect": dialect,
            "upstream": ups[name],
            "key_env": KEY_ENV[dialect],
            "credential": {"secret_id": secret_id(name), "json_key": "api_key", "format": "Bearer {secret}"},
            "approval": {"max_documents": 1000},
        }
    connections[STORE_CONNECTION] = {
        "dialect": "chroma",
        "upstream": ups[STORE_CONNECTION],
        "key_env": "CHROMA_API_KEY",
        "mask": "strict",
        "credential": {"secret_id": secret_id(STORE_CONNECTION), "header": "X-Chroma-Token", "format": "{secret}"},
        "approval": {"operations": ["delete", "drop_collection"]},
    }
    # Postgres with pgvector; the secret is JSON {"username": ..., "password": ...}.
    connections[PG_CONNECTION] = {
        "dialect": "postgres",
        "upstream": ups[PG_CONNECTION],
        "hosts": ["localhost"],
        "credential": {"secret_id": secret_id(PG_CONNECTION)},
        # The maintainer grant's deletes wait for a search lead (an UPDATE or DELETE without WHERE
        # is held whatever the rules say).
        "approval": {"operations": ["delete"], "approvers": approvers(issuer, APPROVER_GROUP)},
    }
    connections[CHROMA_CONNECTION] = {
        "dialect": "chroma",
        "upstream": ups[CHROMA_CONNECTION],
        "key_env": "CHROMA_API_KEY",
        "credential": {"secret_id": secret_id(CHROMA_CONNECTION), "header": "X-Chroma-Token", "format": "{secret}"},
        "approval": {"operations": ["delete", "drop_collection"]},
    }
    return {
        "version": 1,
        "issuers": [{"issuer": issuer, "audience": "jitgate"}],
        "admins": [{"issuer": issuer, "group": ADMIN_GROUP}],
        "profiles": {
            "default": {"request_secrets": "block", "request_pii": "mask"},
            "strict": {"request_secrets": "block", "request_pii": "block"},
            # Loading candidates means writing their e-mails and phones: they pass to the store, and
            # the records still never hold them (a body with unmasked PII is recorded as null).
            "loading": {"request_secrets": "block", "request_pii": "allow"},
        },
        "connections": connections,
        "grants": [
            {
                "name": "rerank-ci",
                "match": {"issuer": issuer, "claims": {"repository": ["acme/search-*"], "ref": ["refs/heads/main"]}},
                "connections": list(RERANK_CONNECTIONS),
                "operations": ["rerank"],
                "max_ttl": "30m",
                "default_ttl": "10m",
                "limits": {"max_requests": 1000, "max_documents": 1000, "max_bytes": 4194304},
            },
            {
                "name": "store-readers",
                "match": {"issuer": issuer, "claims": {"sub": ["system:serviceaccount:ranking:*"]}},
                "connections": [STORE_CONNECTION],
                "operations": ["query", "get"],
                "collections": ["candidates"],
                "fields": ["ids", "documents", "distances", "metadatas"],
                "max_ttl": "15m",
                "limits": {"max_requests": 10000},
            },
            {
                "name": "store-maintenance",
                "match": {"issuer": issuer, "claims": {"sub": ["system:serviceaccount:ranking-admin:*"]}},
                "connections": [STORE_CONNECTION],
                "operations": ["query", "get", "add", "upsert", "delete"],
                "collections": ["candidates"],
                "max_ttl": "1h",
                "approval": {"required": True, "approvers": approvers(issuer, APPROVER_GROUP), "timeout": "1h"},
            },
            {
                "name": "pg-readers",
                "match": {"issuer": issuer, "claims": {"sub": [READER_SUB]}},
                "connections": [PG_CONNECTION],
                "operations": ["select"],
                "collections": ["candidates"],
                "fields": ["id", "body", "embedding"],
                "max_ttl": "15m",
                "limits": {"max_requests": 10000, "max_documents": 1000},
            },
            {
                "name": "pg-maintenance",
                "match": {"issuer": issuer, "claims": {"sub": ["system:serviceaccount:ranking-admin:*"]}},
                "connections": [PG_CONNECTION],
                "operations": ["select", "insert", "update", "delete"],
                "collections": ["candidates"],
                "max_ttl": "1h",
            },
            {
                "name": "chroma-readers",
                "match": {"issuer": issuer, "claims": {"sub": [READER_SUB]}},
                "connections": [CHROMA_CONNECTION],
                "operations": ["query", "get", "count"],
                "collections": ["candidates"],
                "fields": ["ids", "documents", "distances"],
                "max_ttl": "15m",
                "limits": {"max_requests": 10000},
            },
            {
                "name": "chroma-maintainers",
                "match": {"issuer": issuer, "claims": {"sub": [MAINTAINER_SUB]}},
                "connections": [CHROMA_CONNECTION],
                "operations": ["query", "get", "count", "add", "upsert", "update", "delete", "list_collections",
                               "create_collection"],
                "collections": ["candidates"],
                "mask": "loading",
                "max_ttl": "1h",
            },
        ],
    }


def policy_yaml(issuer: str, *, upstreams: Mapping[str, str] | None = None) -> str:
    """The dev/test policy as YAML text (what broker and gateway load from a file)."""
    header = "# jitgate dev/test policy, generated by jitgate.devstack.policy\n"
    return header + yaml.safe_dump(policy_dict(issuer, upstreams=upstreams), sort_keys=False)


def dev_policy(issuer: str, *, upstreams: Mapping[str, str] | None = None) -> Policy:
    return parse_policy(policy_yaml(issuer, upstreams=upstreams), source="<dev policy>")


# -- a user's own policy over the dev stack (`jitgate dev --policy FILE`) -----------------------

DEV_ISSUER = "dev"  # `issuer: dev` anywhere: the dev stack's OIDC issuer
DEV_UPSTREAM = "dev:"  # `upstream: dev:NAME`: one of the dev stack's parts
# The parts `dev:NAME` may name: a sample rerank upstream per dialect, the real Chroma, Postgres.
DEV_PARTS = ("cohere", "jina", "voyage", "tei", "chroma", "postgres")
# The dev policy itself, in the same form a user's file takes.
DEV_UPSTREAMS = {
    **{name: DEV_UPSTREAM + dialect for name, dialect in RERANK_CONNECTIONS.items()},
    STORE_CONNECTION: DEV_UPSTREAM + "chroma",
    CHROMA_CONNECTION: DEV_UPSTREAM + "chroma",
    PG_CONNECTION: DEV_UPSTREAM + "postgres",
}


def dev_part(connection: Mapping[str, object]) -> str | None:
    """The dev part a connection's `upstream: dev:NAME` names, or None for any other upstream."""
    upstream = connection.get("upstream")
    if isinstance(upstream, str) and upstream.startswith(DEV_UPSTREAM):
        return upstream.removeprefix(DEV_UPSTREAM)
    return None


def bind_dev(
    doc: dict[str, object], *, issuer: str, parts: Mapping[str, str], source: str = "<policy>"
) -> dict[str, object]:
    """`doc` with `issuer: dev` replaced by `issuer` and each `upstream: dev:NAME` by the URL of part
    NAME in `parts`; an unknown part is a PolicyError. Only scalar values change, so a validation
    error still names the user's line."""
    from jitgate.errors import PolicyError

    def walk(node: object) -> object:
        if isinstance(node, dict):
            return {k: issuer if k == "issuer" and v == DEV_ISSUER else walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    bound = walk(doc)
    assert isinstance(bound, dict)
    connections = bound.get("connections")
    for name, conn in connections.items() if isinstance(connections, dict) else ():
        part = dev_part(conn) if isinstance(conn, dict) else None
        if part is None:
            continue
        if part not in parts:
            known = ", ".join(DEV_UPSTREAM + p for p in DEV_PARTS)
            raise PolicyError(
                f"{source}: connection {name!r}: upstream {DEV_UPSTREAM + part!r} is no part of the dev stack "
                f"(one of {known})"
            )
        conn["upstream"] = parts[part]
    return bound
