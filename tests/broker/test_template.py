"""template.yaml: linted by cfn-lint and `sam validate --lint`, Glue columns in step with the
models, env vars in step with the broker's settings, and a `sam build` bundle without mitmproxy."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from jitgate.events import glue_columns
from jitgate.records import COLUMNS, PARTITIONS

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!Ref, !Sub, ...) read as plain values."""


def _any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return {suffix: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {suffix: loader.construct_sequence(node, deep=True)}
    return {suffix: loader.construct_mapping(node, deep=True)}  # type: ignore[arg-type]


_CfnLoader.add_multi_constructor("!", _any_tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)
    return loaded


def _table(template: dict[str, Any], name: str) -> dict[str, Any]:
    (table,) = [
        r["Properties"]["TableInput"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Glue::Table" and r["Properties"]["TableInput"]["Name"] == name
    ]
    return table


def _columns(cols: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(c["Name"], c["Type"]) for c in cols]


def test_token_events_table_matches_the_event_model(template: dict[str, Any]) -> None:
    table = _table(template, "token_events")
    assert _columns(table["StorageDescriptor"]["Columns"]) == glue_columns()
    assert _columns(table["PartitionKeys"]) == [("dt", "string")]
    params = table["Parameters"]
    assert params["projection.enabled"] == "true" and params["projection.dt.type"] == "date"
    assert "token-events/dt=${!dt}/" in params["storage.location.template"]["Sub"]


def test_sessions_table_matches_the_record_model(template: dict[str, Any]) -> None:
    table = _table(template, "sessions")
    assert _columns(table["StorageDescriptor"]["Columns"]) == list(COLUMNS)
    assert _columns(table["PartitionKeys"]) == list(PARTITIONS)
    assert "sessions/dt=${!dt}/hour=${!hour}/" in table["Parameters"]["storage.location.template"]["Sub"]


def test_function_env_is_the_shared_interface(template: dict[str, Any]) -> None:
    fn = template["Resources"]["BrokerFunction"]
    env = set(fn["Properties"]["Environment"]["Variables"])
    assert {n for n in env if n.startswith("JITGATE_")} == {
        "JITGATE_POLICY", "JITGATE_ISSUER", "JITGATE_KMS_KEY_IDS", "JITGATE_TABLE", "JITGATE_BUCKET",
        "JITGATE_TOPIC_ARN", "JITGATE_DEFAULT_TTL",
    }
    assert fn["Properties"]["Handler"] == "broker.app.handler"
    assert template["Globals"]["Function"]["Architectures"] == ["arm64"]
    assert fn["Metadata"]["BuildMethod"] == "makefile"


def test_iam_is_least_privilege(template: dict[str, Any]) -> None:
    raw = template["Resources"]["BrokerFunction"]["Properties"]["Policies"][0]["Statement"]
    statements = [s["If"][1] if "If" in s else s for s in raw]  # conditional ones, as when enabled
    actions = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert not any(a.endswith("*") for a in actions)
    (policy_read,) = [s for s in statements if s["Action"] == "s3:GetObject"]
    assert policy_read["Resource"]["Sub"][1]["Object"]["Select"][1]["Split"][1] == {"Ref": "PolicyS3Uri"}
    assert not any(a.startswith("secretsmanager:") for a in actions)  # the broker never reads credentials
    assert "kms:Sign" not in actions  # granted by the key's own policy, to this role only
    gateway = template["Resources"]["GatewayAccessPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    (secrets,) = [s["If"][1] for s in gateway if "If" in s]
    # aws-secretsmanager-caching calls DescribeSecret before GetSecretValue; nothing else, no wildcard.
    assert sorted(secrets["Action"]) == ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"]
    assert secrets["Resource"] == {"Ref": "UpstreamSecretArns"}  # the named secrets only, no wildcard


def test_cfn_lint_passes() -> None:
    lint = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or shutil.which("cfn-lint")
    if lint is None:
        pytest.skip("cfn-lint is not installed (it is in the dev extra)")
    result = subprocess.run([lint, str(TEMPLATE)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def _sam() -> str:
    sam = os.environ.get("JITGATE_SAM") or str(REPO / ".venv-sam" / "bin" / "sam")
    if not Path(sam).is_file():
        pytest.skip(f"SAM CLI not found at {sam} (run `make sam-setup` or set JITGATE_SAM)")
    return sam


def _sam_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(SAM_CLI_TELEMETRY="0", AWS_DEFAULT_REGION="us-east-1", AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing")
    return env


def test_sam_validate_lint_passes() -> None:
    result = subprocess.run(
        [_sam(), "validate", "--lint", "--template", str(TEMPLATE)],
        capture_output=True, text=True, cwd=REPO, env=_sam_env(), timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_sam_build_bundles_core_and_broker_without_mitmproxy(tmp_path: Path) -> None:
    result = subprocess.run(
        [_sam(), "build", "--template", str(TEMPLATE), "--build-dir", str(tmp_path / "build"),
         "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, cwd=REPO, env=_sam_env(), timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    bundle = tmp_path / "build" / "BrokerFunction"
    for needed in ("jitgate/token.py", "jitgate/policy.py", "jitgate/events.py", "broker/app.py",
                   "broker/policy.yaml", "aws_lambda_powertools", "jwt", "pydantic", "yaml", "cryptography"):
        assert (bundle / needed).exists(), needed
    names = {p.name for p in bundle.iterdir()}
    for banned in ("mitmproxy", "moto", "hyperscan", "duckdb", "addon", "tests", ".venv"):
        assert banned not in names, banned
    assert not (bundle / "jitgate" / "devstack").exists()
    assert any(p.name.endswith("aarch64-linux-gnu.so") for p in (bundle / "pydantic_core").iterdir())
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    assert size < 250 * 1024 * 1024  # Lambda's unzipped limit


def test_bundle_imports_on_its_own(tmp_path: Path) -> None:
    """Built for this machine's architecture, the bundle alone (no site-packages) loads the handler."""
    if os.uname().machine != "x86_64":
        pytest.skip("the import check builds an x86_64 bundle")
    bundle = tmp_path / "bundle"
    env = {**os.environ, "JITGATE_BUNDLE_ARCH": "x86_64"}
    build = subprocess.run([str(REPO / "scripts" / "build-broker-bundle"), str(bundle)],
                           capture_output=True, text=True, env=env, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import broker.app, jitgate.policy, broker.deps;"
        "jitgate.policy.load_policy(broker.deps.BUNDLED_POLICY);"
        "assert 'mitmproxy' not in sys.modules; print('ok')"
    )
    run = subprocess.run([sys.executable, "-S", "-c", code, str(bundle)], capture_output=True, text=True,
                         cwd=tmp_path, env={"PATH": os.environ["PATH"]}, timeout=120)
    assert run.stdout.strip() == "ok", run.stderr[-3000:]


def test_every_broker_route_is_an_api_route(template: dict[str, Any]) -> None:
    """Each route the resolver serves is wired in the HTTP API (API Gateway would 404 it otherwise)."""
    from broker.app import app

    served = set()
    for route in app._static_routes + app._dynamic_routes:  # no public listing of routes
        path = re.sub(r"<(\w+)>", r"{\1}", route.path)
        served.add((route.method.upper(), path))
    events = template["Resources"]["BrokerFunction"]["Properties"]["Events"].values()
    wired = {(e["Properties"]["Method"], e["Properties"]["Path"]) for e in events}
    assert served == wired


# boto3 method -> IAM action, for the calls the code makes (`.scan(` is left out: no DynamoDB Scan
# is used, and the name belongs to the inspection scanner and the approval store).
_IAM_ACTIONS = {
    "get_item": "dynamodb:GetItem", "batch_get_item": "dynamodb:BatchGetItem", "put_item": "dynamodb:PutItem",
    "update_item": "dynamodb:UpdateItem", "query": "dynamodb:Query", "delete_item": "dynamodb:DeleteItem",
    "transact_write_items": "dynamodb:TransactWriteItems", "put_object": "s3:PutObject",
    "get_object": "s3:GetObject", "sign": "kms:Sign", "get_public_key": "kms:GetPublicKey",
    "publish": "sns:Publish", "get_secret_value": "secretsmanager:GetSecretValue",
}


def _called_actions(paths: list[Path]) -> set[str]:
    calls = {m for p in paths for m in re.findall(r"\.(\w+)\(", p.read_text())}
    return {_IAM_ACTIONS[c] for c in calls if c in _IAM_ACTIONS}


def _granted(statements: list[Any]) -> set[str]:
    out: set[str] = set()
    for s in statements:
        s = s["If"][1] if "If" in s else s
        out |= {s["Action"]} if isinstance(s["Action"], str) else set(s["Action"])
    return out


def test_broker_role_allows_every_aws_call_the_broker_makes(template: dict[str, Any]) -> None:
    code = [*sorted((REPO / "broker").rglob("*.py")), REPO / "jitgate" / "approval_store.py"]
    code = [p for p in code if p.name != "local.py"]
    granted = _granted(template["Resources"]["BrokerFunction"]["Properties"]["Policies"][0]["Statement"])
    assert _called_actions(code) <= granted | {"kms:Sign", "kms:GetPublicKey"}  # (the key policy's)


def test_gateway_policy_allows_every_aws_call_the_addons_make(template: dict[str, Any]) -> None:
    code = [*sorted((REPO / "addon").rglob("*.py")), REPO / "jitgate" / "approval_store.py"]
    granted = _granted(template["Resources"]["GatewayAccessPolicy"]["Properties"]["PolicyDocument"]["Statement"])
    missing = _called_actions(code) - granted - {"s3:GetObject", "kms:Sign", "kms:GetPublicKey"}
    assert not missing, missing


def test_only_the_broker_role_may_sign_with_the_token_key(template: dict[str, Any]) -> None:
    """A key policy granting the account `kms:*` lets any principal with an account-wide kms:Sign
    mint tokens the gateways accept; the account administers the key but does not use it."""
    statements = template["Resources"]["SigningKey"]["Properties"]["KeyPolicy"]["Statement"]
    signers = []
    for st in statements:
        actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
        assert "kms:*" not in actions and not any(a in ("kms:Sign*", "kms:S*") for a in actions), st
        if any(a == "kms:Sign" for a in actions):
            signers.append(st["Principal"])
    assert signers == [{"AWS": {"GetAtt": "BrokerFunctionRole.Arn"}}]


def test_audit_bucket_has_access_logging_and_an_object_lock_option(template: dict[str, Any]) -> None:
    res = template["Resources"]
    bucket = res["AuditBucket"]["Properties"]
    assert bucket["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": "AuditAccessLogBucket"}
    assert res["AuditAccessLogBucket"]["Type"] == "AWS::S3::Bucket"
    assert template["Conditions"]["HasObjectLock"] == {"Not": [{"Equals": [{"Ref": "AuditObjectLockDays"}, 0]}]}
    lock = bucket["ObjectLockConfiguration"]["If"]
    assert lock[0] == "HasObjectLock"
    assert lock[1]["Rule"]["DefaultRetention"] == {"Mode": "COMPLIANCE", "Days": {"Ref": "AuditObjectLockDays"}}
