"""`benchmarks/load.py` as a proof case (slow: `make proof`): 10,000 reranks at concurrency 32 through
the full chain and a bare mitmdump; no unexpected error on either path and every request's
session record in S3. Speed figures are printed, never asserted (they live in docs/performance.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_load_has_no_unexpected_errors_and_every_record_arrives() -> None:
    run = subprocess.run(
        [sys.executable, "benchmarks/load.py", "--json"], cwd=REPO, capture_output=True, text=True, timeout=1700
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    print(json.dumps(result))
    assert result["jitgate_unexpected_errors"] == 0 and result["bare_unexpected_errors"] == 0
    assert result["records_in_s3"] == result["records_expected"] == result["jitgate_sent"]
    assert result["records_match"] and result["gateway_alive"]
    assert run.returncode == 0
