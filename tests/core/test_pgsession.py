"""jitgate.pgsession: the identity settings (startup options, escaped as the server splits them) and cancel keys."""

from __future__ import annotations

import secrets

import pytest

from jitgate import pgsession
from jitgate.errors import SessionSettingsInvalid


def test_identity_settings_name_the_token_and_join_its_groups() -> None:
    got = pgsession.identity_settings(sub="s", job=None, connection="pg-dev", groups=["a", "b,c", "", "d"])
    assert got == {"jitgate.sub": "s", "jitgate.job": "", "jitgate.connection": "pg-dev", "jitgate.groups": "a,d"}


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("plain", "plain"),
        ("two words", "two\\ words"),
        ("back\\slash", "back\\\\slash"),
        ("tab\there -c role=postgres", "tab\\\there\\ -c\\ role=postgres"),
        ("", ""),
    ],
)
def test_startup_options_escape_what_the_server_would_split_on(value: str, written: str) -> None:
    assert pgsession.startup_options({"jitgate.sub": value}) == f"-c jitgate.sub={written}"


def test_startup_options_refuse_a_nul_and_a_packet_too_long() -> None:
    with pytest.raises(SessionSettingsInvalid):
        pgsession.startup_options({"jitgate.sub": "a\0b"})
    with pytest.raises(SessionSettingsInvalid):
        pgsession.startup_options({"jitgate.groups": "g" * pgsession.MAX_OPTIONS})


@pytest.mark.parametrize("name", ["jitgate.sub", "JITGATE.SUB", "Jitgate.groups", "jitgate.anything"])
def test_identity_setting_names_fold_case(name: str) -> None:
    assert pgsession.is_identity_setting(name)
    assert not pgsession.is_identity_setting("jitgate_sub")


def test_cancel_keys_name_live_sessions_only() -> None:
    keys: pgsession.CancelKeys[str] = pgsession.CancelKeys()
    a, b = keys.issue("a"), keys.issue("b")
    assert len(a) == 8 and a != b and a[:4] != b"\0\0\0\0"
    assert keys.find(a) == "a" and keys.find(b) == "b"
    assert keys.find(a[:4] + bytes(x ^ 1 for x in a[4:])) is None  # the right process id, a wrong secret
    assert keys.find(secrets.token_bytes(8)) is None and keys.find(a + b"x") is None and keys.find(b"") is None
    keys.forget(a)
    assert keys.find(a) is None and keys.find(b) == "b" and len(keys) == 1


def test_cancel_request_carries_the_servers_key() -> None:
    key = secrets.token_bytes(8)
    assert pgsession.cancel_request(key) == b"\x00\x00\x00\x10\x04\xd2\x16\x2e" + key
