"""Inspection speed and quality: jitgate's scanner against detect-secrets on the same rerank text.

Builds a ~5 MB Cohere-shaped rerank body with the seeded generator (tests/inspect/corpus.py:
secrets planted in prose, env files, JSON in JSON, YAML, code, URLs and logs; PII; negatives
such as UUIDs, git SHAs, SHA-256 digests, base64 images, `pk_test_` keys, version strings and
placeholders) and, in one run, measures on one core (best of `--repeat`; MB per CPU second of
this single-threaded process, so other processes on a shared machine do not count; wall-clock
figures are printed alongside in `wall_mb_s`):

- secrets_mask_mb_s: secrets found and masked (JSON-aware, decoded content included)
- secrets_pii_mask_mb_s: the same plus every PII type of the default profile
- block_decision_mb_s: the request-side decision (secrets only; findings with types and places),
  block_decision_clean_mb_s on a clean body of the same shape (every byte scanned, decoded too)
  and block_decision_sparse_mb_s on one with a handful of secrets; block_decision_text_mb_s and
  secrets_mask_text_mb_s on clean prose documents only (no negatives, so no base64 runs)
- detect_secrets_mb_s: detect-secrets' Python API (`scan_line`, default plugins) line by line over
  the documents of a prefix of the same body (`detect_secrets_sample_bytes`; it is too slow for
  all of it), and `ratio_vs_detect_secrets` = secrets_mask_mb_s / detect_secrets_mb_s
- recall_full_span: planted values (secrets and PII) covered over their full span by a finding;
  false_positives: findings that overlap no planted value (the negatives must give none)
- the same recall for detect-secrets on its sample, and the pure-`re` engine's speed.
- recall_pii (per PII type over every generated format: phones of eight regions in three forms,
  IBANs of twenty countries, cards of every major network and grouping, SSN in three forms, IPv4
  and IPv6 forms), recall_pii_min, and dense_secrets_mask_mb_s / dense_secrets_pii_mask_mb_s on a
  findings-dense body (a planted value every ~1 kB).
- recall_formats_min: the lowest secret format's share of cases masked whole over every context of
  tests/inspect/formats.py; benign_false_positives: findings on its benign corpus.

Run: .venv/bin/python benchmarks/scan.py --json
Instructions per dense scan: `valgrind --tool=callgrind .venv/bin/python benchmarks/scan.py --mb 0.5
--dense-loop N [--dense-pii]` for N = 3 and N = 1, the difference over 2.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jitgate.inspect import PII_TYPES, Scanner, ScanResult  # noqa: E402
from jitgate.policy import MaskProfile  # noqa: E402
from tests.inspect import corpus, formats  # noqa: E402

TARGETS = {
    "secrets_mask_mb_s": 200.0,
    "secrets_pii_mask_mb_s": 50.0,
    "block_decision_mb_s": 1000.0,
    "recall_full_span": 0.99,
    "recall_formats_min": 0.99,
    "recall_pii_min": 0.95,
}


WALL: dict[str, float] = {}


def best(fn: Callable[[], object], repeat: int, name: str = "") -> float:
    """Best CPU seconds of one call (per core: other processes' load does not count); wall kept aside."""
    fn()  # warm caches and lazily compiled patterns
    cpu, wall = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - t)
    if name:
        WALL[name] = min(wall)
    return max(min(cpu), 1e-6)


def quality(raw: bytes, result: ScanResult, planted: list[corpus.Planted]) -> tuple[float, int, dict[str, int]]:
    """(full-span recall over planted occurrences, false positives, misses per type)."""
    spans: list[tuple[int, int]] = []
    found = total = 0
    misses: dict[str, int] = {}
    for p in planted:
        occ = corpus.occurrences(raw, p.value)
        spans += occ
        for a, b in occ:
            total += 1
            if any(f.start <= a and b <= f.end for f in result.findings):
                found += 1
            else:
                misses[p.type] = misses.get(p.type, 0) + 1
    fps = sum(1 for f in result.findings if not any(a < f.end and f.start < b for a, b in spans))
    return (found / total if total else 1.0), fps, misses


def detect_secrets_run(text: str, planted: list[corpus.Planted]) -> tuple[float, float]:
    """detect-secrets line by line: (MB/s, share of planted secrets it reports over the full span)."""
    from detect_secrets.core.scan import scan_line
    from detect_secrets.settings import default_settings

    values: set[str] = set()
    with default_settings():
        t = time.process_time()
        for line in text.splitlines():
            values.update(s.secret_value or "" for s in scan_line(line))
        elapsed = time.process_time() - t  # CPU seconds, like the jitgate figures
    secrets_in_text = [p for p in planted if p.kind == "secret" and p.value in text]
    # Full span: some reported value contains the whole planted value (a PEM block spans lines).
    hit = sum(1 for p in secrets_in_text if any(p.value in v for v in values))
    return len(text.encode()) / elapsed / 1e6, (hit / len(secrets_in_text) if secrets_in_text else 1.0)


def pii_figures(scanner: Scanner, pii: frozenset[str], seed: int, mb: float, repeat: int) -> dict[str, Any]:
    """Issue 23's PII figures: recall per PII type over every generated format (corpus.pii_cases, in
    prose, JSON and log lines; full span, right type), the lowest as `recall_pii_min`, and secrets +
    PII + mask throughput on a findings-dense body (a planted value every ~1 kB, every type)."""
    found: dict[str, int] = {}
    total: dict[str, int] = {}
    missed: dict[str, int] = {}
    contexts = ("Record: {}, noted.", '{{"note": "{}"}}', "2026-01-02T03:04:05Z INFO user={} ok")
    for i in range(20):
        for typ, form, value in corpus.pii_cases(random.Random(seed + i)):
            for context in contexts:
                raw = context.format(value).encode()
                planted = value.removeprefix("SSN: ").encode()
                a = raw.index(planted)
                hit = any(f.type == typ and f.start <= a and a + len(planted) <= f.end
                          for f in scanner.scan(raw, pii=PII_TYPES, json_strings=True).findings)
                total[typ] = total.get(typ, 0) + 1
                found[typ] = found.get(typ, 0) + hit
                if not hit:
                    missed[form] = missed.get(form, 0) + 1
    recall = {t: round(found[t] / total[t], 4) for t in sorted(total)}
    dense = corpus.rerank_body(
        seed + 4, target_bytes=int(mb * 1e6), secret_rate=0.5, pii_rate=1.0, negative_rate=0.3, doc_words=150
    )
    raw = dense.encode()
    t_dense = best(lambda: scanner.scan(raw, pii=pii, json_strings=True).masked(raw), repeat, "dense_secrets_pii_mask")
    t_dense_s = best(lambda: scanner.scan(raw, json_strings=True).masked(raw), repeat, "dense_secrets_mask")
    return {
        "recall_pii": recall,
        "recall_pii_min": min(recall.values()),
        "recall_pii_cases": sum(total.values()),
        "recall_pii_missed_formats": missed,
        "dense_body_bytes": len(raw),
        "dense_planted": len(dense.planted),
        "dense_planted_types": len({p.type for p in dense.planted}),
        "dense_secrets_mask_mb_s": round(len(raw) / 1e6 / t_dense_s, 1),
        "dense_secrets_pii_mask_mb_s": round(len(raw) / 1e6 / t_dense, 1),
    }


def format_figures(scanner: Scanner) -> dict[str, Any]:
    """Issue 23's secret-format figures on the generated corpus of tests/inspect/formats.py (every
    provider format in every context: prose, env, JSON, YAML, code, log, %-encoded URL, JSON escapes,
    punctuation, a Kubernetes `Secret`'s base64): the share of each format's cases masked whole, the
    lowest as `recall_formats_min`, and the findings on the benign corpus (pagination and idempotency
    tokens, ids, hashes) as `benign_false_positives`."""
    done: dict[str, int] = {}
    total: dict[str, int] = {}
    for case in formats.secret_cases() + formats.extra_cases():
        total[case.format] = total.get(case.format, 0) + 1
        done[case.format] = done.get(case.format, 0) + (formats.missed(scanner, case) is None)
    recall = {f: round(done[f] / total[f], 4) for f in sorted(total)}
    benign = sum(
        len(scanner.scan(t.encode(), pii=formats.PII, json_strings=t.startswith("{")).findings)
        for t in formats.benign_cases()
    )
    return {
        "recall_formats_min": min(recall.values()),
        "recall_formats_count": len(recall),
        "recall_formats_cases": sum(total.values()),
        "recall_formats_below_1": {f: r for f, r in recall.items() if r < 1},
        "benign_cases": len(formats.benign_cases()),
        "benign_false_positives": benign,
    }


def dense_loop(args: argparse.Namespace) -> None:
    """`--dense-loop N`: the dense body of `pii_figures`, scanned and masked N times, nothing else."""
    raw = corpus.rerank_body(
        args.seed + 4, target_bytes=int(args.mb * 1e6), secret_rate=0.5, pii_rate=1.0, negative_rate=0.3, doc_words=150
    ).encode()
    scanner = Scanner(secrets.token_bytes(32), engine="auto")
    pii = frozenset(MaskProfile().pii_types) if args.dense_pii else frozenset()
    for _ in range(args.dense_loop):
        scanner.scan(raw, pii=pii, json_strings=True).masked(raw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--mb", type=float, default=5.0, help="body size in MB")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--ds-sample", type=int, default=256 * 1024, help="bytes of the body detect-secrets scans")
    ap.add_argument("--dense-loop", type=int, metavar="N", help="only scan the findings-dense body N times, print "
                    "nothing (for instruction counts: callgrind, N against a smaller N)")
    ap.add_argument("--dense-pii", action="store_true", help="with --dense-loop: secrets + PII + mask")
    args = ap.parse_args()
    if args.dense_loop is not None:
        dense_loop(args)
        return

    body = corpus.rerank_body(
        args.seed, target_bytes=int(args.mb * 1e6), secret_rate=0.05, pii_rate=0.1, negative_rate=0.3, doc_words=150
    )
    raw = body.encode()
    mb = len(raw) / 1e6
    pii = frozenset(MaskProfile().pii_types)
    scanner = Scanner(secrets.token_bytes(32), engine="auto")
    re_scanner = Scanner(secrets.token_bytes(32), engine="re")

    t_mask = best(lambda: scanner.scan(raw, json_strings=True).masked(raw), args.repeat, "secrets_mask")
    t_pii = best(lambda: scanner.scan(raw, pii=pii, json_strings=True).masked(raw), args.repeat, "secrets_pii_mask")
    t_block = best(lambda: scanner.contains_secret(raw), args.repeat, "block_decision")
    clean = corpus.rerank_body(
        args.seed + 1, target_bytes=int(args.mb * 1e6), secret_rate=0.0, pii_rate=0.1, negative_rate=0.3, doc_words=150
    ).encode()
    t_clean = best(lambda: scanner.contains_secret(clean), args.repeat)
    sparse = corpus.rerank_body(
        args.seed + 2, target_bytes=int(args.mb * 1e6), secret_rate=0.0012, pii_rate=0.1, negative_rate=0.3,
        doc_words=150,
    ).encode()
    t_sparse = best(lambda: scanner.contains_secret(sparse), args.repeat)
    prose = corpus.rerank_body(
        args.seed + 3, target_bytes=int(args.mb * 1e6), secret_rate=0.0, pii_rate=0.1, negative_rate=0.0,
        doc_words=150,
    ).encode()
    t_text = best(lambda: scanner.contains_secret(prose), args.repeat)
    t_text_mask = best(lambda: scanner.scan(prose, json_strings=True).masked(prose), args.repeat)
    t_re = best(lambda: re_scanner.scan(raw, json_strings=True).masked(raw), 1)

    secret_planted = [p for p in body.planted if p.kind == "secret"]
    recall_s, fp_s, miss_s = quality(raw, scanner.scan(raw, json_strings=True), secret_planted)
    full = scanner.scan(raw, pii=pii, json_strings=True)
    recall, fps, misses = quality(raw, full, body.planted)
    block = scanner.contains_secret(raw)

    # detect-secrets on the documents of a prefix of the same body, line by line.
    sample_docs: list[str] = []
    size = 0
    for doc in body.payload["documents"]:
        text = doc["text"] if isinstance(doc, dict) else doc
        sample_docs.append(text)
        size += len(text.encode())
        if size >= args.ds_sample:
            break
    sample = "\n".join(sample_docs)
    ds_mb_s, ds_recall = detect_secrets_run(sample, body.planted)

    out: dict[str, Any] = {
        "engine": scanner.engine_name,
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "body_bytes": len(raw),
        "documents": len(body.payload["documents"]),
        "planted_secrets": len(secret_planted),
        "planted_pii": len(body.planted) - len(secret_planted),
        "negatives": len(body.negatives),
        "secret_types_planted": len({p.type for p in secret_planted}),
        "secrets_mask_mb_s": round(mb / t_mask, 1),
        "secrets_pii_mask_mb_s": round(mb / t_pii, 1),
        "block_decision_mb_s": round(mb / t_block, 1),
        "block_findings": len(block.findings),
        # A clean body of the same shape: nothing found raw, so the decoded pass runs too.
        "block_decision_clean_mb_s": round(len(clean) / 1e6 / t_clean, 1),
        "block_clean_findings": len(scanner.contains_secret(clean).findings),
        # The same shape with a handful of secrets (a leaking request as it usually looks).
        "block_decision_sparse_mb_s": round(len(sparse) / 1e6 / t_sparse, 1),
        "block_sparse_findings": len(scanner.contains_secret(sparse).findings),
        # Prose documents only, clean (no negatives, so no base64 runs): most bodies (raw + decoded pass).
        "block_decision_text_mb_s": round(len(prose) / 1e6 / t_text, 1),
        "secrets_mask_text_mb_s": round(len(prose) / 1e6 / t_text_mask, 1),
        "re_engine_secrets_mask_mb_s": round(mb / t_re, 1),
        "detect_secrets_mb_s": round(ds_mb_s, 3),
        "detect_secrets_sample_bytes": len(sample.encode()),
        "ratio_vs_detect_secrets": round(mb / t_mask / ds_mb_s, 1),
        "recall_full_span": round(recall, 4),
        "recall_full_span_secrets": round(recall_s, 4),
        "detect_secrets_recall_full_span_secrets": round(ds_recall, 4),
        "false_positives": fps + fp_s,
        "wall_mb_s": {k: round(mb / v, 1) for k, v in WALL.items()},
        "misses": {**misses, **{f"secret:{k}": v for k, v in miss_s.items()}},
        "targets": TARGETS,
    }
    out.update(pii_figures(scanner, pii, args.seed, args.mb, args.repeat))
    out.update(format_figures(scanner))
    out["meets_targets"] = (
        all(out[k] >= v for k, v in TARGETS.items())
        and out["false_positives"] == 0
        and out["benign_false_positives"] == 0
    )
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:42s} {v}")


if __name__ == "__main__":
    main()
