"""pg_listener: the Postgres path. psql and psycopg connect here unchanged; every statement is checked.

An addon on mitmproxy's event loop that opens a listener of its own (`jitgate_pg_listen`,
`jitgate gateway --pg-listen HOST:PORT`); why on the loop and not a process: docs/architecture.md.
Per client connection (`_Session`):

1. startup: SSLRequest → TLS with a certificate from the gateway CA for the listener's names;
   GSSENCRequest → `N`; a startup without TLS, a replication startup or startup `options` are
   refused with an ErrorResponse; the whole startup must finish within `_STARTUP_TIMEOUT`.
2. AuthenticationCleartextPassword (inside TLS): the password is the JIT token, verified with
   `jitgate.token.verify_token` against the broker's JWKS and checked against the revocation list;
   its `conn` must be a postgres connection whose database the startup names.
3. upstream: the connection's credential from Secrets Manager (`{"username", "password"}`), SCRAM-SHA-256
   (scramp) or md5; a rejected password is retried once with the secret read afresh (rotation).
   The search_path is pinned in the upstream startup (`pg_catalog, <sql_schema>`), beside the
   token's identity for row security (`jitgate.sub`, `.job`, `.connection`, `.groups`:
   jitgate.pgsession). With `mask_columns` in the token, their table oids and attribute numbers
   are read from the catalog before the client's first statement. The client gets BackendKeyData
   of the gateway's own; its CancelRequest is sent to the server with the server's key.
4. every Query and every Parse is read by `jitgate.pgsql.analyze` and checked by
   `jitgate.pgsql.statement_error`; the token is checked again before every statement (expired or
   revoked: 28000 and the connection closes); `max_requests` counts statements on the token's shared
   DynamoDB counter (leases, as on HTTP); `max_documents` caps the rows of one statement and
   `max_bytes` its text and its result (past either: an error, never a silent cut).
5. result rows masked (jitgate.pgmask): per the profile, and `mask_columns` whole.
6. one `SessionRecord` per statement into a spool of its own (`<spool>/postgres`), shipped to the
   same bucket and prefix as the HTTP records.

A refusal is an ErrorResponse (42501, the jitgate code at the head of the message) followed by
ReadyForQuery once the server has answered everything sent before: the connection stays usable.
Inside a transaction the session then behaves as the server would after an error (25P02 until
ROLLBACK). In the extended protocol the messages up to Sync are checked before any is forwarded;
a refusal after a Flush in the same batch closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import secrets
import socket
import ssl
import struct
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import certifi
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mitmproxy import certs, ctx
from mitmproxy.addonmanager import Loader
from scramp import ScramClient

from addon import settings
from addon.revocations import RevocationList
from jitgate import durations, leaks, pghold, pgmask, pgsession, pgwire
from jitgate.errors import (
    ApprovalUnavailable,
    AuditUnavailable,
    CredentialUnavailable,
    InFailedTransaction,
    InvalidToken,
    JitgateError,
    KeysUnavailable,
    ProtocolViolation,
    ReplicationNotAllowed,
    RequestLimitExceeded,
    ResultNotMaskable,
    RevocationUnavailable,
    RowLimitExceeded,
    StatementNotAllowed,
    TlsRequired,
    TokenExpired,
    TokenRevoked,
    UnknownKeyId,
    UpstreamUnavailable,
    UsageUnavailable,
    WrongConnection,
)
from jitgate.inspect import Scanner, actions
from jitgate.inspect.masking import Finding as MaskFinding
from jitgate.pgcache import DecisionCache
from jitgate.pgsql import SESSION, Statement
from jitgate.pgwire import Message, error_response, message, ready_for_query
from jitgate.policy import Connection, Policy
from jitgate.records import ColumnFinding, Decision, SessionRecord, escape_text, iso_ts, record_id
from jitgate.records import Finding as RecordFinding
from jitgate.scope import lease_size
from jitgate.spool import Spool, SpoolConfig, Uploader, check_durable
from jitgate.state import reserve_requests
from jitgate.token import DEFAULT_LEEWAY, Claims, KeySet, verify_token

logger = logging.getLogger(__name__)

_STARTUP_TIMEOUT = 10.0
_UPSTREAM_TIMEOUT = 10.0
_OWN = frozenset({"jitgate_pg_listen"})
_READS = (
    "jitgate_pg_listen", "jitgate_upstream_ca", "jitgate_jwks_url", "jitgate_issuer", "jitgate_revocation_refresh",
    "jitgate_revocation_staleness", "jitgate_jwks_refetch_interval", "jitgate_usage_lease", "jitgate_secret_ttl",
    "jitgate_bucket", "jitgate_spool_dir", "jitgate_gateway_id", "jitgate_sessions_prefix", "jitgate_audit_required",
    "jitgate_segment_bytes", "jitgate_segment_ms", "jitgate_fsync_ms", "jitgate_spool_max_bytes",
    "jitgate_durable_spool", "jitgate_ship_timeout",
    "jitgate_approval_timeout", "jitgate_approval_poll", "jitgate_approval_topic", "jitgate_approval_max_held",
)
# Extended-protocol messages held until Sync (or Flush) and checked together.
_EXTENDED = frozenset(b"PBDECHS")
_ABORTED_OK = frozenset({"rollback", "rollback_to", "commit"})
# A record lists a statement's first findings one by one; `column_findings` counts all of them.
_MAX_FINDINGS = 100
# What the server sent in one read is written to the client together; past this much buffered for
# a slow client, the relay waits for it.
_CLIENT_BUFFER = 256 * 1024


def parse_listen(value: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets); port 0 picks a free one."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError("jitgate_pg_listen must be HOST:PORT")
    return host.strip("[]"), int(port)


def _sans(names: set[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in sorted(names):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


@dataclass
class _Pending:
    """A statement forwarded to the server whose answer (rows, completion) is still to come."""

    stmt: Statement | None
    started: float
    rows: int = 0
    bytes: int = 0
    findings: list[RecordFinding] = field(default_factory=list)
    by_column: dict[tuple[str, str, str | None], int] = field(default_factory=dict)  # (column, type, kind): count

    def found(self, column: str, finding: MaskFinding) -> None:
        key = (column, finding.type, finding.kind)
        self.by_column[key] = self.by_column.get(key, 0) + 1
        if len(self.findings) < _MAX_FINDINGS:
            self.findings.append(
                RecordFinding(
                    type=finding.type, kind=finding.kind, location=f"column:{column}", action="mask", tag=finding.tag
                )
            )

    def column_findings(self) -> tuple[ColumnFinding, ...]:
        return tuple(
            ColumnFinding(column_name=c, type=t, kind=k, action="mask", count=n)
            for (c, t, k), n in sorted(self.by_column.items(), key=lambda item: (item[0][0], item[0][1]))
        )
    approval_id: str | None = None  # the hold it went through (approved), or ended in (denied)


@dataclass
class _Secret:
    username: str
    password: str
    fetched_at: float


@dataclass
class _Batch:
    """Extended-protocol messages up to Sync: forwarded together once all are checked."""

    raw: list[bytes] = field(default_factory=list)
    parsed: dict[str, Statement | None] = field(default_factory=dict)
    closed: list[tuple[str, str]] = field(default_factory=list)
    portals: dict[str, str] = field(default_factory=dict)
    executes: list[tuple[Statement | None, str | None]] = field(default_factory=list)  # (statement, hold id)
    error: JitgateError | None = None
    token_close: bool | None = None  # set when `error` is the token's: whether the connection closes
    flushed: bool = False


class PgListener:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        dynamodb: Any = None,
        secretsmanager: Any = None,
        s3: Any = None,
        aws: settings.AwsClients | None = None,
        scanner: Callable[[], Scanner | None] | None = None,
    ) -> None:
        self._clients = aws or settings.AwsClients()
        # The HTTP path's scanner (same mask key, so the same tags); without one, a scanner of its own.
        self._scanner_of = scanner
        self._own_scanner: Scanner | None = None
        self._clock = clock
        self._monotonic = monotonic
        self._dynamodb = dynamodb
        self._sm = secretsmanager
        self._s3 = s3
        self.enabled = False
        self.listen: tuple[str, int] = ("127.0.0.1", 0)
        self.port = 0
        self.policy: Policy | None = None
        self.jwks_url = ""
        self.issuer = ""
        self.refetch_interval = 10.0
        self.lease = settings.DEFAULT_LEASE
        self.secret_ttl = float(settings.DEFAULT_SECRET_TTL)
        self.table = ""
        self.gateway = ""
        self.required = True
        self.keys = KeySet({})
        self._keys_at = float("-inf")
        self._keys_lock = asyncio.Lock()
        self.revocations = RevocationList(clock=clock, monotonic=monotonic)
        self._secrets: dict[str, _Secret] = {}
        self._leases: dict[str, int] = {}
        self._server: asyncio.Server | None = None
        self._tls: ssl.SSLContext | None = None
        self._upstream_tls: ssl.SSLContext | None = None
        self.spool: Spool | None = None
        self.uploader: Uploader | None = None
        self._spool_config: SpoolConfig | None = None
        self._durable: Path | None = None
        self._ship_timeout = 60.0
        self._bucket = ""
        self._prefix = "sessions/"
        self._write_lock = threading.Lock()
        self.sessions: set[_Session] = set()
        self.cancel_keys: pgsession.CancelKeys[_Session] = pgsession.CancelKeys()
        self.decisions = DecisionCache()  # per (statement text, schema, scope): parse and scope decisions
        self.holds: pghold.StatementHolds | None = None

    # -- configuration ----------------------------------------------------------------------

    def load(self, loader: Loader) -> None:
        settings.add_options(loader, *settings.SHARED, *_READS)

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        if not opts.jitgate_pg_listen:
            self.enabled = False
            return
        try:
            self.listen = parse_listen(opts.jitgate_pg_listen)
        except ValueError as exc:
            raise settings.options_error(str(exc)) from None
        self.enabled = True
        self.policy = settings.policy_from(opts.jitgate_policy)
        self.jwks_url, self.issuer = settings.broker_keys(opts)
        if not opts.jitgate_table:
            raise settings.options_error("jitgate_table is required: revocations and usage are read from it")
        try:
            refresh = durations.parse_seconds(opts.jitgate_revocation_refresh)
            staleness = durations.parse_seconds(opts.jitgate_revocation_staleness)
            self.refetch_interval = durations.parse_seconds(opts.jitgate_jwks_refetch_interval, zero_ok=True)
        except ValueError as exc:
            raise settings.options_error(f"jitgate revocation / JWKS option: {exc}") from None
        self.revocations.interval, self.revocations.staleness = refresh, staleness
        self.table = self.revocations.table = opts.jitgate_table
        self.lease = max(1, opts.jitgate_usage_lease)
        self.secret_ttl = float(opts.jitgate_secret_ttl)
        self.required = opts.jitgate_audit_required
        if self._dynamodb is None:
            self._dynamodb = self._clients.client("dynamodb", opts)
        if self._sm is None:
            self._sm = self._clients.client("secretsmanager", opts)
        if self._s3 is None and opts.jitgate_bucket:
            self._s3 = self._clients.client("s3", opts)
        self.revocations.dynamodb = self._dynamodb
        self.gateway = opts.jitgate_gateway_id or socket.gethostname()
        self.holds = self._holds(opts)
        base = Path(opts.jitgate_spool_dir or os.path.join(os.path.expanduser(opts.confdir), "jitgate-spool"))
        self._spool_config = SpoolConfig(
            directory=base / "postgres",
            gateway=f"{self.gateway}-pg",
            max_segment_bytes=opts.jitgate_segment_bytes,
            max_segment_age=opts.jitgate_segment_ms / 1000,
            fsync_interval=opts.jitgate_fsync_ms / 1000,
            max_bytes=opts.jitgate_spool_max_bytes,
        )
        self._bucket, self._prefix = opts.jitgate_bucket, opts.jitgate_sessions_prefix
        self._durable_spool(opts, base)
        self._tls = self._tls_context(Path(os.path.expanduser(opts.confdir)))
        self._upstream_tls = ssl.create_default_context(cafile=certifi.where())
        if opts.jitgate_upstream_ca:
            try:
                self._upstream_tls.load_verify_locations(cafile=opts.jitgate_upstream_ca)
            except (OSError, ssl.SSLError) as exc:
                raise settings.options_error(f"jitgate_upstream_ca: cannot use it ({type(exc).__name__})") from None

    def _durable_spool(self, opts: Any, spool: Path) -> None:
        """The HTTP recorder's durable spool and ship budget (docs/deployment.md): what a stop cannot
        ship moves to `<durable>/<gateway>-pg/`, and this uploader adopts what other gateways left."""
        self._ship_timeout = settings.value(opts, "jitgate_ship_timeout")
        durable = self._durable = settings.durable_spool(opts, spool)
        if durable is None:
            return
        try:
            check_durable(durable)
        except OSError as exc:
            raise settings.options_error(f"jitgate_durable_spool: cannot use {durable}: {exc.strerror}") from None

    def _holds(self, opts: Any) -> pghold.StatementHolds:
        timeout = settings.value(opts, "jitgate_approval_timeout")
        poll = settings.value(opts, "jitgate_approval_poll")
        if poll >= timeout:
            raise settings.options_error("jitgate_approval_poll must be shorter than jitgate_approval_timeout")
        topic = settings.value(opts, "jitgate_approval_topic")
        return pghold.StatementHolds(
            dynamodb=self._dynamodb, table=self.table, timeout=timeout, poll=poll,
            max_held=settings.value(opts, "jitgate_approval_max_held"), gateway=self.gateway, clock=self._clock,
            monotonic=self._monotonic, sns=self._clients.client("sns", opts) if topic else None, topic=topic,
        )

    def _tls_context(self, confdir: Path) -> ssl.SSLContext:
        """A server certificate from the gateway CA for the listener's names and the connections' hosts."""
        store = certs.CertStore.from_store(confdir, "mitmproxy", 2048)
        names = {self.listen[0], "localhost", "127.0.0.1"} - {"0.0.0.0", "::", ""}  # noqa: S104
        assert self.policy is not None
        for conn in self.policy.connections.values():
            if conn.dialect == "postgres":
                names |= set(conn.hosts)
        entry = store.get_cert(sorted(names)[0], _sans(names))
        folder = Path(tempfile.mkdtemp(prefix="jitgate-pg-tls-"))
        cert_path, key_path = folder / "cert.pem", folder / "key.pem"
        cert_path.write_bytes(entry.cert.to_pem())
        key_fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(key_fd, "wb") as out:
            out.write(
                entry.privatekey.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert_path, key_path)
        key_path.unlink()
        cert_path.unlink()
        folder.rmdir()
        return context

    async def running(self) -> None:
        if not self.enabled or self._server is not None:
            return
        await asyncio.to_thread(self._refresh_keys)
        await asyncio.to_thread(self.revocations.refresh)
        self.revocations.start(tick=None)
        assert self._spool_config is not None
        self.spool = Spool(self._spool_config, clock=self._clock)
        self.spool.start()
        self.uploader = Uploader(self.spool, self._put_fn(), prefix=self._prefix, durable=self._durable)
        self.uploader.start()
        host, port = self.listen
        self._server = await asyncio.start_server(self._accept, host, port, limit=pgwire.MAX_MESSAGE)
        self.port = self._server.sockets[0].getsockname()[1]
        logger.warning("jitgate: postgres listening at %s:%d", host, self.port)

    def _put_fn(self) -> Any:
        if not self._bucket:
            logger.warning("jitgate_bucket is empty: postgres session records stay in the spool")
            return None
        s3 = self._s3
        bucket = self._bucket

        def put(key: str, body: bytes) -> None:
            s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/x-ndjson")

        return put

    def done(self) -> None:
        self.revocations.stop()
        if self._server is not None:
            self._server.close()
            self._server = None
        if self.uploader is not None:  # ships what it can, moves the rest to the durable spool (if any)
            self.uploader.stop(flush_timeout=self._ship_timeout, join_timeout=self._ship_timeout)
            self.uploader = None

    # -- tokens -----------------------------------------------------------------------------

    def _refresh_keys(self) -> bool:
        self._keys_at = self._monotonic()
        try:
            resp = httpx.get(self.jwks_url, timeout=3.0, follow_redirects=False)
            resp.raise_for_status()
            self.keys = KeySet.from_jwks(resp.json())
        except Exception as exc:
            logger.warning("jitgate: JWKS fetch failed (%s)", type(exc).__name__)
            return False
        return True

    async def verify(self, token: str) -> Claims:
        now = self._clock()
        try:
            return verify_token(token, self.keys, now=now, issuer=self.issuer)
        except UnknownKeyId:
            async with self._keys_lock:
                due = self._monotonic() - self._keys_at >= self.refetch_interval
                if due and not await asyncio.to_thread(self._refresh_keys):
                    raise KeysUnavailable("the broker's signing keys cannot be fetched") from None
            return verify_token(token, self.keys, now=now, issuer=self.issuer)

    def still_valid(self, claims: Claims) -> JitgateError | None:
        """The per-statement token check: unexpired, the revocation list fresh, not revoked."""
        if self._clock() >= claims.exp + DEFAULT_LEEWAY:
            return TokenExpired("token has expired")
        if not self.revocations.fresh():
            return RevocationUnavailable("the revocation list is stale; statements are refused until it refreshes")
        if claims.jti in self.revocations:
            return TokenRevoked("token has been revoked")
        return None

    async def take_use(self, claims: Claims) -> JitgateError | None:
        """One use of `max_requests` from this gateway's lease on the token's shared counter."""
        limit = claims.limits.max_requests
        if limit is None:
            return None
        left = self._leases.get(claims.jti, 0)
        if left <= 0:
            try:
                left = await asyncio.to_thread(
                    reserve_requests, self._dynamodb, self.table, claims, lease_size(limit, self.lease)
                )
            except Exception as exc:
                logger.warning("jitgate: usage counter update failed (%s)", type(exc).__name__)
                return UsageUnavailable("the usage counter cannot be updated")
            if left <= 0:
                return RequestLimitExceeded("this token's max_requests is used up")
        self._leases[claims.jti] = left - 1
        return None

    # -- upstream credential --------------------------------------------------------------------

    async def credential(self, conn: Connection, *, fresh: bool = False) -> _Secret:
        sid = conn.credential.secret_id
        held = self._secrets.get(sid)
        if held is not None and not fresh and self._monotonic() - held.fetched_at < self.secret_ttl:
            return held
        try:
            raw = await asyncio.to_thread(lambda: self._sm.get_secret_value(SecretId=sid)["SecretString"])
            doc = json.loads(raw)
            username, password = doc["username"], doc["password"]
            if not (isinstance(username, str) and isinstance(password, str) and username and password):
                raise ValueError("incomplete")
        except Exception as exc:
            if held is not None and not fresh:
                return held
            logger.warning("jitgate: postgres credential for %s unavailable (%s)", conn.name, type(exc).__name__)
            raise CredentialUnavailable("the upstream credential cannot be read") from None
        secret = _Secret(username, password, self._monotonic())
        self._secrets[sid] = secret
        return secret

    # -- records ------------------------------------------------------------------------------

    def record(self, record: SessionRecord) -> None:
        spool = self.spool
        if spool is None:
            return
        line = record.to_json_line()
        try:
            if not spool.try_append(line):
                with self._write_lock:
                    spool.append(line)
        except Exception as exc:
            logger.error("postgres session record not written: %s", type(exc).__name__)

    def scanner(self) -> Scanner:
        given = self._scanner_of() if self._scanner_of is not None else None
        if given is not None:
            return given
        if self._own_scanner is None:  # no HTTP path in this process: tags correlate within it only
            self._own_scanner = Scanner(secrets.token_bytes(32))
        return self._own_scanner

    def audit_error(self) -> JitgateError | None:
        if self.required and self.spool is not None and self.spool.failing:
            return AuditUnavailable("the session record cannot be written; the statement is refused")
        return None

    # -- connections --------------------------------------------------------------------------

    async def cancel(self, key: bytes) -> None:
        """A client's CancelRequest: the server's own, on a fresh connection, when the key names a session."""
        session = self.cancel_keys.find(key)
        if session is None or session.server_key is None or session.conn is None:
            return
        try:
            async with asyncio.timeout(_UPSTREAM_TIMEOUT):
                r, w = await self.open_upstream(session.conn)
                try:
                    w.write(pgsession.cancel_request(session.server_key))
                    await w.drain()
                    await r.read(1)  # the server closes the connection once it has read the request
                finally:
                    w.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, pgwire.WireError) as exc:
            logger.warning("jitgate: postgres cancel not delivered (%s)", type(exc).__name__)

    async def open_upstream(self, conn: Connection) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the server, inside verified TLS when the connection asks for it."""
        r, w = await asyncio.open_connection(conn.upstream_host, conn.upstream_port)
        try:
            if conn.upstream_tls:
                w.write(struct.pack("!II", 8, pgwire.SSL_REQUEST))
                await w.drain()
                if await r.readexactly(1) != b"S":
                    raise pgwire.WireError("the database does not offer TLS")
                assert self._upstream_tls is not None
                await w.start_tls(self._upstream_tls, server_hostname=conn.upstream_host)
        except BaseException:
            w.close()
            raise
        return r, w

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(self, reader, writer)
        self.sessions.add(session)
        try:
            await session.run()
        except Exception as exc:  # a session's failure ends that session only, closed
            logger.warning("jitgate: postgres session ended: %s", type(exc).__name__)
        finally:
            self.sessions.discard(session)
            await session.close()


class _Session:
    def __init__(self, listener: PgListener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.gw = listener
        self.reader, self.writer = reader, writer
        self.up_reader: asyncio.StreamReader | None = None
        self.up_writer: asyncio.StreamWriter | None = None
        self.claims: Claims | None = None
        self.conn: Connection | None = None
        self.token_sha256 = ""
        self.user = ""
        self.peer = writer.get_extra_info("peername")
        self.id = secrets.token_hex(8)
        self.seq = 0
        self.prepared: dict[str, Statement | None] = {}
        self.portals: dict[str, str] = {}
        self.pending: deque[_Pending] = deque()
        self.shape: pgmask.RowShape | None = None  # of the last RowDescription of this cycle
        self.shapes = pgmask.ShapeCache(frozenset())  # RowShapes by RowDescription (after mask_columns are read)
        self.awaiting_rfq = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.tx = b"I"
        self.aborted = False
        self.discarding: JitgateError | None = None
        self.out = bytearray()  # what is relayed to the client but not yet written (on_server)
        self.plan: tuple[Policy | None, actions.Plan] | None = None  # the token's masking plan, per policy (mask)
        self.closing = False
        self.pump: asyncio.Task[None] | None = None
        self.options = ""  # the upstream startup's options: the pinned search_path and the jitgate.* settings
        self.server_key: bytes | None = None  # the server's BackendKeyData: never sent to the client
        self.own_key: bytes | None = None  # the one the client got (its CancelRequest names it)
        self.masked_attrs: frozenset[tuple[int, int]] = frozenset()  # mask_columns as (table oid, attnum)

    # -- plumbing ---------------------------------------------------------------------------

    async def close(self) -> None:
        if self.own_key is not None:
            self.gw.cancel_keys.forget(self.own_key)
        for w in (self.writer, self.up_writer):
            if w is not None:
                with contextlib.suppress(Exception):
                    w.close()
        if self.pump is not None:
            self.pump.cancel()

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def fatal(self, err: JitgateError, sqlstate: str) -> None:
        with contextlib.suppress(Exception):
            await self.send(error_response(sqlstate, err.message, severity="FATAL", code=err.code))
        self.closing = True

    async def run(self) -> None:
        try:
            async with asyncio.timeout(_STARTUP_TIMEOUT):
                if not await self.startup():
                    return
        except TimeoutError:
            return
        except pgwire.WireError:
            await self.fatal(ProtocolViolation("the startup could not be read"), pgwire.SQLSTATE_PROTOCOL)
            return
        self.pump = asyncio.create_task(self.relay_server())
        await self.relay_client()

    # -- startup --------------------------------------------------------------------------------

    async def startup(self) -> bool:
        tls = False
        while True:
            code, rest = await pgwire.read_startup(self.reader.readexactly)
            if code == pgwire.SSL_REQUEST and not tls:
                if self.gw._tls is None:
                    await self.send(b"N")
                    continue
                await self.send(b"S")
                await self.writer.start_tls(self.gw._tls)
                tls = True
                continue
            if code == pgwire.GSSENC_REQUEST and not tls:
                await self.send(b"N")
                continue
            if code == pgwire.CANCEL_REQUEST:
                await self.gw.cancel(rest)
                return False
            break
        if code >> 16 != 3:
            await self.fatal(ProtocolViolation("only protocol 3 is spoken here"), pgwire.SQLSTATE_PROTOCOL)
            return False
        if not tls:
            msg = "connect with TLS (sslmode=verify-full and the gateway CA): the password is a token"
            await self.fatal(TlsRequired(msg), pgwire.SQLSTATE_AUTH)
            return False
        params = pgwire.startup_params(rest)
        if code & 0xFFFF:  # a newer 3.x: answer 3.0, and which _pq_ options are not understood
            unknown = [k for k in params if k.startswith("_pq_.")]
            body = struct.pack("!II", pgwire.PROTOCOL_3_0, len(unknown)) + b"".join(k.encode() + b"\0" for k in unknown)
            await self.send(message(b"v", body))
        if params.get("replication", "false").lower() not in ("false", "off", "no", "0"):
            refused = ReplicationNotAllowed("replication is not relayed by the gateway")
            await self.fatal(refused, pgwire.SQLSTATE_REFUSED)
            return False
        if params.get("options"):
            await self.fatal(StatementNotAllowed("startup options are not allowed (settings are SET, checked)"),
                             pgwire.SQLSTATE_REFUSED)
            return False
        self.user = params.get("user", "")[:128]
        database = params.get("database") or self.user
        await self.send(pgwire.auth_request(pgwire.AUTH_CLEARTEXT))
        reply = await pgwire.read_message(self.reader.readexactly, limit=32 * 1024)
        if reply.type != b"p":
            await self.fatal(ProtocolViolation("a password message was expected"), pgwire.SQLSTATE_PROTOCOL)
            return False
        token, _ = pgwire.cstring(reply.body)
        self.token_sha256 = hashlib.sha256(token.encode()).hexdigest()
        try:
            claims = await self.gw.verify(token)
        except JitgateError as err:
            await self.fatal(err if isinstance(err, InvalidToken | KeysUnavailable) else InvalidToken("token invalid"),
                             pgwire.SQLSTATE_AUTH)
            return False
        except Exception:
            await self.fatal(InvalidToken("token could not be verified"), pgwire.SQLSTATE_AUTH)
            return False
        problem = self.gw.still_valid(claims)
        if problem is not None:
            await self.fatal(problem, pgwire.SQLSTATE_AUTH)
            return False
        policy = self.gw.policy
        conn = policy.connections.get(claims.conn) if policy is not None else None
        if conn is None or conn.dialect != "postgres":
            await self.fatal(WrongConnection("this token is not for a postgres connection"), pgwire.SQLSTATE_AUTH)
            return False
        if database != conn.database:
            await self.fatal(WrongConnection(f"this token is for database {conn.database!r}"), pgwire.SQLSTATE_AUTH)
            return False
        self.claims, self.conn = claims, conn
        identity = pgsession.identity_settings(sub=claims.sub, job=claims.job, connection=claims.conn,
                                               groups=claims.groups)
        try:
            pinned = {"search_path": f"pg_catalog,{conn.sql_schema}"}
            self.options = pgsession.startup_options(pinned | identity)
        except JitgateError as err:
            await self.fatal(err, pgwire.SQLSTATE_AUTH)
            return False
        try:
            await self.connect_upstream(params.get("application_name", ""))
        except JitgateError as err:
            await self.fatal(err, pgwire.SQLSTATE_UNAVAILABLE)
            return False
        return True

    async def connect_upstream(self, application_name: str) -> None:
        assert self.conn is not None
        for attempt in range(2):
            secret = await self.gw.credential(self.conn, fresh=attempt > 0)
            try:
                result = await asyncio.wait_for(self._upstream_login(secret, application_name), _UPSTREAM_TIMEOUT)
            except (OSError, TimeoutError, pgwire.WireError, asyncio.IncompleteReadError):
                raise UpstreamUnavailable("the database cannot be reached") from None
            if result == "ok":
                return
            if result != "28P01":  # anything but a rejected password: no retry
                break
        raise UpstreamUnavailable("the database refused the gateway's credential")

    async def _upstream_login(self, secret: _Secret, application_name: str) -> str:
        assert self.conn is not None
        if self.up_writer is not None:
            self.up_writer.close()
        r, w = await self.gw.open_upstream(self.conn)
        self.up_reader, self.up_writer = r, w
        params = {
            "user": secret.username,
            "database": self.conn.database,
            "client_encoding": "UTF8",
            "options": self.options,
        }
        if application_name:
            params["application_name"] = application_name[:63]
        w.write(pgwire.startup_message(params))
        scram: ScramClient | None = None
        while True:
            msg = await pgwire.read_message(r.readexactly)
            if msg.type == b"E":
                return pgwire.error_fields(msg.body).get("C", "XX000")
            if msg.type != b"R":
                raise pgwire.WireError("unexpected message during authentication")
            (kind,) = struct.unpack("!I", msg.body[:4])
            data = msg.body[4:]
            if kind == pgwire.AUTH_OK:
                break
            if kind == pgwire.AUTH_SASL:
                if b"SCRAM-SHA-256\0" not in data:
                    raise pgwire.WireError("no SCRAM-SHA-256")
                scram = ScramClient(["SCRAM-SHA-256"], secret.username, secret.password)
                first = scram.get_client_first().encode()
                w.write(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first))
            elif kind == pgwire.AUTH_SASL_CONTINUE and scram is not None:
                scram.set_server_first(data.decode())
                w.write(message(b"p", scram.get_client_final().encode()))
            elif kind == pgwire.AUTH_SASL_FINAL and scram is not None:
                scram.set_server_final(data.decode())  # raises when the server cannot prove it knows the secret
            elif kind == pgwire.AUTH_MD5:
                inner = hashlib.md5((secret.password + secret.username).encode()).hexdigest()  # noqa: S324
                outer = hashlib.md5(inner.encode() + data[:4]).hexdigest()  # noqa: S324  (the protocol's md5)
                w.write(message(b"p", b"md5" + outer.encode() + b"\0"))
            else:
                raise pgwire.WireError("authentication method not accepted")  # cleartext upstream: never
            await w.drain()
        await self.send(pgwire.auth_request(pgwire.AUTH_OK))
        out = bytearray()
        while True:
            msg = await pgwire.read_message(r.readexactly)
            if msg.type == b"K":  # the client gets a key of the gateway's own; its CancelRequest maps to this one
                self.server_key = msg.body
                if self.own_key is None:
                    self.own_key = self.gw.cancel_keys.issue(self)
                out += message(b"K", self.own_key)
            elif msg.type == b"E":
                return pgwire.error_fields(msg.body).get("C", "XX000")
            elif msg.type == b"Z":
                self.tx = msg.body[:1]
                out += msg.raw()
                break
            else:
                out += msg.raw()
        assert self.claims is not None
        if self.claims.scope.mask_columns:
            self.masked_attrs = await self._masked_attributes(r, w, self.claims.scope.mask_columns)
        self.shapes = pgmask.ShapeCache(self.masked_attrs)
        await self.send(bytes(out))
        return "ok"

    async def _masked_attributes(
        self, r: asyncio.StreamReader, w: asyncio.StreamWriter, mask_columns: tuple[str, ...]
    ) -> frozenset[tuple[int, int]]:
        """The grant's `mask_columns` as (table oid, attnum), read before the client's first statement."""
        assert self.conn is not None
        w.write(message(b"Q", pgmask.masked_attributes_query(mask_columns).encode() + b"\0"))
        await w.drain()
        rows: list[bytes] = []
        failed = False
        while True:
            msg = await pgwire.read_message(r.readexactly)
            if msg.type == b"D":
                rows.append(msg.body)
            elif msg.type == b"E":
                failed = True
            elif msg.type == b"Z":
                break
        if failed:
            raise UpstreamUnavailable("the columns to mask cannot be read from the catalog")
        return pgmask.masked_attributes(rows, mask_columns, self.conn.sql_schema)

    # -- server → client -----------------------------------------------------------------------

    async def relay_server(self) -> None:
        assert self.up_reader is not None
        reader = pgwire.MessageReader(self.up_reader.read)
        try:
            while True:
                await self.on_server(await reader.batch())
        except (asyncio.IncompleteReadError, ConnectionError, pgwire.WireError):
            pass
        finally:
            self.closing = True
            with contextlib.suppress(Exception):
                self.writer.write(self._take_out())
                self.writer.close()

    async def on_server(self, msgs: list[Message]) -> None:
        """What one read from the server brought: relayed in order, then written as one write."""
        rows: list[bytes] = []
        wait = False
        for msg in msgs:
            if msg.type == b"D":  # a run of DataRows is masked together
                rows.append(msg.body)
                continue
            if rows:
                self.on_rows(rows)
                rows = []
            self.on_message(msg)
            wait = wait or msg.type in (b"Z", b"C")
        if rows:
            self.on_rows(rows)
        self.writer.write(self._take_out())
        # Wait for a slow client at each completion, or when its buffer grows: memory stays bounded.
        if wait or self.writer.transport.get_write_buffer_size() > _CLIENT_BUFFER:
            await self.writer.drain()

    def on_rows(self, bodies: list[bytes]) -> None:
        limits = self.claims.limits if self.claims is not None else None
        if self.discarding is None:
            try:
                bodies = self.mask(bodies)
            except (pgwire.WireError, ResultNotMaskable):
                self._cut(ResultNotMaskable("result rows the gateway cannot read are not passed on"))
        head = self.pending[0] if self.pending else None
        for body in bodies:
            if head is not None:
                head.rows += 1
                head.bytes += len(body) + 5
                if self.discarding is None and limits is not None:
                    if limits.max_documents is not None and head.rows > limits.max_documents:
                        self._cut(RowLimitExceeded(f"the result passed this token's {limits.max_documents} rows"))
                    elif limits.max_bytes is not None and head.bytes > limits.max_bytes:
                        self._cut(RowLimitExceeded(f"the result passed this token's {limits.max_bytes} bytes"))
            if self.discarding is None:
                self.out += b"D"
                self.out += struct.pack("!I", len(body) + 4)
                self.out += body

    def on_message(self, msg: Message) -> None:
        t = msg.type
        if t == b"T":
            try:
                self.shape = self.shapes.shape(msg.body)
            except pgwire.WireError:
                self.shape = None
        elif t in (b"C", b"E", b"I", b"s") and self.pending:
            head = self.pending.popleft()
            err = self.discarding
            sqlstate = pgwire.error_fields(msg.body).get("C") if t == b"E" else None
            if err is not None and head.stmt is not None:
                self.write_record(head.stmt, Decision.BLOCKED, err.code, head)
            elif head.stmt is not None:
                self.write_record(head.stmt, Decision.ALLOWED, f"sqlstate:{sqlstate}" if sqlstate else None, head)
        elif t == b"Z":
            for left in self.pending:  # skipped after an error: recorded as not run
                if left.stmt is not None:
                    self.write_record(left.stmt, Decision.BLOCKED, "not_run", left)
            self.pending.clear()
            self.shape = None
            self.tx = msg.body[:1]
            self.awaiting_rfq = max(0, self.awaiting_rfq - 1)
            if self.discarding is not None:
                self.discarding = None
                if self.tx == b"T":
                    self.aborted = True
                msg = Message(b"Z", b"E" if self.aborted else self.tx)
            elif self.aborted and self.tx == b"T":
                msg = Message(b"Z", b"E")
            if self.awaiting_rfq == 0:
                self.idle.set()
        if self.discarding is None or t == b"Z":
            self.out += msg.raw()

    def mask(self, bodies: list[bytes]) -> list[bytes]:
        """DataRows with their text-like values masked per the connection's profile."""
        if self.shape is None:
            raise ResultNotMaskable("rows without a row description")
        scanner = self.gw.scanner()
        policy = self.gw.policy
        if self.plan is None or self.plan[0] is not policy:  # one plan per policy a session, not one a row
            self.plan = (policy, actions.plan(leaks.profile_for(policy, self.claims, self.conn, ""), "response"))
        masked = pgmask.mask_rows(scanner, self.plan[1], self.shape, bodies, tag=scanner.tag)
        if self.pending:
            head = self.pending[0]
            for _, found in masked:
                for c, f in found:
                    head.found(escape_text(c), f)
        return [body for body, _ in masked]

    def _take_out(self) -> bytes:
        out = bytes(self.out)
        self.out.clear()
        return out

    def _cut(self, err: JitgateError) -> None:
        """A result over a limit: the client gets an error, the rest of the answer is dropped."""
        self.discarding = err
        self.out += error_response(pgwire.SQLSTATE_LIMIT, err.message, code=err.code)

    # -- client → server -----------------------------------------------------------------------

    async def forward(self, data: bytes, *, syncs: int) -> None:
        assert self.up_writer is not None
        if syncs:
            self.awaiting_rfq += syncs
            self.idle.clear()
        self.up_writer.write(data)
        await self.up_writer.drain()

    async def answer(self, err: JitgateError, sqlstate: str = pgwire.SQLSTATE_REFUSED) -> None:
        """A refusal in the server's place, once the server has answered everything sent before."""
        await self.idle.wait()
        if self.tx in (b"T", b"E"):
            self.aborted = True
        status = b"E" if self.aborted else self.tx
        await self.send(error_response(sqlstate, err.message, code=err.code) + ready_for_query(status))

    async def relay_client(self) -> None:
        batch = _Batch()
        while not self.closing:
            try:
                msg = await pgwire.read_message(self.reader.readexactly)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            except pgwire.WireError:
                await self.fatal(ProtocolViolation("a message could not be read"), pgwire.SQLSTATE_PROTOCOL)
                return
            t = msg.type
            if t == b"X":
                with contextlib.suppress(Exception):
                    await self.forward(msg.raw(), syncs=0)
                return
            if t == b"Q":
                await self.simple_query(msg)
            elif t[0] in _EXTENDED:
                batch = await self.extended(msg, batch)
            elif t == b"F":
                await self.answer(StatementNotAllowed("fast-path function calls are not allowed"))
            else:
                violation = ProtocolViolation(f"message type {t!r} is not accepted here")
                await self.fatal(violation, pgwire.SQLSTATE_PROTOCOL)
                return

    async def statement_gate(self) -> tuple[JitgateError | None, bool]:
        """Token and audit checks before a statement: (error, whether the connection must close)."""
        assert self.claims is not None
        problem = self.gw.still_valid(self.claims)
        if problem is not None:
            return problem, not isinstance(problem, RevocationUnavailable)
        return self.gw.audit_error(), False

    def check(self, sql: str) -> tuple[Sequence[Statement], JitgateError | None]:
        assert self.claims is not None and self.conn is not None
        limit = self.claims.limits.max_bytes
        if limit is not None and len(sql.encode("utf-8", "replace")) > limit:
            return [], StatementNotAllowed(f"statements longer than this token's {limit} bytes are refused")
        stmts, refused = self.gw.decisions.decide(sql, self.claims.scope, self.conn.sql_schema)
        if refused is not None:
            return stmts, refused
        if self.aborted and not all(s.effect in _ABORTED_OK for s in stmts):
            return stmts, _aborted()
        return stmts, None

    async def simple_query(self, msg: Message) -> None:
        started = time.perf_counter()
        try:
            sql, end = pgwire.cstring(msg.body)
            if end != len(msg.body):  # bytes after the text: the server reads none of them, nor does the check
                raise pgwire.WireError("data after the query text")
        except pgwire.WireError:
            await self.fatal(ProtocolViolation("the query is not one UTF-8 text"), pgwire.SQLSTATE_PROTOCOL)
            return
        problem, close = await self.statement_gate()
        if problem is not None:
            await self._refuse_token(problem, close)
            return
        stmts, err = self.check(sql)
        if err is None:
            for _ in stmts:
                err = await self.gw.take_use(self._claims())
                if err is not None:
                    break
        if err is not None:
            self._record_refusal(stmts, err, started)
            await self.answer(err, _sqlstate(err))
            return
        hold = await self.held(stmts)
        if hold is not None and hold.error is not None:
            await self._refuse_held(stmts, hold, started)
            return
        approval_id = hold.approval_id if hold is not None else None
        raw = msg.raw()
        if self.aborted and len(stmts) == 1 and stmts[0].effect == "commit":
            raw = message(b"Q", b"ROLLBACK\0")  # COMMIT of a failed transaction is a rollback
        if self.aborted:
            self.aborted = False
        self._apply_effects(stmts)
        self.pending.extend(_Pending(s, started, approval_id=approval_id) for s in stmts)
        await self.forward(raw, syncs=1)

    async def held(self, stmts: Sequence[Statement]) -> pghold.HoldEnd | None:
        """Statements the approval rules name wait here for a human (jitgate.pghold); None: no hold."""
        assert self.claims is not None and self.conn is not None
        holds, policy = self.gw.holds, self.gw.policy
        reasons = pghold.hold_reasons(self.conn.approval, stmts)
        if not reasons:
            return None
        if holds is None or policy is None:  # never forwarded without its hold (fail closed)
            return pghold.HoldEnd(None, Decision.DENIED, ApprovalUnavailable("statement holds are not configured"))
        approval = pghold.statement_hold(
            policy, self.conn, self.claims, stmts, reasons, user=escape_text(self.user), now=self.gw._clock(),
            timeout=holds.timeout, gateway=self.gw.gateway, flow_id=f"pg-{self.id}-{self.seq + 1}",
        )
        end = await holds.hold(approval, gate=self.statement_gate, gone=lambda: self.closing or self.reader.at_eof())
        if end.error is None:  # approved: the token as before any statement
            problem, close = await self.statement_gate()
            if problem is not None:
                return pghold.HoldEnd(end.approval_id, Decision.DENIED, problem, close)
        return end

    async def _refuse_held(self, stmts: Sequence[Statement], end: pghold.HoldEnd, started: float) -> None:
        assert end.error is not None
        for s in stmts:
            self.write_record(s, end.decision, end.error.code, _Pending(s, started, approval_id=end.approval_id))
        if end.close:
            await self._refuse_token(end.error, True)
        else:
            await self.answer(end.error, _sqlstate(end.error))

    async def _refuse_token(self, problem: JitgateError, close: bool) -> None:
        if close:
            await self.idle.wait()
            await self.fatal(problem, pgwire.SQLSTATE_AUTH)
        else:
            await self.answer(problem, pgwire.SQLSTATE_UNAVAILABLE)

    def _claims(self) -> Claims:
        assert self.claims is not None
        return self.claims

    def _apply_effects(self, stmts: Sequence[Statement]) -> None:
        for s in stmts:
            if s.effect in ("deallocate_all", "discard"):
                self.prepared.clear()
                self.portals.clear()
            elif s.effect is not None and s.effect.startswith("deallocate:"):
                self.prepared.pop(s.effect.split(":", 1)[1], None)

    async def extended(self, msg: Message, batch: _Batch) -> _Batch:
        t = msg.type
        if batch.error is None:
            try:
                await self._check_extended(msg, batch)
            except pgwire.WireError:
                batch.error = ProtocolViolation("an extended-protocol message could not be read")
        if batch.error is not None and batch.flushed:
            await self.idle.wait()
            await self.fatal(batch.error, pgwire.SQLSTATE_REFUSED)
            return _Batch()
        if t == b"H" and batch.error is None:
            await self._flush_batch(batch, syncs=0)
            batch.raw.clear()
            batch.flushed = True
            return batch
        if t != b"S":
            return batch
        if batch.error is not None:
            err = batch.error
            if batch.token_close is not None:
                await self._refuse_token(err, batch.token_close)
            else:
                await self.answer(err, _sqlstate(err))
            return _Batch()
        await self._flush_batch(batch, syncs=1)
        return _Batch()

    async def _flush_batch(self, batch: _Batch, *, syncs: int) -> None:
        self.prepared.update(batch.parsed)
        self.portals.update(batch.portals)
        for kind, name in batch.closed:
            (self.prepared if kind == "S" else self.portals).pop(name, None)
        started = time.perf_counter()
        for stmt, approval_id in batch.executes:
            if stmt is not None:
                self._apply_effects([stmt])
            self.pending.append(_Pending(stmt, started, approval_id=approval_id))
        if self.aborted and any(s is not None and s.effect in _ABORTED_OK for s, _ in batch.executes):
            self.aborted = False
        batch.parsed, batch.portals, batch.closed, batch.executes = {}, {}, [], []
        await self.forward(b"".join(batch.raw), syncs=syncs)

    def _known(self, name: str, batch: _Batch) -> bool:
        return name in batch.parsed or name in self.prepared

    def _statement_of(self, name: str, batch: _Batch) -> Statement | None:
        return batch.parsed[name] if name in batch.parsed else self.prepared.get(name)

    async def _check_extended(self, msg: Message, batch: _Batch) -> None:
        t = msg.type
        batch.raw.append(msg.raw())
        if t == b"P":
            name, sql = pgwire.parse_message(msg.body)
            problem, close = await self.statement_gate()
            if problem is not None:
                batch.error, batch.token_close = problem, close
                return
            stmts, err = self.check(sql)
            if err is None and len(stmts) > 1:
                err = StatementNotAllowed("a prepared statement holds one statement")
            if err is not None:
                self._record_refusal(stmts, err, time.perf_counter())
                batch.error = err
                return
            batch.parsed[name] = stmts[0] if stmts else None
            if self.aborted and stmts and stmts[0].effect == "commit":  # as in a simple Query: a rollback
                rest = msg.body[msg.body.index(b"\0", len(name.encode()) + 1) + 1 :]
                batch.raw[-1] = message(b"P", name.encode() + b"\0ROLLBACK\0" + rest)
        elif t == b"B":
            portal, name = pgwire.bind_names(msg.body)
            if not self._known(name, batch):
                batch.error = StatementNotAllowed("Bind names no statement the gateway checked")
                return
            batch.portals[portal] = name
        elif t == b"D" or t == b"C":
            kind, name = pgwire.target(msg.body)
            if kind == "S" and not self._known(name, batch) and t == b"D":
                batch.error = StatementNotAllowed("Describe names no statement the gateway checked")
            elif kind == "P" and t == b"D" and name not in batch.portals and name not in self.portals:
                batch.error = StatementNotAllowed("Describe names no portal the gateway opened")
            elif kind not in ("S", "P"):
                raise pgwire.WireError("bad target")
            elif t == b"C":
                batch.closed.append((kind, name))
        elif t == b"E":
            portal, _ = pgwire.cstring(msg.body)
            opened = batch.portals.get(portal, self.portals.get(portal))
            if opened is None or not self._known(opened, batch):
                batch.error = StatementNotAllowed("Execute names no portal the gateway opened")
                return
            problem, close = await self.statement_gate()
            if problem is not None:
                batch.error, batch.token_close = problem, close
                return
            stmt = self._statement_of(opened, batch)
            if stmt is not None and self.aborted and stmt.effect not in _ABORTED_OK:
                batch.error = _aborted()
                return
            end = None
            if stmt is not None:
                err = await self.gw.take_use(self._claims())
                if err is not None:
                    self._record_refusal([stmt], err, time.perf_counter())
                    batch.error = err
                    return
                end = await self.held([stmt])
                if end is not None and end.error is not None:
                    p = _Pending(stmt, time.perf_counter(), approval_id=end.approval_id)
                    self.write_record(stmt, end.decision, end.error.code, p)
                    batch.error = end.error
                    batch.token_close = True if end.close else None
                    return
            batch.executes.append((stmt, end.approval_id if end is not None else None))

    # -- records ------------------------------------------------------------------------------

    def _record_refusal(self, stmts: Sequence[Statement], err: JitgateError, started: float) -> None:
        if not stmts:
            self.write_record(None, Decision.BLOCKED, err.code, _Pending(None, started))
            return
        for s in stmts:
            self.write_record(s, Decision.BLOCKED, err.code, _Pending(s, started))

    def write_record(self, stmt: Statement | None, decision: Decision, error: str | None, p: _Pending) -> None:
        claims, conn = self.claims, self.conn
        if decision == Decision.ALLOWED and p.approval_id is not None:
            decision = Decision.APPROVED  # held, approved, run (its findings, if any, are listed too)
        elif decision == Decision.ALLOWED and p.findings:
            decision = Decision.MASKED
        self.seq += 1
        flow_id = f"pg-{self.id}-{self.seq}"
        now = self.gw._clock()
        latency = max(0.0, time.perf_counter() - p.started) * 1000
        peer = f"{self.peer[0]}:{self.peer[1]}" if isinstance(self.peer, tuple) else None
        record = SessionRecord(
            record_id=record_id(self.gw.gateway, flow_id),
            ts=iso_ts(now - latency / 1000),
            gateway=self.gw.gateway,
            flow_id=flow_id,
            jti=claims.jti if claims else None,
            sub=claims.sub if claims else None,
            conn=claims.conn if claims else None,
            job=claims.job if claims else None,
            apv=claims.apv if claims else None,
            token_sha256=self.token_sha256 or None,
            client=peer,
            method="SQL",
            host=conn.upstream_host if conn else "",
            path=f"/{conn.database}" if conn else "/",
            operation=_operation(stmt),
            collection=stmt.tables[0] if stmt and stmt.tables else None,
            status=403 if decision == Decision.BLOCKED else 200,
            response_bytes=p.bytes,
            request_bytes=len(stmt.normalized) if stmt else 0,
            latency_ms=round(latency, 3),
            decision=str(decision),
            error=error,
            db_user=escape_text(self.user) or None,
            tables=stmt.tables if stmt else (),
            columns=stmt.columns if stmt else (),
            statement=stmt.normalized if stmt else None,
            statement_fingerprint=stmt.fingerprint or None if stmt else None,
            rows=p.rows,
            findings=tuple(p.findings),
            column_findings=p.column_findings(),
            approval_id=p.approval_id,
        )
        self.gw.record(record)


def _sqlstate(err: JitgateError) -> str:
    return pgwire.SQLSTATE_ABORTED if isinstance(err, InFailedTransaction) else pgwire.SQLSTATE_REFUSED


def _operation(stmt: Statement | None) -> str | None:
    if stmt is None:
        return None
    return stmt.kind if stmt.kind != SESSION else (stmt.effect or SESSION).split(":", 1)[0]


def _aborted() -> InFailedTransaction:
    return InFailedTransaction("current transaction is aborted, commands ignored until end of transaction block")
