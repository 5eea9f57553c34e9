"""The gateway's AWS permissions against the calls it really makes.

A real gateway (the whole chain) runs with tests/e2e/aws_calls/sitecustomize.py on its path, which
writes down every AWS call botocore makes (service, operation, DynamoDB partition keys). The
gateway serves a rerank (usage counter, upstream secret), holds one for approval until the hold
times out (hold items, revocation check) and refreshes revocations. Then each DynamoDB call must be
allowed by a statement of the task role (infra/gateway/gateway.yaml) and of GatewayAccessPolicy
(template.yaml) whose `dynamodb:LeadingKeys` condition matches its keys, every DynamoDB grant must
be used by some call (nothing granted beyond what the code does), and no statement lets the
gateway write an `approval`, `revocation` or `token` item.
"""

from __future__ import annotations

import fnmatch
import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from cfnlint.decode import decode

from jitgate.devstack.aws import Stack
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import ADMIN_GROUP, policy_dict, secret_id
from jitgate.devstack.upstream import Upstream
from tests.e2e.test_approvals_e2e import Background, _cli, _oidc, _wait_for_hold
from tests.reliability.harness import DOCS, client, full_gateway, rerank, wait_for

REPO = Path(__file__).resolve().parents[2]
RECORDER = Path(__file__).resolve().parent / "aws_calls"
WRITES = {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"}


def _dynamodb_statements(path: Path, where: list[str]) -> list[dict[str, Any]]:
    tpl, matches = decode(str(path))
    assert not matches and tpl is not None
    node: Any = tpl["Resources"]
    for key in where:
        node = node[key]
    out = []
    for st in node:
        st = st["Fn::If"][1] if "Fn::If" in st else st  # a conditional statement: as when it is on
        actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
        if any(a.startswith("dynamodb:") for a in actions):
            out.append(st)
    return out


def _grants(st: dict[str, Any]) -> tuple[set[str], list[str]]:
    actions = {st["Action"]} if isinstance(st["Action"], str) else set(st["Action"])
    [(_op, cond)] = st["Condition"].items()  # exactly one condition: the leading keys
    assert _op in ("ForAllValues:StringEquals", "ForAllValues:StringLike"), st
    return actions, list(cond["dynamodb:LeadingKeys"])


TEMPLATES = {
    "gateway.yaml TaskRole": (REPO / "infra" / "gateway" / "gateway.yaml",
                              ["TaskRole", "Properties", "Policies", 0, "PolicyDocument", "Statement"]),
    "template.yaml GatewayAccessPolicy": (REPO / "template.yaml",
                                          ["GatewayAccessPolicy", "Properties", "PolicyDocument", "Statement"]),
}


@pytest.fixture(scope="module")
def calls(
    tmp_path_factory: pytest.TempPathFactory, oidc_issuer: OidcIssuer, broker: str, aws_stack: Stack,
    moto_server: str, mint: Callable[..., dict[str, Any]],
) -> Iterator[list[dict[str, Any]]]:
    work = tmp_path_factory.mktemp("aws-calls")
    record = work / "calls.jsonl"
    bucket = "jitgate-calls-" + secrets.token_hex(4)  # the session's audit bucket is other tests' to query
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket=bucket)
    with Upstream(api_keys=[aws_stack.secrets[secret_id("cohere-test")]]) as up:
        doc: Any = policy_dict(oidc_issuer.url, upstreams={"cohere-test": up.url})
        doc["connections"]["cohere-test"]["approval"] = {"max_documents": len(DOCS) - 1}  # a full rerank is held
        policy = work / "policy.yaml"
        policy.write_text(yaml.safe_dump(doc, sort_keys=False))
        gw = full_gateway(
            work, policy=policy, upstream=up, broker=broker, stack=aws_stack, moto=moto_server,
            gateway_id="calls-" + secrets.token_hex(3),
            aws_env={"AWS_ENDPOINT_URL": moto_server, "PYTHONPATH": str(RECORDER), "JITGATE_AWS_CALLS": str(record)},
            jitgate_approval_timeout="8", jitgate_approval_poll="0.3", jitgate_bucket=bucket,
        )
        with gw:
            bundle = gw.client_bundle(work / "bundle.pem")
            token = mint("cohere-test")["token"]
            with client(gw, bundle, token) as c:
                body = {"model": "rerank-v3.5", "query": "q", "documents": DOCS[:1]}
                small = c.post(f"{up.url}/v2/rerank", json=body, headers={"Authorization": "Bearer placeholder"})
                assert small.status_code == 200, small.text
                timed_out = rerank(c, up)
            assert (timed_out.status_code, timed_out.json()["code"]) == (403, "approval_timeout"), timed_out.text
            # A hold approved: the revocation check before resuming, the hold closed.
            minted = mint("cohere-test")
            with client(gw, bundle, minted["token"]) as c:
                call = Background(lambda: rerank(c, up))
                admin = _oidc(oidc_issuer, "sec-oncall", ADMIN_GROUP)
                hold = _wait_for_hold(broker, admin, minted["jti"])
                assert _cli(broker, admin, "approvals", "approve", hold["id"], "--reason", "ok").exit_code == 0
                assert call.result().status_code == 200
            assert wait_for(lambda: record.exists() and "Query" in record.read_text(), 10)
        yield [json.loads(line) for line in record.read_text().splitlines()]


def _allowed(call: dict[str, Any], statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    action = "dynamodb:" + call["operation"]
    out = []
    for st in statements:
        actions, keys = _grants(st)
        matched = all(any(fnmatch.fnmatchcase(pk, k) for k in keys) for pk in call["pks"])
        if action in actions and call["pks"] and matched:
            out.append(st)
    return out


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_every_dynamodb_call_is_allowed_and_every_grant_is_used(name: str, calls: list[dict[str, Any]]) -> None:
    path, where = TEMPLATES[name]
    statements = _dynamodb_statements(path, where)
    dynamo = [c for c in calls if c["service"] == "dynamodb"]
    assert {c["operation"] for c in dynamo} >= {"Query", "BatchGetItem", "PutItem", "UpdateItem"}, dynamo
    assert [c for c in dynamo if not _allowed(c, statements)] == []
    for st in statements:
        actions, keys = _grants(st)
        for action in actions:
            for key in keys:
                used = [c for c in dynamo if "dynamodb:" + c["operation"] == action
                        and any(fnmatch.fnmatchcase(pk, key) for pk in c["pks"])]
                assert used, f"{st['Sid']}: {action} on {key} is granted but the gateway never does it"


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_no_statement_lets_the_gateway_write_approvals_revocations_or_token_owners(name: str) -> None:
    path, where = TEMPLATES[name]
    for st in _dynamodb_statements(path, where):
        actions, keys = _grants(st)
        if actions & WRITES:
            for forbidden in ("approval", "revocation", "token"):
                assert not any(fnmatch.fnmatchcase(forbidden, k) for k in keys), st
