from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "gateway" / "gateway.yaml"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    tpl, matches = decode(str(TEMPLATE))
    assert not matches, matches
    assert tpl is not None
    return tpl


def test_cfn_lint_passes() -> None:
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    proc = subprocess.run([str(cfn_lint), str(TEMPLATE)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    role = template["Resources"]["TaskRole"]["Properties"]
    return [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]


def test_task_role_is_least_privilege(template: dict[str, Any]) -> None:
    statements = _statements(template)
    for st in statements:
        assert st["Resource"] != "*", st
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        assert all("*" not in a for a in actions), st
    by_sid = {s["Sid"]: s for s in statements}
    assert by_sid["ReadPolicySecretsOnly"]["Resource"] == {"Ref": "PolicySecretArns"}
    assert by_sid["RevocationsApprovalsCounters"]["Resource"] == {"Ref": "TableArn"}
    s3 = by_sid["ShipSessionsOnly"]
    assert s3["Action"] == "s3:PutObject"
    assert str(s3["Resource"]["Fn::Sub"]).endswith("/sessions/*")


def test_fleet_scales_on_cpu_behind_nlb(template: dict[str, Any]) -> None:
    res = template["Resources"]
    assert res["LoadBalancer"]["Properties"]["Type"] == "network"
    scaling = res["CpuScaling"]["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    assert scaling["PredefinedMetricSpecification"]["PredefinedMetricType"] == "ECSServiceAverageCPUUtilization"
    assert res["Service"]["Properties"]["LaunchType"] == "FARGATE"
    container = res["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    assert any(m["ContainerPath"].endswith("/spool") for m in container["MountPoints"])


def test_container_runs_the_addon_chain() -> None:
    text = (ROOT / "infra" / "gateway" / "Dockerfile").read_text()
    assert "addon/jitgate_addons.py" in text
    assert "connection_strategy=lazy" in text
    assert "USER jitgate" in text


def test_load_balancer_checks_readyz_on_the_metrics_port(template: dict[str, Any]) -> None:
    res = template["Resources"]
    tg = res["TargetGroup"]["Properties"]
    assert (tg["HealthCheckProtocol"], tg["HealthCheckPort"], tg["HealthCheckPath"]) == ("HTTP", "9090", "/readyz")
    container = res["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    assert {m["ContainerPort"] for m in container["PortMappings"]} == {8080, 9090}
    command = container["Command"]
    assert "jitgate_metrics_port=9090" in command and "jitgate_metrics_host=0.0.0.0" in command
    ingress = res["TaskSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert any(rule["FromPort"] == 9090 for rule in ingress)
    assert "EXPOSE 9090" in (ROOT / "infra" / "gateway" / "Dockerfile").read_text()
    unit = (ROOT / "infra" / "gateway" / "jitgate-gateway.service").read_text()
    assert "jitgate_metrics_port=9090" in unit
