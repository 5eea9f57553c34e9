"""`jitgate run`'s environment for clients beyond Python, and `key_env` as a list (issue 25, items 2, 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from jitgate.client import Minted
from jitgate.devstack.policy import policy_dict
from jitgate.errors import PolicyError
from jitgate.policy import load_policy
from jitgate.run import JobEnv, job_environment

EXAMPLE = Path(__file__).resolve().parents[2] / "infra" / "policy.example.yaml"


def _minted(**over: object) -> Minted:
    data: dict[str, object] = {"token": "h.p.s", "jti": "j" * 32, "expires_at": 1, "connection": "c"}
    return Minted.from_json({**data, **over})


def test_node_and_no_proxy_variables(tmp_path: Path) -> None:
    env = job_environment(
        {"NO_PROXY": "api.cohere.com,.internal", "no_proxy": "*"},
        _minted(),
        JobEnv("127.0.0.1:8080", tmp_path / "ca.pem", None, "https://broker.example.test:8443/prefix"),
    )
    assert env["NODE_EXTRA_CA_CERTS"] == str(tmp_path / "ca.pem") == env["SSL_CERT_FILE"]
    assert env["NODE_USE_ENV_PROXY"] == "1"
    assert env["NO_PROXY"] == env["no_proxy"] == "localhost,127.0.0.1,::1,broker.example.test"
    assert env["HTTPS_PROXY"] == env["https_proxy"] == "http://jit:h.p.s@127.0.0.1:8080"


def test_a_store_on_loopback_is_not_in_no_proxy(tmp_path: Path) -> None:
    """A Chroma connection whose upstream is on loopback (the dev stack): its client points at
    CHROMA_HOST, so loopback must not go direct or the client would skip the gateway."""
    minted = _minted(dialect="chroma", upstream="http://127.0.0.1:8123")
    env = job_environment({}, minted, JobEnv("127.0.0.1:8080", tmp_path / "ca.pem", None, "http://127.0.0.1:9000"))
    assert env["CHROMA_HOST"] == "127.0.0.1"
    assert env["NO_PROXY"] == env["no_proxy"] == ""
    remote = _minted(dialect="chroma", upstream="https://chroma.internal:8000")
    env = job_environment({}, remote, JobEnv("127.0.0.1:8080", tmp_path / "ca.pem", None, None))
    assert env["NO_PROXY"] == "localhost,127.0.0.1,::1"


def test_every_key_variable_carries_the_token(tmp_path: Path) -> None:
    env = job_environment({}, _minted(), JobEnv("g:1", tmp_path / "ca.pem", ("CO_API_KEY", "COHERE_API_KEY")))
    assert env["CO_API_KEY"] == env["COHERE_API_KEY"] == "h.p.s"
    assert job_environment({}, _minted(), JobEnv("g:1", tmp_path / "ca.pem", "CO_API_KEY"))["CO_API_KEY"] == "h.p.s"


@pytest.mark.parametrize(
    ("answer", "names"),
    [
        ({"key_env": "CO_API_KEY", "key_envs": ["CO_API_KEY", "COHERE_API_KEY"]}, ("CO_API_KEY", "COHERE_API_KEY")),
        ({"key_env": "CO_API_KEY"}, ("CO_API_KEY",)),  # an older broker
        ({"key_env": None}, ()),
        ({}, ()),
    ],
)
def test_client_reads_old_and_new_broker_answers(answer: dict[str, object], names: tuple[str, ...]) -> None:
    assert _minted(**answer).key_env == names


def _policy(tmp_path: Path, key_env: object) -> Path:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["connections"]["cohere-prod"]["key_env"] = key_env
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    ("key_env", "names"),
    [("CO_API_KEY", ("CO_API_KEY",)), (["CO_API_KEY", "COHERE_API_KEY"], ("CO_API_KEY", "COHERE_API_KEY")), ([], ())],
)
def test_policy_key_env_is_a_name_or_a_list(tmp_path: Path, key_env: object, names: tuple[str, ...]) -> None:
    assert load_policy(_policy(tmp_path, key_env)).connections["cohere-prod"].key_env == names


@pytest.mark.parametrize("key_env", ["CO API KEY", ["CO_API_KEY", "1BAD"], 7, {"a": 1}])
def test_policy_key_env_refuses_what_is_no_variable_name(tmp_path: Path, key_env: object) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(_policy(tmp_path, key_env))
    assert "key_env" in info.value.message


def test_dev_and_example_policies_name_both_cohere_variables(tmp_path: Path) -> None:
    example = load_policy(EXAMPLE).connections["cohere-prod"]
    assert example.key_env == ("CO_API_KEY", "COHERE_API_KEY")
    path = tmp_path / "dev.yaml"
    path.write_text(yaml.safe_dump(policy_dict("https://issuer.example.test")))
    dev = load_policy(path).connections
    assert {c.key_env for c in dev.values() if c.dialect == "cohere"} == {("CO_API_KEY", "COHERE_API_KEY")}


@pytest.mark.parametrize(
    ("gateway", "proxy"),
    [
        ("gw.internal:8080", "http://jit:h.p.s@gw.internal:8080"),
        ("http://gw.internal:8080", "http://jit:h.p.s@gw.internal:8080"),
        ("https://gw.internal:8080", "https://jit:h.p.s@gw.internal:8080"),  # TLS to the gateway
    ],
)
def test_the_gateway_scheme_picks_the_proxy_scheme(tmp_path: Path, gateway: str, proxy: str) -> None:
    env = job_environment({}, _minted(), JobEnv(gateway, tmp_path / "ca.pem", None))
    assert {env[n] for n in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")} == {proxy}


def test_a_gateway_of_another_scheme_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="https://host:port"):
        job_environment({}, _minted(), JobEnv("socks5://gw.internal:1080", tmp_path / "ca.pem", None))
