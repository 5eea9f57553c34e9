"""Write token events to the audit bucket, one JSON Lines object per event (jitgate/events.py)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from jitgate.errors import AuditUnavailable
from jitgate.events import TokenEvent, object_key


class EventSink:
    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    def write(self, event: TokenEvent) -> str:
        """Store `event`; raise AuditUnavailable if it cannot be, so issuance fails closed."""
        key = object_key(event)
        try:
            self._s3.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=event.line().encode(),
                ContentType="application/x-ndjson",
            )
        except (ClientError, BotoCoreError):
            raise AuditUnavailable("the audit log cannot be written right now") from None
        return key
