"""The session recorder's spool and uploader, built from its settings (not an addon of the chain;
the spool and the uploader are jitgate/spool.py's).

The spool must take files at start, and so must the durable spool: a stop is too late to find out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from botocore.config import Config as BotoConfig

from addon import settings
from jitgate.spool import Spool, SpoolConfig, Uploader, check_durable

logger = logging.getLogger(__name__)


def spool_config(s: settings.SessionRecorderSettings) -> SpoolConfig:
    return SpoolConfig(
        directory=s.directory,
        gateway=s.gateway,
        max_segment_bytes=s.segment_bytes,
        max_segment_age=s.segment_seconds,
        fsync_interval=s.fsync_seconds,
        max_bytes=s.spool_max_bytes,
        # A record holds two capped bodies, the query and its lists: hold room for the worst case.
        probe_bytes=4 * s.body_cap + 64 * 1024,
    )


def start_spool(config: SpoolConfig, s: settings.SessionRecorderSettings, clock: Any) -> Spool:
    """The started spool; a directory (or durable spool) that cannot take files stops the start."""
    spool = Spool(config, clock=clock)
    try:
        spool.start()
    except OSError as exc:
        raise settings.options_error(f"jitgate_spool_dir: cannot use {s.directory}: {exc.strerror}") from None
    if s.durable is not None:
        try:
            check_durable(s.durable)
        except OSError as exc:
            spool.release()
            raise settings.options_error(
                f"jitgate_durable_spool: cannot use {s.durable}: {exc.strerror}"
            ) from None
    return spool


Put = Callable[[str, bytes], None]


def start_uploader(spool: Spool, s: settings.SessionRecorderSettings, put: Put | None) -> Uploader:
    uploader = Uploader(
        spool,
        put,
        prefix=s.prefix,
        backoff_base=min(0.5, s.backoff_max_seconds),
        backoff_max=s.backoff_max_seconds,
        durable=s.durable,
    )
    uploader.start()  # ships leftovers of a previous run first, then what the durable spool holds
    return uploader


def put_fn(aws: settings.AwsClients, s3: Any, opts: Any, bucket: str) -> Put | None:
    if not bucket:
        logger.warning("jitgate_bucket is empty: session records stay in the spool")
        return None
    # Short timeouts and few SDK retries: the uploader has its own backoff, and a black-holed
    # endpoint must not pin the thread (or the shutdown) for minutes.
    s3 = s3 or aws.client(
        "s3", opts,
        config=BotoConfig(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"}),
    )

    def put(key: str, body: bytes) -> None:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/x-ndjson")

    return put
