from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import certifi
import pytest

from jitgate.capture import capture_unavailable_reason
from jitgate.client import Minted
from jitgate.run import JobEnv, job_environment, run_job, write_ca_bundle

MINTED = Minted(token="h.p.s", jti="j" * 32, expires_at=1, connection="cohere-prod", proxy_hint=None, key_env=())


def test_job_environment_sets_proxy_bundle_and_key(tmp_path: Path) -> None:
    env = job_environment(
        {"PATH": "/bin", "NO_PROXY": "api.cohere.com", "CO_API_KEY": "static"},
        MINTED,
        JobEnv("127.0.0.1:8080", tmp_path / "ca.pem", "CO_API_KEY"),
    )
    assert env["HTTPS_PROXY"] == "http://jit:h.p.s@127.0.0.1:8080"
    assert env["REQUESTS_CA_BUNDLE"] == env["SSL_CERT_FILE"] == str(tmp_path / "ca.pem")
    assert env["CO_API_KEY"] == "h.p.s"
    assert "api.cohere.com" not in env["NO_PROXY"]  # an inherited NO_PROXY does not bypass the gateway
    assert env["PATH"] == "/bin"


def test_ca_bundle_has_public_roots_and_gateway_ca(tmp_path: Path) -> None:
    ca = tmp_path / "gw.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\nGATEWAY\n-----END CERTIFICATE-----\n")
    bundle = write_ca_bundle(ca, tmp_path)
    text = bundle.read_bytes()
    assert text.startswith(Path(certifi.where()).read_bytes()[:200])
    assert text.rstrip().endswith(ca.read_bytes().rstrip())


@pytest.mark.parametrize("code", [0, 3, 42])
def test_run_job_propagates_status(code: int) -> None:
    assert run_job([sys.executable, "-c", f"raise SystemExit({code})"], {}) == code


def test_run_job_survives_sigterm_and_reports_signal(tmp_path: Path) -> None:
    """The wrapper forwards SIGTERM to the job and comes back, so it can revoke afterwards."""
    marker = tmp_path / "ran"
    script = tmp_path / "wrap.py"
    script.write_text(
        "import sys\n"
        "from jitgate.run import run_job\n"
        f"rc = run_job([sys.executable, '-c', 'import time; time.sleep(60)'], {{}})\n"
        f"open({str(marker)!r}, 'w').write(str(rc))\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)])
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert marker.read_text() == str(128 + signal.SIGTERM)


def test_capture_reason_names_the_cause(tmp_path: Path) -> None:
    old = capture_unavailable_reason(release="5.15.0-generic", cgroup_root=tmp_path)
    assert old is not None and "Linux >= 6.8" in old and "HTTPS_PROXY" in old
    no_v2 = capture_unavailable_reason(release="6.12.0", cgroup_root=tmp_path)
    assert no_v2 is not None and "cgroup v2" in no_v2
    (tmp_path / "cgroup.controllers").write_text("cpu io memory\n")
    assert capture_unavailable_reason(release="6.12.0", cgroup_root=tmp_path) is None


def test_pg_environment_sets_libpq_variables_and_drops_redirects(tmp_path: Path) -> None:
    from jitgate.run import pg_environment

    minted = Minted(
        token="h.p.s", jti="j" * 32, expires_at=1, connection="pg-dev", proxy_hint=None, key_env=None,
        dialect="postgres", database="ranking",
    )
    base = {"PGHOSTADDR": "10.0.0.9", "PGSERVICE": "prod", "PGOPTIONS": "-c role=x", "HOME": "/root"}
    env = pg_environment(base, minted, gateway="127.0.0.1:6432", ca_bundle=tmp_path / "b.pem", user="me")
    assert env["PGHOST"] == "127.0.0.1" and env["PGPORT"] == "6432" and env["PGDATABASE"] == "ranking"
    assert env["PGUSER"] == "me" and env["PGPASSWORD"] == "h.p.s" and env["PGSSLMODE"] == "verify-full"
    assert env["PGSSLROOTCERT"] == str(tmp_path / "b.pem") and env["HOME"] == "/root"
    assert not {"PGHOSTADDR", "PGSERVICE", "PGOPTIONS"} & set(env)
