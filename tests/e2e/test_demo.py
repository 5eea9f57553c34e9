"""`make demo` runs in CI: the whole story on the real local stack, and it must pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_make_demo_passes(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "jitgate.demo"],
        env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "JITGATE_DEMO_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    shown_steps = (
        "rerank answered", "leak_blocked", "[REDACTED:email:", "token_revoked", "psql answered the 3 nearest",
        "column_not_allowed", "an e-mail in a psql result is masked", "held for a search lead",
        "statement: DELETE FROM candidates", "approval_denied", "every candidate is still there", "demo passed",
    )
    for shown in shown_steps:
        assert shown in out, shown
    assert "@example.com" not in out.split("3. an e-mail", 1)[1]
