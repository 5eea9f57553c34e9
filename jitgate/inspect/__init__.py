"""Inspection: detect secrets and PII, mask them, decide whether a payload may pass.

Pure code (no mitmproxy, no boto3): `Scanner` finds and masks, `StreamMasker` does it chunk by
chunk, `actions` maps findings to block / mask / allow per masking profile and direction.
"""

from __future__ import annotations

from jitgate.inspect.masking import Hit
from jitgate.inspect.rules import PII_TYPES, SECRET_TYPES
from jitgate.inspect.scanner import Scanner, ScanResult
from jitgate.inspect.stream import StreamMasker

__all__ = ["PII_TYPES", "SECRET_TYPES", "Hit", "ScanResult", "Scanner", "StreamMasker"]
