"""jitgate.gateway_ca: the fleet CA written into mitmproxy's confdir, checked before it is."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from moto import mock_aws

from jitgate.errors import CaInvalid, CaUnavailable
from jitgate.gateway_ca import certificate_pem, fingerprint, install, load_secret, new_ca, store_secret


def test_install_writes_what_mitmproxy_reads_and_keeps_the_key_private(tmp_path: Path) -> None:
    ca = new_ca()
    (tmp_path / "mitmproxy-ca.p12").write_bytes(b"an older CA")
    digest = install(tmp_path, ca)
    assert (tmp_path / "mitmproxy-ca.pem").read_text() == ca
    assert stat.S_IMODE((tmp_path / "mitmproxy-ca.pem").stat().st_mode) == 0o600
    assert digest == fingerprint((tmp_path / "mitmproxy-ca-cert.pem").read_text()) == fingerprint(certificate_pem(ca))
    assert not (tmp_path / "mitmproxy-ca.p12").exists()  # no stale copy of another CA


def test_a_key_of_another_ca_or_a_lone_certificate_is_refused_without_quoting_it(tmp_path: Path) -> None:
    one, other = new_ca(), new_ca()
    key_of_one = one[: one.index("-----BEGIN CERTIFICATE-----")]
    cert_of_other = other[other.index("-----BEGIN CERTIFICATE-----"):]
    for bad in (key_of_one + cert_of_other, cert_of_other, key_of_one, "not a CA"):
        with pytest.raises(CaInvalid) as info:
            install(tmp_path, bad)
        assert "PRIVATE" not in info.value.message and "MII" not in info.value.message
    assert not (tmp_path / "mitmproxy-ca.pem").exists()


@mock_aws
def test_store_then_load_and_rotate() -> None:
    import boto3

    sm = boto3.client("secretsmanager", region_name="us-east-1")
    first, second = new_ca(), new_ca()
    store_secret(sm, "jitgate/ca", first, rotate=False)
    assert load_secret(sm, "jitgate/ca") == first
    with pytest.raises(CaUnavailable):  # no silent replacement of the fleet's CA
        store_secret(sm, "jitgate/ca", second, rotate=False)
    store_secret(sm, "jitgate/ca", second, rotate=True)
    assert load_secret(sm, "jitgate/ca") == second
    with pytest.raises(CaUnavailable):
        load_secret(sm, "jitgate/missing")
