"""Where the gateway's policy lives: a file or `s3://bucket/key`, read again only when it changed.

`PolicySource.current(location)` is the policy the gateway runs with: loaded once, then replaced
only by `refresh` when the file's (mtime, size) or the object's ETag changed AND the new text is a
valid policy. A bad new version raises PolicyError and leaves the last good one in place (fail
closed: the gateway never runs without a valid policy, and never on one it could not read).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jitgate.errors import PolicyError
from jitgate.policy import Policy, parse_policy

S3_SCHEME = "s3://"


@dataclass(frozen=True)
class Loaded:
    version: str  # file: "<mtime_ns>:<size>"; S3: the object's ETag
    policy: Policy


def split_s3(location: str) -> tuple[str, str]:
    """`s3://bucket/key` as (bucket, key); PolicyError when either is missing."""
    bucket, _, key = location.removeprefix(S3_SCHEME).partition("/")
    if not bucket or not key:
        raise PolicyError(f"{location}: an S3 policy location is s3://bucket/key")
    return bucket, key


class PolicySource:
    """The last good policy of each location (see the module docstring). Thread-safe."""

    def __init__(self, s3: Callable[[], Any]) -> None:
        self._s3_factory = s3
        self._s3: Any = None
        self._loaded: dict[str, Loaded] = {}
        self._trouble: dict[str, str] = {}  # location -> why its newest version is not in use
        self._lock = threading.Lock()

    def _client(self) -> Any:
        if self._s3 is None:
            self._s3 = self._s3_factory()
        return self._s3

    def version(self, location: str) -> str:
        """The version of what is at `location` now, without reading it whole."""
        if location.startswith(S3_SCHEME):
            bucket, key = split_s3(location)
            try:
                head = self._client().head_object(Bucket=bucket, Key=key)
            except Exception as exc:  # botocore's errors: the type only (no response text)
                raise PolicyError(f"{location}: cannot read policy ({type(exc).__name__})") from None
            return str(head.get("ETag", "")).strip('"')
        try:
            st = Path(location).stat()
        except OSError as exc:
            raise PolicyError(f"{location}: cannot read policy: {exc.strerror}") from None
        return f"{st.st_mtime_ns}:{st.st_size}"

    def _read(self, location: str) -> tuple[str, str]:
        """(version, text) read together, so the version is that of the text."""
        if location.startswith(S3_SCHEME):
            bucket, key = split_s3(location)
            try:
                obj = self._client().get_object(Bucket=bucket, Key=key)
                body: bytes = obj["Body"].read()
            except Exception as exc:
                raise PolicyError(f"{location}: cannot read policy ({type(exc).__name__})") from None
            version = str(obj.get("ETag", "")).strip('"')
        else:
            version = self.version(location)
            try:
                body = Path(location).read_bytes()
            except OSError as exc:
                raise PolicyError(f"{location}: cannot read policy: {exc.strerror}") from None
        try:
            return version, body.decode("utf-8")
        except UnicodeDecodeError:
            raise PolicyError(f"{location}: the policy is not UTF-8 text") from None

    def current(self, location: str) -> Loaded:
        """The policy in use for `location`, loaded now if it never was (PolicyError if it cannot be)."""
        with self._lock:
            loaded = self._loaded.get(location)
        return loaded if loaded is not None else self._load(location)

    def refresh(self, location: str) -> Loaded | None:
        """The new policy if `location` changed and is valid; None if unchanged; PolicyError if the
        change is not a valid policy (the last good one stays current; `trouble` says why until a
        refresh finds a good or the same version again)."""
        with self._lock:
            known = self._loaded.get(location)
        try:
            unchanged = known is not None and self.version(location) == known.version
            loaded = None if unchanged else self._load(location)
        except PolicyError as exc:
            with self._lock:
                self._trouble[location] = exc.message
            raise
        with self._lock:
            self._trouble.pop(location, None)
        return None if loaded is None or (known is not None and loaded.policy == known.policy) else loaded

    def trouble(self, location: str) -> str | None:
        """Why the policy at `location` now is not the one in use (the last refresh failed), or None."""
        with self._lock:
            return self._trouble.get(location)

    def _load(self, location: str) -> Loaded:
        version, text = self._read(location)
        loaded = Loaded(version, parse_policy(text, source=location))
        with self._lock:
            self._loaded[location] = loaded
        return loaded
