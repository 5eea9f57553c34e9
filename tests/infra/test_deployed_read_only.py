"""The task as ECS runs it: the image's user (uid 10001, not root), a read-only root file system,
and only the spool, the confdir and the durable spool writable.

`jitgate gateway` gets exactly the command and environment of tests/e2e/test_deployed_gateway.py
(the Dockerfile's ENTRYPOINT and ENV, the task definition's Command and Environment, parsed), plus
what the image gives its user: HOME, the image's home, read-only like the rest. Here there is no
container engine, so the test makes the container's file system view itself, as root: a private
mount namespace (`unshare -m`) where the three volume directories are bind mounts of their own
and `/` is then remounted read-only (so is /tmp, the home and the code), and the process drops to
uid/gid 10001 with no supplementary groups and no new privileges (`setpriv`) before it execs the
command. The volume directories are 0700 and owned by 10001, as the Dockerfile's `install -d`
makes them. The code under test comes from this checkout (PYTHONPATH: the image installs it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jitgate.devstack.aws import DEFAULT_REGION, FAKE_CREDENTIALS, Stack
from jitgate.devstack.gateway import launch
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.upstream import Upstream
from tests.e2e.test_deployed_gateway import _policy, _put, container_launch
from tests.reliability.harness import client, records, rerank

REPO = Path(__file__).resolve().parents[2]
IMAGE_UID = 10001  # Dockerfile: useradd --uid 10001
WRITABLE = ("spool", "ca", "durable")  # the task definition's MountPoints under /var/lib/jitgate

# In the namespace, as root: (the interpreter's hidden parent shown, see _interpreter_path), the
# volumes as mounts of their own, `/` read-only, then the image's user execs the command.
_ENTER = (
    'root="$1"; hide="$2"; show="$3"; shift 3; '
    'if [ -n "$hide" ]; then mount --bind "$show" "$root/.stage" && mount -t tmpfs -o mode=0755 tmpfs "$hide" '
    '&& mkdir -p "$show" && mount --move "$root/.stage" "$show" || exit 96; fi; '
    'for d in ' + " ".join(WRITABLE) + '; do mount --bind "$root/$d" "$root/$d" || exit 97; done; '
    "mount -o remount,bind,ro / || exit 98; "
    f"exec setpriv --reuid {IMAGE_UID} --regid {IMAGE_UID} --clear-groups --no-new-privs -- \"$@\""
)


def _interpreter_path() -> tuple[str, str]:
    """(a directory other users cannot cross on the way to this Python, its child on that way), or
    ("", ""). Here the interpreter lives under /root (0700, pyenv); the image's is in /usr/local.
    The namespace then lays an empty tmpfs over that directory and only that child back on it, so
    the user reaches the interpreter and nothing else of root's home."""
    real = Path(os.path.realpath(sys.executable))
    for parent in reversed(real.parents):
        if not parent.stat().st_mode & 0o001:
            return str(parent), str(parent / real.relative_to(parent).parts[0])
    return "", ""


def _why_not_here() -> str | None:
    """Why the container's view cannot be made here, or None."""
    if os.geteuid() != 0:
        return "making a mount namespace and dropping to another uid needs root"
    for tool in ("unshare", "setpriv", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "mount", "-o", "remount,bind,ro", "/"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"unshare -m with a read-only remount of / fails here: {probe.stderr.strip()}"
    return None


@pytest.fixture
def var_lib_jitgate() -> Iterator[Path]:
    """/var/lib/jitgate: root's and read-only to the user (its home), the volumes 0700 and its own."""
    reason = _why_not_here()
    if reason:
        pytest.skip(reason)
    # Not under pytest's tmp_path: that is root's and 0700, so uid 10001 could not reach into it.
    with tempfile.TemporaryDirectory(prefix="jitgate-task-") as d:
        root = Path(d)
        root.chmod(0o755)
        (root / ".stage").mkdir()
        for name in WRITABLE:
            (root / name).mkdir(mode=0o700)
            os.chown(root / name, IMAGE_UID, IMAGE_UID)
        yield root


def _process_view(pid: int) -> tuple[int, str, set[str]]:
    """The process's real uid, the options of its `/` mount, and the mount points it may write."""
    uid = int(next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("Uid:")).split()[1])
    mounts = [line.split() for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()]
    root_opts = next(m[5] for m in mounts if m[4] == "/")
    writable = {m[4] for m in mounts if "rw" in m[5].split(",")}
    return uid, root_opts, writable


def test_the_task_runs_as_its_user_with_only_its_volumes_writable(
    var_lib_jitgate: Path, tmp_path: Path, policy_bucket: str, upstream: Upstream, broker: str,
    aws_stack: Stack, moto_server: str, oidc_issuer: OidcIssuer, mint: Callable[..., dict[str, Any]],
    mask_secret: str, fleet_ca: tuple[str, Path],
) -> None:
    root = var_lib_jitgate
    _put(moto_server, policy_bucket, _policy(oidc_issuer.url, upstream.url))
    params = {
        "GatewayCaSecretArn": fleet_ca[0],
        "PolicyS3Uri": f"s3://{policy_bucket}/gateway/policy.yaml",
        "PolicyRefreshSeconds": "1",
        "MaskKeySecretArn": mask_secret,
        "BrokerIssuer": broker,
        "JwksUrl": f"{broker}/.well-known/jwks.json",
        "TableName": aws_stack.table,
        "AuditBucketName": policy_bucket,
    }
    argv, env = container_launch(params, root)
    upstream_ca = root / "upstream-ca.pem"  # in the image's read-only part: readable, not writable
    upstream_ca.write_bytes(upstream.ca_pem())
    upstream_ca.chmod(0o644)
    env.update(FAKE_CREDENTIALS)
    env.update({
        "AWS_ENDPOINT_URL": moto_server, "AWS_REGION": DEFAULT_REGION, "JITGATE_UPSTREAM_CA": str(upstream_ca),
        "PATH": "/usr/bin:/bin", "HOME": str(root), "PYTHONPATH": str(REPO),
    })
    assert env["TMPDIR"] == str(root / "ca") and env["JITGATE_DURABLE_SPOOL"] == str(root / "durable")
    wrapped = ["unshare", "-m", "--propagation", "private", "sh", "-c", _ENTER, "sh", str(root), *_interpreter_path(),
               *argv]
    gw = launch(wrapped, confdir=root / "ca", env=env, log_lines=5000, timeout=60)
    with gw:
        uid, root_opts, writable = _process_view(gw.proc.pid)  # unshare, sh and setpriv exec: one pid
        assert uid == IMAGE_UID
        assert "ro" in root_opts.split(","), root_opts
        assert {str(root / name) for name in WRITABLE} <= writable
        assert not any(p == "/" or str(root).startswith(p.rstrip("/") + "/") for p in writable), writable
        bundle = gw.client_bundle(tmp_path / "bundle.pem")
        with client(gw, bundle, mint("cohere-test")["token"]) as c:
            assert rerank(c, upstream, "as-uid-10001").status_code == 200, "\n".join(gw.log)
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.proc.wait(timeout=120) == 0, "\n".join(gw.log)
    log = "\n".join(gw.log)
    assert "Read-only file system" not in log and "Permission denied" not in log, log
    shipped = records(moto_server, policy_bucket, socket.gethostname())  # the task's gateway id: its host name
    assert any("as-uid-10001" in str(r.get("rerank_query")) for r in shipped), log
    # What it wrote, it wrote as its user, in its volumes.
    owners = {p.stat().st_uid for name in WRITABLE for p in (root / name).rglob("*")}
    assert owners <= {IMAGE_UID}, owners
    assert (root / "ca" / "mitmproxy-ca.pem").stat().st_mode & 0o077 == 0
