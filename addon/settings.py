"""Options every jitgate addon shares: the policy file, the DynamoDB table and the AWS endpoint.

Each addon calls `add_shared_options(loader)` from its own `load()`; mitmproxy accepts the same
option registered twice with the same signature, so any subset of the chain runs on its own.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import boto3
from mitmproxy import exceptions
from mitmproxy.addonmanager import Loader

from jitgate.errors import PolicyError
from jitgate.policy import Policy, load_policy

SHARED = frozenset({"jitgate_policy", "jitgate_table", "jitgate_aws_endpoint", "jitgate_aws_region"})


def add_shared_options(loader: Loader) -> None:
    loader.add_option("jitgate_policy", str, "", "Path of the jitgate policy YAML (the same file the broker reads).")
    loader.add_option("jitgate_table", str, "", "DynamoDB table shared with the broker (revocations, usage counters).")
    loader.add_option(
        "jitgate_aws_endpoint", str, "", "AWS endpoint URL for local use (a moto server); empty means AWS itself."
    )
    loader.add_option("jitgate_aws_region", str, "", "AWS region; empty means AWS_REGION / AWS_DEFAULT_REGION.")


def options_error(message: str) -> exceptions.OptionsError:
    """The error mitmproxy shows when an option is bad; it stops `mitmdump` at start."""
    return exceptions.OptionsError(message)  # type: ignore[no-untyped-call]


@lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int) -> Policy:
    return load_policy(path)


def policy_from(path: str) -> Policy:
    """The validated policy at `path`; a missing or bad file is an OptionsError that stops the start."""
    if not path:
        raise options_error("jitgate_policy is required: the path of the policy YAML")
    try:
        mtime = Path(path).stat().st_mtime_ns
    except OSError as exc:
        raise options_error(f"jitgate_policy: cannot read {path}: {exc.strerror}") from None
    try:
        return _load(path, mtime)
    except PolicyError as exc:
        raise options_error(f"jitgate_policy: {exc.message}") from None


def region(value: str) -> str:
    return value or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def aws_client(service: str, *, endpoint: str, region_name: str) -> Any:
    """A boto3 client for `service`, pointed at `endpoint` when one is set (local moto server)."""
    return boto3.client(service, endpoint_url=endpoint or None, region_name=region(region_name))  # type: ignore[call-overload]
