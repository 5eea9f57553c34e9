"""The policy: connections and grants, loaded from one YAML file and validated on load.

Broker and gateway read the same file. A bad policy fails at start with a message that names
the field and the line. `evaluate_grants` is the pure decision the broker makes at issuance.
"""

from __future__ import annotations

import difflib
import fnmatch
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)

from jitgate.dialects import DEFAULT_ROUTES, SQL_OPERATIONS
from jitgate.durations import parse_duration as parse_duration  # re-exported for callers of the policy
from jitgate.errors import BadRequest, NotGranted, PolicyError, UnknownConnection
from jitgate.routes import Route
from jitgate.token import Limits

_NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
# A Postgres name as the parser gives it: unquoted names are folded to lower case.
_SQL_NAME = re.compile(r"[a-z_][a-z0-9_$]{0,62}")


def _names(value: object) -> object:
    """`key_env`: a single name (older policies) reads as a list of one; None as none."""
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else value
DEFAULT_TTL = 15 * 60
# A DNS name (labels of letters, digits, hyphens; underscores for internal service names), with an
# optional final dot. No scheme, port, path, wildcard or space: a host entry matches one name exactly.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}\.?\Z){_LABEL}(?:\.{_LABEL})*\.?", re.IGNORECASE)


def normalize_host(host: str) -> str:
    """The form hosts are compared in: lower case, no final dot, no IPv6 brackets."""
    return host.strip().strip("[]").lower().rstrip(".")


def _host_name(value: str) -> str:
    try:
        ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        if not _HOSTNAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a host name (no scheme, port, path or wildcard)") from None
    return value


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Issuer(_Model):
    """An OIDC issuer whose identity tokens the broker trusts."""

    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    jwks_uri: str | None = None
    algorithms: tuple[Literal["RS256", "ES256"], ...] = ("RS256", "ES256")


class Credential(_Model):
    """How the gateway injects the upstream credential, and where it lives."""

    secret_id: str = Field(min_length=1)
    json_key: str | None = None
    header: str = "Authorization"
    format: str = "Bearer {secret}"

    @field_validator("format")
    @classmethod
    def _has_placeholder(cls, v: str) -> str:
        if "{secret}" not in v:
            raise ValueError("format must contain '{secret}'")
        return v


class RouteSpec(_Model):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: str = Field(pattern=r"^/")


# The one trusted issuer while a policy that lists exactly one is validated (see Policy._sole_issuer).
_SOLE_ISSUER: ContextVar[str | None] = ContextVar("jitgate_policy_sole_issuer", default=None)
_ENTRY_FORM = "a list of entries, each {issuer, sub} or {issuer, group}"


class Principal(_Model):
    """One admin or approver: a subject, or a group, of one issuer.

    Groups and subjects are claims of the issuer that signed them: another trusted issuer can
    claim any group it likes, so an entry always names its issuer. With exactly one trusted
    issuer the policy file may leave it out; the loaded entry then names that one.
    """

    issuer: str | None = Field(default=None, min_length=1)
    sub: str | None = Field(default=None, min_length=1)
    group: str | None = Field(default=None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _default_issuer(cls, data: Any) -> Any:
        sole = _SOLE_ISSUER.get()
        if sole is not None and isinstance(data, Mapping) and "issuer" not in data:
            return {**data, "issuer": sole}
        return data

    @model_validator(mode="after")
    def _complete(self) -> Principal:
        if (self.sub is None) == (self.group is None):
            raise ValueError("an admin or approver entry names either sub or group")
        if self.issuer is None:
            raise ValueError(
                "this entry names no issuer: with several trusted issuers, every admin and approver names its issuer"
            )
        return self

    def matches(self, identity: Identity) -> bool:
        if identity.issuer != self.issuer:
            return False
        if self.sub is not None:
            return identity.subject == self.sub
        return self.group in identity.values("groups")


def _no_old_form(value: Any, what: str) -> Any:
    """Refuse the old `groups:` / `subjects:` lists with a message that says the new form."""
    if isinstance(value, Mapping) and ({"groups", "subjects"} & set(value)):
        raise ValueError(f"{what} {_ENTRY_FORM}; groups/subjects lists name no issuer")
    return value


class Approvers(_Model):
    """Who decides: any `count` distinct identities among `members`."""

    members: tuple[Principal, ...] = ()
    count: int = Field(default=1, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _form(cls, data: Any) -> Any:
        return _no_old_form(data, "approvers name `members`:")


class ApprovalRules(_Model):
    """Which requests on a connection are risky enough to hold for a human."""

    operations: tuple[str, ...] = ()
    max_documents: int | None = Field(default=None, ge=1)
    max_bytes: int | None = Field(default=None, ge=1)
    # Who decides a held request on this connection; None: the policy's admins.
    approvers: Approvers | None = None


class Connection(_Model):
    """One upstream (a reranker or a store) reachable through the gateway."""

    name: str = Field(pattern=_NAME)
    dialect: Literal["cohere", "jina", "voyage", "tei", "chroma", "generic", "postgres"]
    # https://host[:port] for HTTP dialects; postgres://host:port/database for `postgres`.
    upstream: str = Field(pattern=r"^(https?|postgres)://[^/\s]+")
    hosts: tuple[Annotated[str, AfterValidator(_host_name)], ...] = ()
    credential: Credential
    # The job's variables that carry the token as the API key: one name or a list (issue 25: the
    # cohere SDK reads CO_API_KEY, llama-index COHERE_API_KEY); always a tuple once read.
    key_env: Annotated[tuple[Annotated[str, Field(pattern=_ENV_NAME)], ...], BeforeValidator(_names)] = ()
    mask: str = "default"
    operations: Mapping[str, tuple[RouteSpec, ...]] = Field(default_factory=dict)
    approval: ApprovalRules = ApprovalRules()
    # Postgres: the schema unqualified table names resolve in (the gateway pins the search_path to it).
    sql_schema: str = Field(default="public", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    # Postgres: TLS to the server (SSLRequest), verified against the public roots plus
    # `jitgate_upstream_ca` for the upstream's host name; the server's refusal of TLS fails closed.
    upstream_tls: bool = False

    @model_validator(mode="after")
    def _upstream_scheme(self) -> Connection:
        is_pg = self.upstream.startswith("postgres://")
        if is_pg != (self.dialect == "postgres"):
            raise ValueError("a postgres connection's upstream is postgres://host:port/database, others' http(s)://")
        if is_pg and not re.fullmatch(r"postgres://[^/\s:]+:\d{1,5}/[A-Za-z0-9_]{1,63}", self.upstream):
            raise ValueError("a postgres upstream is postgres://host:port/database")
        if is_pg and self.operations:
            raise ValueError("a postgres connection's operations are select, insert, update and delete")
        return self

    @cached_property
    def database(self) -> str:
        """The database a postgres connection opens (the upstream URL's path)."""
        return self.upstream.rsplit("/", 1)[1] if self.dialect == "postgres" else ""

    @cached_property
    def upstream_port(self) -> int:
        scheme, rest = self.upstream.split("://", 1)
        authority = rest.split("/", 1)[0]
        if ":" in authority and not authority.endswith("]"):
            return int(authority.rsplit(":", 1)[1])
        return 80 if scheme == "http" else 443

    @cached_property
    def routes(self) -> tuple[Route, ...]:
        own = tuple(Route(op, r.method, r.path) for op, specs in self.operations.items() for r in specs)
        overridden = set(self.operations)
        inherited = tuple(r for r in DEFAULT_ROUTES[self.dialect] if r.operation not in overridden)
        return own + inherited

    @cached_property
    def operation_names(self) -> frozenset[str]:
        if self.dialect == "postgres":
            return frozenset(SQL_OPERATIONS)
        return frozenset(r.operation for r in self.routes)

    @cached_property
    def upstream_host(self) -> str:
        authority = self.upstream.split("://", 1)[1].split("/", 1)[0]
        if authority.startswith("["):  # an IPv6 literal: its colons are no port separator
            return normalize_host(authority.split("]", 1)[0])
        return normalize_host(authority.rsplit(":", 1)[0])

    @cached_property
    def all_hosts(self) -> frozenset[str]:
        """Host names that belong to this connection: its public names and its real upstream.

        Several connections may share a host (two accounts of one vendor, staging and prod of one
        self-hosted server); the JIT token's `conn` claim then says which one a request uses.
        """
        return frozenset(normalize_host(h) for h in self.hosts) | {self.upstream_host}


class GrantApproval(_Model):
    required: bool = False
    approvers: Approvers = Approvers()
    timeout: int = 3600

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, v: int | str) -> int:
        return parse_duration(v)

    @model_validator(mode="after")
    def _needs_approvers(self) -> GrantApproval:
        if self.required and not self.approvers.members:
            raise ValueError("approval.required needs approvers (members)")
        return self


class Match(_Model):
    """Which OIDC identities a grant applies to: issuer plus claim patterns (shell globs)."""

    issuer: str = Field(min_length=1)
    claims: Mapping[str, tuple[str, ...]] = Field(default_factory=dict)

    @field_validator("claims", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        if isinstance(v, Mapping):
            return {k: (x,) if isinstance(x, str) else x for k, x in v.items()}
        return v


class Grant(_Model):
    """Who may get tokens for which connections and operations, for how long, within which limits."""

    name: str = Field(pattern=_NAME)
    match: Match
    connections: tuple[str, ...] = Field(min_length=1)
    operations: tuple[str, ...] = ("*",)
    collections: tuple[str, ...] = ()
    fields: tuple[str, ...] | None = None
    # Postgres columns masked in results whatever they hold: `col`, `table.col` or `schema.table.col`.
    mask_columns: tuple[str, ...] | None = None
    # The store tenant and database its tokens may use (Chroma's defaults unless named).
    tenant: str | None = None
    database: str | None = None
    max_ttl: int = DEFAULT_TTL
    default_ttl: int | None = None
    limits: Limits = Limits()
    mask: str | None = None
    approval: GrantApproval = GrantApproval()

    @field_validator("max_ttl", "default_ttl", mode="before")
    @classmethod
    def _duration(cls, v: int | str | None) -> int | None:
        return None if v is None else parse_duration(v)

    @field_validator("mask_columns")
    @classmethod
    def _column_names(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for name in v or ():
            parts = name.split(".")
            if len(parts) > 3 or not all(_SQL_NAME.fullmatch(p) for p in parts):
                raise ValueError(f"mask_columns: {name!r} is not `column`, `table.column` or `schema.table.column`")
        return v

    def names(self, connection: str) -> bool:
        return "*" in self.connections or connection in self.connections

    def operations_on(self, connection: Connection) -> frozenset[str]:
        """The operations this grant gives on `connection` (`"*"`: every one it defines)."""
        return connection.operation_names if "*" in self.operations else frozenset(self.operations)


class MaskProfile(_Model):
    """What the gateway does with findings, per direction (inspection reads this)."""

    request_secrets: Literal["block", "mask", "review"] = "block"
    request_pii: Literal["mask", "block", "review", "allow"] = "mask"
    response_secrets: Literal["mask", "allow"] = "mask"
    response_pii: Literal["mask", "allow"] = "mask"
    pii_types: tuple[str, ...] = ("email", "phone", "card", "iban", "ssn", "ip")


class Policy(_Model):
    version: Literal[1] = 1
    issuers: tuple[Issuer, ...] = Field(min_length=1)
    # Who may revoke any token and, where a connection names no approvers, decide its holds.
    admins: tuple[Principal, ...] = ()
    profiles: Mapping[str, MaskProfile] = Field(default_factory=lambda: {"default": MaskProfile()})
    connections: Mapping[str, Connection]
    grants: tuple[Grant, ...] = ()

    @model_validator(mode="wrap")
    @classmethod
    def _sole_issuer(cls, data: Any, handler: ModelWrapValidatorHandler[Policy]) -> Policy:
        """With exactly one trusted issuer, an admin or approver entry without `issuer` means it."""
        issuers = data.get("issuers") if isinstance(data, Mapping) else None
        sole = None
        if isinstance(issuers, list | tuple) and len(issuers) == 1 and isinstance(issuers[0], Mapping):
            sole = issuers[0].get("issuer") if isinstance(issuers[0].get("issuer"), str) else None
        reset = _SOLE_ISSUER.set(sole)
        try:
            return handler(data)
        finally:
            _SOLE_ISSUER.reset(reset)

    @field_validator("admins", mode="before")
    @classmethod
    def _admins_form(cls, v: Any) -> Any:
        return _no_old_form(v, "admins are")

    @field_validator("connections", mode="before")
    @classmethod
    def _name_connections(cls, v: Any) -> Any:
        if isinstance(v, Mapping):
            return {k: {"name": k, **c} if isinstance(c, Mapping) else c for k, c in v.items()}
        return v

    @model_validator(mode="after")
    def _references(self) -> Policy:
        profiles = set(self.profiles) | {"default"}
        issuers = {i.issuer for i in self.issuers}
        for where, entries in self._principals():
            for entry in entries:
                if entry.issuer not in issuers:
                    raise ValueError(f"{where}: issuer {entry.issuer!r} is not in issuers")
        for name, conn in self.connections.items():
            if conn.mask not in profiles:
                raise ValueError(f"connection {name!r}: unknown mask profile {conn.mask!r}")
            unknown_ops = set(conn.approval.operations) - conn.operation_names
            if unknown_ops:
                raise ValueError(f"connection {name!r}: approval names unknown operations {sorted(unknown_ops)}")
        seen: set[str] = set()
        for grant in self.grants:
            if grant.name in seen:
                raise ValueError(f"grant {grant.name!r} is defined twice")
            seen.add(grant.name)
            if grant.match.issuer not in issuers:
                raise ValueError(f"grant {grant.name!r}: issuer {grant.match.issuer!r} is not in issuers")
            if grant.mask is not None and grant.mask not in profiles:
                raise ValueError(f"grant {grant.name!r}: unknown mask profile {grant.mask!r}")
            for cname in grant.connections:
                if cname != "*" and cname not in self.connections:
                    raise ValueError(f"grant {grant.name!r}: unknown connection {cname!r}")
                if grant.mask_columns and (cname == "*" or self.connections[cname].dialect != "postgres"):
                    raise ValueError(f"grant {grant.name!r}: mask_columns apply to postgres connections only")
                conn_ops = (
                    self.connections[cname].operation_names if cname != "*" else None
                )
                if conn_ops is not None:
                    missing = {op for op in grant.operations if op != "*"} - conn_ops
                    if missing:
                        raise ValueError(
                            f"grant {grant.name!r}: connection {cname!r} has no operations {sorted(missing)}"
                        )
            if grant.default_ttl is not None and grant.default_ttl > grant.max_ttl:
                raise ValueError(f"grant {grant.name!r}: default_ttl exceeds max_ttl")
        return self

    def _principals(self) -> Iterator[tuple[str, tuple[Principal, ...]]]:
        yield "admins", self.admins
        for name, conn in self.connections.items():
            if conn.approval.approvers is not None:
                yield f"connection {name!r} approvers", conn.approval.approvers.members
        for grant in self.grants:
            yield f"grant {grant.name!r} approvers", grant.approval.approvers.members

    def profile(self, name: str) -> MaskProfile:
        return self.profiles.get(name) or MaskProfile()

    @cached_property
    def upstream_ports(self) -> tuple[int, ...]:
        """The TCP ports the gateway connects to upstreams on: what its egress must allow (gateway.yaml)."""
        return tuple(sorted({conn.upstream_port for conn in self.connections.values()}))

    @cached_property
    def _by_host(self) -> Mapping[str, tuple[Connection, ...]]:
        index: dict[str, list[Connection]] = {}
        for conn in self.connections.values():
            for host in conn.all_hosts:
                index.setdefault(host, []).append(conn)
        return {host: tuple(conns) for host, conns in index.items()}

    def connections_for_host(self, host: str) -> tuple[Connection, ...]:
        """Every connection serving `host` (public name or real upstream), in policy order."""
        return self._by_host.get(normalize_host(host), ())

    def connection_for_host(self, host: str, conn: str | None = None) -> Connection | None:
        """The connection a request to `host` uses.

        With `conn` (a token's `conn` claim): that connection when it serves `host`, else None, even
        when others do. Without it: the one connection serving `host`; None when none or several do,
        since a shared host alone cannot say whose credential, scope or mask applies.
        """
        if conn is not None:
            named = self.connections.get(conn)
            return named if named is not None and normalize_host(host) in named.all_hosts else None
        serving = self.connections_for_host(host)
        return serving[0] if len(serving) == 1 else None

    def dialect_for_host(self, host: str) -> str | None:
        """The dialect of every connection serving `host`, when they agree (the shape of its answers)."""
        dialects = {c.dialect for c in self.connections_for_host(host)}
        return dialects.pop() if len(dialects) == 1 else None

    def issuer(self, iss: str) -> Issuer | None:
        return next((i for i in self.issuers if i.issuer == iss), None)


# -- loading -------------------------------------------------------------------------------------


def _node_at(node: yaml.Node | None, loc: Sequence[int | str]) -> yaml.Node | None:
    """The deepest YAML node along a pydantic error location."""
    best = node
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if child is None:
                # The field is missing: point at the mapping that should hold it.
                return best
            node = child
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            continue
        best = node
    return best


def _describe(errors: list[Any], root: yaml.Node | None, source: str) -> str:
    lines = []
    for err in errors[:10]:
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        # pydantic appends the validator kind to some locations; keep only real path parts.
        field = ".".join(str(p) for p in loc) or "<policy>"
        node = _node_at(root, loc)
        where = f"line {node.start_mark.line + 1}" if node is not None else "unknown line"
        msg = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"{source}: {where}: {field}: {msg}")
    return "\n".join(lines)


def parse_policy(
    text: str, *, source: str = "<policy>", bind: Callable[[dict[str, Any]], dict[str, Any]] | None = None
) -> Policy:
    """Parse and validate policy YAML; raise PolicyError naming the field and the line.

    `bind` may change scalar values of the parsed document before validation (`jitgate dev
    --policy` fills in its own issuer and upstreams): errors still name the line of `text`.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "unknown line"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise PolicyError(f"{source}: {where}: {problem}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: line 1: the policy must be a mapping")
    if bind is not None:
        data = bind(data)
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(_describe(exc.errors(), root, source)) from None


def load_policy(path: str | Path) -> Policy:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{p}: cannot read policy: {exc.strerror}") from None
    return parse_policy(text, source=str(p))


# -- grants --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """A verified OIDC identity: issuer, subject and the token's other claims."""

    issuer: str
    subject: str
    claims: Mapping[str, Any]

    def values(self, claim: str) -> list[str]:
        if claim == "sub":
            return [self.subject]
        v = self.claims.get(claim)
        if isinstance(v, str | int):
            return [str(v)]
        if isinstance(v, list):
            return [str(x) for x in v if isinstance(x, str | int)]
        return []

    def is_among(self, principals: Sequence[Principal]) -> bool:
        """Named by one of `principals`: its subject or one of its groups, of its own issuer."""
        return any(p.matches(self) for p in principals)


@dataclass(frozen=True)
class TokenRequest:
    connection: str
    operations: tuple[str, ...] | None = None
    ttl: int | None = None
    job: str | None = None
    purpose: str | None = None


@dataclass(frozen=True)
class Decision:
    """What a grant allows for one request: the token's scope, lifetime, limits and mask."""

    grant: str
    connection: str
    operations: tuple[str, ...]
    collections: tuple[str, ...]
    fields: tuple[str, ...] | None
    ttl: int
    clamped: bool
    limits: Limits
    mask: str
    approval: GrantApproval
    tenant: str | None = None
    database: str | None = None
    mask_columns: tuple[str, ...] | None = None


def _matches(grant: Grant, identity: Identity) -> bool:
    if grant.match.issuer != identity.issuer:
        return False
    for claim, patterns in grant.match.claims.items():
        values = identity.values(claim)
        if not any(fnmatch.fnmatchcase(v, p) for v in values for p in patterns):
            return False
    return True


def evaluate_grants(
    policy: Policy, identity: Identity, request: TokenRequest, *, default_ttl: int = DEFAULT_TTL
) -> Decision:
    """The first grant that gives `identity` the requested connection and operations.

    The token's lifetime is decided here and nowhere else: the requested TTL, else the grant's
    `default_ttl`, else `default_ttl` (the broker's JITGATE_DEFAULT_TTL), never above `max_ttl`.
    What approvers are shown and what the token's `exp` says are both `Decision.ttl`.
    """
    conn = policy.connections.get(request.connection)
    if conn is None:
        raise UnknownConnection(f"no connection named {request.connection!r}")
    if request.operations is not None:
        unknown = set(request.operations) - conn.operation_names
        if unknown:
            raise BadRequest(f"connection {conn.name!r} has no operations {sorted(unknown)}")
        if not request.operations:
            raise BadRequest("operations, when given, must name at least one operation")
    for grant in policy.grants:
        if not _matches(grant, identity):
            continue
        if not grant.names(conn.name):
            continue
        allowed = grant.operations_on(conn)
        wanted = frozenset(request.operations) if request.operations is not None else allowed
        if not wanted or not wanted <= allowed:
            continue
        if request.ttl is not None:
            wanted_ttl = request.ttl
        elif grant.default_ttl is not None:
            wanted_ttl = grant.default_ttl
        else:  # nothing asked, nothing set: the broker's default is no request, so never "clamped"
            wanted_ttl = min(default_ttl, grant.max_ttl)
        ttl = min(wanted_ttl, grant.max_ttl)
        return Decision(
            grant=grant.name,
            connection=conn.name,
            operations=tuple(sorted(wanted)),
            collections=grant.collections,
            fields=grant.fields,
            ttl=ttl,
            clamped=ttl < wanted_ttl,
            limits=grant.limits,
            mask=grant.mask or conn.mask,
            approval=grant.approval,
            tenant=grant.tenant,
            database=grant.database,
            mask_columns=grant.mask_columns,
        )
    raise NotGranted(f"no grant gives you connection {conn.name!r} with the requested operations")


@dataclass(frozen=True)
class Grantable:
    """One connection an identity may get tokens for: the union of what its matching grants allow."""

    connection: str
    dialect: str
    operations: tuple[str, ...]
    max_ttl: int
    approval: bool  # every grant that gives it needs issuance approval

    def to_json(self) -> dict[str, Any]:
        return {
            "connection": self.connection,
            "dialect": self.dialect,
            "operations": list(self.operations),
            "max_ttl": self.max_ttl,
            "approval_required": self.approval,
        }


def grantable(policy: Policy, identity: Identity) -> tuple[Grantable, ...]:
    """What `identity` may get, by the same grant matching as `evaluate_grants`, and nothing of others':
    connections no grant of this identity names are not listed (`jitgate connections`, issue 25)."""
    found: dict[str, tuple[set[str], int, bool]] = {}
    for grant in policy.grants:
        if not _matches(grant, identity):
            continue
        for name in [n for n in policy.connections if grant.names(n)]:
            ops = grant.operations_on(policy.connections[name])
            seen_ops, ttl, approval = found.get(name, (set(), 0, True))
            found[name] = (seen_ops | ops, max(ttl, grant.max_ttl), approval and grant.approval.required)
    return tuple(
        Grantable(name, policy.connections[name].dialect, tuple(sorted(ops)), ttl, approval)
        for name, (ops, ttl, approval) in sorted(found.items())
    )


def close_names(name: str, names: Sequence[str], *, limit: int = 3) -> list[str]:
    """The names in `names` closest to a mistyped `name` (case-insensitive; a prefix counts as close)."""
    lowered = {n.lower(): n for n in names}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=limit, cutoff=0.6)
    prefixed = [n for n in lowered if n.startswith(name.lower()) or name.lower().startswith(n)]
    ordered = list(dict.fromkeys(close + sorted(prefixed)))[:limit]
    return [lowered[n] for n in ordered]


def is_admin(policy: Policy, identity: Identity) -> bool:
    return identity.is_among(policy.admins)
