from __future__ import annotations

import json
import re
import shlex
import shutil
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
    dynamodb = [s for s in statements if "dynamodb" in str(s["Action"])]
    assert dynamodb and all(s["Resource"] == {"Ref": "TableArn"} and "dynamodb:LeadingKeys" in str(s["Condition"])
                            for s in dynamodb)  # which keys: tests/e2e/test_gateway_aws_calls.py
    assert by_sid["ReadMaskKeyAndFleetCa"]["Resource"] == [{"Ref": "MaskKeySecretArn"}, {"Ref": "GatewayCaSecretArn"}]
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


def test_deployment_is_guarded_and_the_task_hardened(template: dict[str, Any]) -> None:
    res = template["Resources"]
    deploy = res["Service"]["Properties"]["DeploymentConfiguration"]
    assert deploy["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    [container] = res["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    assert container["ReadonlyRootFilesystem"] is True
    # The only writable paths: the spool and the confdir, each a volume; the image's TMPDIR is the confdir.
    assert sorted(m["ContainerPath"] for m in container["MountPoints"]) == ["/var/lib/jitgate/ca",
                                                                             "/var/lib/jitgate/spool"]
    assert "ENV TMPDIR=/var/lib/jitgate/ca" in (ROOT / "infra" / "gateway" / "Dockerfile").read_text()
    assert "CMD" in container["HealthCheck"]["Command"]
    # StopTimeout covers the NLB's deregistration delay's aftermath: a 60 s upload plus the drain.
    delay = {a["Key"]: a["Value"] for a in res["TargetGroup"]["Properties"]["TargetGroupAttributes"]}
    assert container["StopTimeout"] == 120 and int(delay["deregistration_delay.timeout_seconds"]) <= 120


def test_client_address_reaches_the_gateway_through_a_guarded_nlb(template: dict[str, Any]) -> None:
    res = template["Resources"]
    attrs = {a["Key"]: a["Value"] for a in res["TargetGroup"]["Properties"]["TargetGroupAttributes"]}
    assert attrs["preserve_client_ip.enabled"] == "true"
    assert res["LoadBalancer"]["Properties"]["SecurityGroups"] == [{"Ref": "LoadBalancerSecurityGroup"}]
    nlb_in = res["LoadBalancerSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert [r["CidrIp"] for r in nlb_in] == [{"Ref": "ClientCidr"}]
    task_in = res["TaskSecurityGroup"]["Properties"]["SecurityGroupIngress"][0]
    assert task_in["SourceSecurityGroupId"] == {"Ref": "LoadBalancerSecurityGroup"}
    egress = res["TaskSecurityGroup"]["Properties"]["SecurityGroupEgress"]
    assert egress[0]["FromPort"] == 443 and egress[1]["Fn::If"][0] == "HasExtraUpstream"
    # Ready for an HTTP /readyz check (issue 22) by one parameter.
    tg = res["TargetGroup"]["Properties"]
    assert tg["HealthCheckPath"]["Fn::If"][:2] == ["HasReadinessPort", "/readyz"]


def test_image_prepares_its_volumes_for_its_user() -> None:
    text = (ROOT / "infra" / "gateway" / "Dockerfile").read_text()
    owned = text.index("install -d -o jitgate -g jitgate")
    assert owned < text.index("\nUSER jitgate") < text.index("\nVOLUME")


def test_image_and_unit_run_jitgate_gateway() -> None:
    """Both start `jitgate gateway`, which becomes mitmdump with GATEWAY_OPTIONS (flow output off)."""
    text = (ROOT / "infra" / "gateway" / "Dockerfile").read_text()
    entry = json.loads(text.split("ENTRYPOINT", 1)[1].replace("\\\n", ""))
    assert entry[:2] == ["jitgate", "gateway"]
    assert "USER jitgate" in text
    unit = (ROOT / "infra" / "gateway" / "jitgate-gateway.service").read_text().replace("\\\n", "")
    [exec_start] = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    assert argv[0].endswith("/jitgate") and argv[1] == "gateway", argv
    for cmd in (entry, argv):
        assert "flow_detail" not in " ".join(cmd) and "mitmdump" not in " ".join(cmd)


def test_every_gateway_argv_turns_flow_output_off() -> None:
    from jitgate.devstack.gateway import mitmdump_argv

    argv = mitmdump_argv(listen_host="0.0.0.0", listen_port=8080, options={"jitgate_policy": "p.yaml"})
    pairs = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert "flow_detail=0" in pairs and "connection_strategy=lazy" in pairs


def test_systemd_unit_is_hardened() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    unit = ROOT / "infra" / "gateway" / "jitgate-gateway.service"
    proc = subprocess.run([analyze, "security", "--offline=yes", str(unit)], capture_output=True, text=True,
                          check=False)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    assert float(found.group(1)) <= 3.0 and found.group(2) == "OK", proc.stdout


def test_load_balancer_checks_readyz_on_the_metrics_port(template: dict[str, Any]) -> None:
    res = template["Resources"]
    assert template["Parameters"]["ReadinessPort"]["Default"] == "9090"
    tg = res["TargetGroup"]["Properties"]
    assert tg["HealthCheckProtocol"] == {"Fn::If": ["HasReadinessPort", "HTTP", "TCP"]}
    assert tg["HealthCheckPath"]["Fn::If"][1] == "/readyz"
    container = res["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    assert {m["ContainerPort"] for m in container["PortMappings"]} == {8080, 9090}
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env["JITGATE_WORKERS"] == "1"  # the task is 1 vCPU
    docker = (ROOT / "infra" / "gateway" / "Dockerfile").read_text()
    assert "EXPOSE 9090" in docker and '"--metrics-port", "9090"' in docker and '"--metrics-host", "0.0.0.0"' in docker
    unit = (ROOT / "infra" / "gateway" / "jitgate-gateway.service").read_text()
    assert "--metrics-port 9090" in unit
