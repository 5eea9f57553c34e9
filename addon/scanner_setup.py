"""leak_guard's scanner and mitmproxy's body limit, set from the options (not an addon of the chain).

The mask key comes from Secrets Manager; without one, tags correlate only within this process.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from mitmproxy import ctx
from mitmproxy.utils import human

from addon import settings
from jitgate.inspect import Scanner

logger = logging.getLogger(__name__)


def bound_body_size(opts: Any, max_bytes: int) -> None:
    """A body refused in `requestheaders` is still read into memory whole by mitmproxy; past
    twice the limit mitmproxy itself refuses it (413) before reading it, so memory stays bounded."""
    bound = 2 * max_bytes
    has_limit = "body_size_limit" in opts  # absent when leak_guard runs without mitmproxy's own
    current = human.parse_size(opts.body_size_limit) if has_limit and opts.body_size_limit else None
    if has_limit and (current is None or current > bound):
        ctx.options.update(body_size_limit=str(bound))  # type: ignore[no-untyped-call]


def build_scanner(aws: settings.AwsClients, s: settings.LeakGuardSettings) -> Scanner:
    """The scanner for these settings; a bad engine or phone region stops the start."""
    try:
        return Scanner(mask_key(aws, s.mask_key_secret), engine=s.engine, phone_regions=list(s.phone_regions) or None)
    except RuntimeError as exc:  # hyperscan asked for but missing
        raise settings.options_error(f"jitgate_inspect_engine: {exc}") from None
    except ValueError as exc:  # a region phonenumbers does not know
        raise settings.options_error(f"jitgate_pii_phone_regions: {exc}") from None


def mask_key(aws: settings.AwsClients, secret_id: str) -> bytes:
    if not secret_id:
        logger.warning("jitgate: no jitgate_mask_key_secret; masking tags correlate only within this process")
        return secrets.token_bytes(32)
    client = aws.client("secretsmanager", ctx.options)
    try:
        value = client.get_secret_value(SecretId=secret_id).get("SecretString") or ""
    except Exception as exc:
        msg = f"jitgate_mask_key_secret: cannot read the key ({type(exc).__name__})"
        raise settings.options_error(msg) from None
    if len(value) < 16:
        raise settings.options_error("jitgate_mask_key_secret: the key must be at least 16 characters")
    return value.encode()
