"""jitgate.policy_source: a file or an S3 object, re-read on a new version, the last good kept."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from jitgate.devstack.policy import policy_yaml
from jitgate.errors import PolicyError
from jitgate.policy_source import PolicySource

ISSUER = "https://issuer.test"
BAD = "version: 1\nconnections: [not, a, mapping\n"


def _edit(path: Path, text: str) -> None:
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))  # a new mtime even within the clock's tick


def test_a_file_is_read_again_only_when_it_changed_and_a_bad_version_keeps_the_last_good(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    _edit(path, policy_yaml(ISSUER))
    source = PolicySource(lambda: None)
    first = source.current(str(path))
    assert source.refresh(str(path)) is None  # unchanged
    _edit(path, BAD)
    with pytest.raises(PolicyError) as info:
        source.refresh(str(path))
    assert info.value.code == "policy_invalid"
    assert source.current(str(path)) is first
    _edit(path, policy_yaml("https://other-issuer.test"))
    new = source.refresh(str(path))
    assert new is not None and new.policy != first.policy and source.current(str(path)) is new


def test_trouble_says_why_the_newest_version_is_not_in_use_until_a_good_one_is(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    _edit(path, policy_yaml(ISSUER))
    source = PolicySource(lambda: None)
    source.current(str(path))
    assert source.trouble(str(path)) is None
    _edit(path, BAD)
    for _ in range(2):  # every check of the bad version: still trouble
        with pytest.raises(PolicyError):
            source.refresh(str(path))
        trouble = source.trouble(str(path))
        assert trouble is not None and str(path) in trouble
    path.unlink()
    with pytest.raises(PolicyError):
        source.refresh(str(path))
    assert "cannot read policy" in str(source.trouble(str(path)))
    _edit(path, policy_yaml(ISSUER))  # the good text again (a new mtime): the same policy, no trouble
    assert source.refresh(str(path)) is None and source.trouble(str(path)) is None


def test_a_missing_file_or_a_bad_location_is_a_policy_error(tmp_path: Path) -> None:
    source = PolicySource(lambda: None)
    with pytest.raises(PolicyError):
        source.current(str(tmp_path / "missing.yaml"))
    with pytest.raises(PolicyError):
        source.current("s3://bucket-only")


@mock_aws
def test_an_s3_object_is_followed_by_its_etag() -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="policies")
    s3.put_object(Bucket="policies", Key="p.yaml", Body=policy_yaml(ISSUER).encode())
    source = PolicySource(lambda: s3)
    first = source.current("s3://policies/p.yaml")
    assert source.refresh("s3://policies/p.yaml") is None
    s3.put_object(Bucket="policies", Key="p.yaml", Body=BAD.encode())
    with pytest.raises(PolicyError):
        source.refresh("s3://policies/p.yaml")
    assert source.current("s3://policies/p.yaml") is first
    s3.put_object(Bucket="policies", Key="p.yaml", Body=policy_yaml("https://other-issuer.test").encode())
    new = source.refresh("s3://policies/p.yaml")
    assert new is not None and new.version != first.version
    s3.delete_object(Bucket="policies", Key="p.yaml")
    with pytest.raises(PolicyError):  # gone: an error, the last good one stays
        source.refresh("s3://policies/p.yaml")
    assert source.current("s3://policies/p.yaml") is new
