"""Options every jitgate addon shares: the policy file, the DynamoDB table and the AWS endpoint.

Each addon calls `add_shared_options(loader)` from its own `load()`; mitmproxy accepts the same
option registered twice with the same signature, so any subset of the chain runs on its own.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from mitmproxy import exceptions
from mitmproxy.addonmanager import Loader

from jitgate.errors import PolicyError
from jitgate.policy import Policy
from jitgate.policy_source import S3_SCHEME, PolicySource

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


def _s3_for_policy() -> Any:
    from mitmproxy import ctx

    opts = ctx.options
    return aws_client(
        "s3",
        endpoint=getattr(opts, "jitgate_aws_endpoint", "") or "",
        region_name=getattr(opts, "jitgate_aws_region", "") or "",
    )


# One per process: every addon runs on the same policy, and addon/policy_refresh.py replaces it.
POLICIES = PolicySource(_s3_for_policy)


def policy_from(location: str) -> Policy:
    """The policy in use at `location` (a file or s3://bucket/key); a file that changed is read again.

    Missing, unreadable or invalid: an OptionsError, which stops the start (or refuses the option
    change). Changes while running are picked up by addon/policy_refresh.py, which keeps the last
    good policy when a new version is bad.
    """
    if not location:
        raise options_error("jitgate_policy is required: the policy YAML, a file or s3://bucket/key")
    try:
        if not location.startswith(S3_SCHEME):
            POLICIES.refresh(location)  # a stat: an edited file is read at the next configure
        return POLICIES.current(location).policy
    except PolicyError as exc:
        raise options_error(f"jitgate_policy: {exc.message}") from None


def region(value: str) -> str:
    return value or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def aws_client(service: str, *, endpoint: str, region_name: str) -> Any:
    """A boto3 client for `service`, pointed at `endpoint` when one is set (local moto server)."""
    return boto3.client(service, endpoint_url=endpoint or None, region_name=region(region_name))  # type: ignore[call-overload]
