"""What /healthz and /readyz report about this worker (not an addon of the chain; the rules are
jitgate/metrics.py's), read from the parts the addons publish on one `WorkerParts` board: the
revocation list and JWKS verifier of token_gate, the secrets credential_inject holds, the holds of
approval_hold, the spool and uploader of session_recorder. The entry file makes the board and hands
it to every addon: the owner of a part writes it there, metrics and gateway_probe only read it, so
no addon is handed another addon or reads its attributes.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from addon import settings
from jitgate import metrics

if TYPE_CHECKING:
    from addon.revocations import RevocationList
    from jitgate.credentials import SecretSource
    from jitgate.inspect.scanner import Scanner
    from jitgate.spool import Spool, Uploader
    from jitgate.token_intake import TokenVerifier


@dataclass
class WorkerParts:
    """The worker's shared parts, each written by the one addon that owns it (None: not built, or
    that addon is not in the chain). Read by the metrics thread: each field is replaced whole."""

    verifier: TokenVerifier | None = None  # token_gate
    revocations: RevocationList | None = None  # token_gate
    secrets: SecretSource | None = None  # credential_inject
    held: dict[str, Any] | None = None  # approval_hold: hold id -> held flow
    spool: Spool | None = None  # session_recorder
    uploader: Uploader | None = None  # session_recorder
    scanner: Scanner | None = None  # leak_guard: pg_listener masks with it (the same mask key, the same tags)


def publish(parts: WorkerParts | None, **owned: Any) -> None:
    """An owner puts its parts on the board (no board: an addon tested alone, nothing to do)."""
    for name, value in owned.items():
        if parts is not None:
            setattr(parts, name, value)


def snapshot(parts: WorkerParts, *, policy: str) -> metrics.Snapshot:
    now_mono, now = time.monotonic(), time.time()
    revocations = parts.revocations
    refreshed = revocations.refreshed_at if revocations is not None else -math.inf
    staleness = revocations.staleness if revocations is not None else 0.0
    verifier = parts.verifier
    keys_ok = bool(verifier.keys_loaded) if verifier is not None else False
    keys_at = now_mono - verifier.keys_age() if verifier is not None and keys_ok else -math.inf
    secrets = parts.secrets
    secret_age = secrets.memo.oldest_age() if secrets is not None else 0.0
    spool, uploader = parts.spool, parts.uploader
    segments: list[float] = []
    used = 0
    writable = False
    if spool is not None:
        for path in spool.closed_segments():
            with contextlib.suppress(OSError):  # shipped meanwhile
                segments.append(path.stat().st_mtime)
        used = spool.used_bytes
        writable = not spool.failing and os.access(spool.config.directory, os.W_OK)
    return metrics.Snapshot(
        revocation_age=metrics.age(now_mono, refreshed),
        revocation_staleness=staleness,
        jwks_loaded=keys_ok,
        jwks_age=metrics.age(now_mono, keys_at),
        secret_cache_age=max(0.0, secret_age),
        spool_writable=writable,
        spool_segments=len(segments),
        spool_bytes=used,
        spool_oldest_age=metrics.oldest_age(now, segments),
        held=len(parts.held or {}),
        ship_failures=uploader.put_failures if uploader is not None else 0,
        policy_current=settings.POLICIES.trouble(policy) is None,
    )
