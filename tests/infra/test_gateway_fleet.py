from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


def _resources(template: dict[str, Any]) -> list[dict[str, Any]]:
    """The resources the template names itself (not the ones an Fn::ForEach makes)."""
    return [r for key, r in template["Resources"].items() if not key.startswith("Fn::ForEach::")]


def _for_each(template: dict[str, Any], name: str, values: list[str]) -> dict[str, dict[str, Any]]:
    """What AWS::LanguageExtensions makes of `Fn::ForEach::<name>` for `values` of its collection."""
    variable, _collection, body = template["Resources"][f"Fn::ForEach::{name}"]
    made: dict[str, dict[str, Any]] = {}
    for value in values:
        for logical_id, resource in body.items():
            text = json.dumps(resource).replace(json.dumps({"Ref": variable}), json.dumps(value))
            made[logical_id.replace(f"${{{variable}}}", value)] = json.loads(text.replace(f"${{{variable}}}", value))
    return made


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
    # The only writable paths: the spool, the confdir and the durable spool, each a volume; the
    # image's TMPDIR is the confdir.
    assert sorted(m["ContainerPath"] for m in container["MountPoints"]) == [
        "/var/lib/jitgate/ca", "/var/lib/jitgate/durable", "/var/lib/jitgate/spool",
    ]
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
    assert egress[0]["FromPort"] == 443  # the upstreams' ports: test_egress_allows_every_upstream_port_of_the_policy
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


def _sets(container: dict[str, Any]) -> dict[str, str]:
    command = container.get("Command", [])
    return dict(command[i + 1].split("=", 1) for i, a in enumerate(command) if a == "--set")


def test_the_stop_fits_in_the_stop_timeout_with_room_for_the_durable_spool(template: dict[str, Any]) -> None:
    from jitgate.durations import parse_seconds

    [container] = template["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    sets = _sets(container)
    drain, ship = parse_seconds(sets["jitgate_drain_timeout"]), parse_seconds(sets["jitgate_ship_timeout"])
    # Drain, ship, then the move of what is left (up to the 1 GiB spool quota) to EFS before SIGKILL.
    assert drain + ship + 30 <= container["StopTimeout"] <= 120, (drain, ship)


def test_unshipped_segments_outlive_the_task_on_an_access_point_of_the_fleet(template: dict[str, Any]) -> None:
    res = template["Resources"]
    task = res["TaskDefinition"]["Properties"]
    [container] = task["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    [mount] = [m for m in container["MountPoints"] if m["ContainerPath"] == env["JITGATE_DURABLE_SPOOL"]]
    [volume] = [v for v in task["Volumes"] if v["Name"] == mount["SourceVolume"]]
    efs = volume["EFSVolumeConfiguration"]
    assert efs["FilesystemId"] == {"Ref": "DurableSpoolFileSystem"}
    assert efs["TransitEncryption"] == "ENABLED"
    assert efs["AuthorizationConfig"] == {"AccessPointId": {"Ref": "DurableSpoolAccessPoint"}, "IAM": "ENABLED"}
    fs = res["DurableSpoolFileSystem"]
    assert fs["Properties"]["Encrypted"] is True and fs["DeletionPolicy"] == "Retain"
    denies = {st["Sid"]: st["Condition"] for st in fs["Properties"]["FileSystemPolicy"]["Statement"]
              if st["Effect"] == "Deny"}
    assert denies == {"TlsOnly": {"Bool": {"aws:SecureTransport": "false"}},
                      "AccessPointOnly": {"Null": {"elasticfilesystem:AccessPointArn": "true"}}}
    # The access point writes as the image's user, into a directory only that user may read.
    uid = re.search(r"useradd .*--uid (\d+)", (ROOT / "infra" / "gateway" / "Dockerfile").read_text())
    assert uid is not None
    ap = res["DurableSpoolAccessPoint"]["Properties"]
    assert ap["PosixUser"] == {"Uid": uid.group(1), "Gid": uid.group(1)}
    assert ap["RootDirectory"]["CreationInfo"] == {"OwnerUid": uid.group(1), "OwnerGid": uid.group(1),
                                                   "Permissions": "0700"}
    # The role mounts and writes through that access point only.
    [grant] = [s for s in _statements(template) if "elasticfilesystem" in str(s["Action"])]
    assert sorted(grant["Action"]) == ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
    assert grant["Resource"] == {"Fn::GetAtt": ["DurableSpoolFileSystem", "Arn"]}
    assert grant["Condition"] == {
        "StringEquals": {"elasticfilesystem:AccessPointArn": {"Fn::GetAtt": ["DurableSpoolAccessPoint", "Arn"]}}
    }


def test_nfs_flows_between_the_tasks_and_the_mount_targets_only(template: dict[str, Any]) -> None:
    res = template["Resources"]
    [nfs_in] = [r["Properties"] for r in _resources(template) if r["Type"] == "AWS::EC2::SecurityGroupIngress"]
    assert nfs_in["GroupId"] == {"Ref": "DurableSpoolSecurityGroup"}
    assert (nfs_in["FromPort"], nfs_in["ToPort"], nfs_in["SourceSecurityGroupId"]) == (
        2049, 2049, {"Ref": "TaskSecurityGroup"},
    )
    assert "SecurityGroupIngress" not in res["DurableSpoolSecurityGroup"]["Properties"]
    [nfs_out] = [r for r in res["TaskSecurityGroup"]["Properties"]["SecurityGroupEgress"]
                 if isinstance(r, dict) and r.get("FromPort") == 2049]
    assert nfs_out["DestinationSecurityGroupId"] == {"Ref": "DurableSpoolSecurityGroup"} and "CidrIp" not in nfs_out
    # One mount target per zone the tasks run in, and the tasks only where one is.
    targets = [r["Properties"] for r in _resources(template) if r["Type"] == "AWS::EFS::MountTarget"]
    subnets = [t["SubnetId"] for t in targets]
    assert all(t["SecurityGroups"] == [{"Ref": "DurableSpoolSecurityGroup"}] for t in targets)
    service = res["Service"]
    assert service["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]["Subnets"] == subnets
    assert res["LoadBalancer"]["Properties"]["Subnets"] == subnets
    assert {"DurableSpoolMountTargetA", "DurableSpoolMountTargetB"} <= set(service["DependsOn"])


def test_the_image_has_the_durable_spool_for_its_user() -> None:
    text = (ROOT / "infra" / "gateway" / "Dockerfile").read_text()
    [install] = [line for line in text.splitlines() if "install -d -o jitgate -g jitgate" in line]
    assert "/var/lib/jitgate/durable" in install.split()


def _policy_ports(path: Path) -> set[int]:
    """The ports of the policy's upstream URLs, read here without jitgate's policy model."""
    import yaml

    defaults = {"https": 443, "http": 80}
    urls = [urlsplit(c["upstream"]) for c in yaml.safe_load(path.read_text())["connections"].values()]
    return {u.port or defaults[u.scheme] for u in urls}


def test_egress_allows_every_upstream_port_of_the_policy_and_nothing_else(template: dict[str, Any]) -> None:
    from typer.testing import CliRunner

    from jitgate.commands.policy import app as policy_cli

    example = ROOT / "infra" / "policy.example.yaml"
    printed = CliRunner().invoke(policy_cli, ["ports", str(example)])
    assert printed.exit_code == 0, printed.output
    parameter = printed.output.strip().split(",")  # UpstreamPorts, as the deployment passes it
    wanted = _policy_ports(example)
    assert {443, 5432, 8000} <= wanted  # a vendor, the Postgres and the Chroma of the example
    assert template["Transform"] == "AWS::LanguageExtensions"
    assert template["Resources"]["Fn::ForEach::UpstreamEgress"][1] == {"Ref": "UpstreamPorts"}

    made = _for_each(template, "UpstreamEgress", parameter)
    rules = [r["Properties"] for r in made.values()]
    group = {"Fn::GetAtt": ["TaskSecurityGroup", "GroupId"]}
    assert all(r["GroupId"] == group and r["IpProtocol"] == "tcp" and r["CidrIp"] == {"Ref": "UpstreamCidr"}
               for r in rules), rules
    # No other egress of the tasks' group anywhere in the template.
    assert [r for r in _resources(template) if r["Type"] == "AWS::EC2::SecurityGroupEgress"] == []
    inline = template["Resources"]["TaskSecurityGroup"]["Properties"]["SecurityGroupEgress"]
    to_cidrs = [r for r in inline if "CidrIp" in r]
    assert [(r["FromPort"], r["ToPort"], r["CidrIp"]) for r in to_cidrs] == [(443, 443, "0.0.0.0/0")]
    [to_group] = [r for r in inline if "CidrIp" not in r]
    assert (to_group["FromPort"], to_group["DestinationSecurityGroupId"]) == (
        2049, {"Ref": "DurableSpoolSecurityGroup"},
    )
    allowed = {int(r["FromPort"]) for r in rules if r["FromPort"] == r["ToPort"]} | {443}
    assert allowed == wanted | {443}, (allowed, wanted)
    assert len(rules) == len(wanted)  # one rule a port, none for a port no connection uses
