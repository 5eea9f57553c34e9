"""What /healthz and /readyz report about this worker, read from the chain's addons (not an addon
of the chain; the rules are jitgate/metrics.py's): the revocation list and JWKS of token_gate, the
secrets credential_inject holds, the holds of approval_hold, the spool of session_recorder. The
addons are read, never changed, and reached only through the objects the entry file hands in.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Any

from addon import settings
from jitgate import metrics


def snapshot(*, gate: Any, inject: Any, hold: Any, recorder: Any, policy: str) -> metrics.Snapshot:
    now_mono, now = time.monotonic(), time.time()
    revocations = getattr(gate, "revocations", None)
    refreshed = getattr(revocations, "refreshed_at", -math.inf)
    staleness = getattr(revocations, "staleness", 0.0)
    verifier = getattr(gate, "verifier", None)
    keys_ok = bool(verifier.keys_loaded) if verifier is not None else False
    keys_at = now_mono - verifier.keys_age() if verifier is not None and keys_ok else -math.inf
    secrets = getattr(inject, "secrets", None)
    secret_age = secrets.memo.oldest_age() if secrets is not None else 0.0
    spool = getattr(recorder, "spool", None)
    uploader = getattr(recorder, "uploader", None)
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
        held=len(getattr(hold, "held", {}) or {}),
        ship_failures=int(getattr(uploader, "put_failures", 0)),
        policy_current=settings.POLICIES.trouble(policy) is None,
    )
