"""Multi-pattern matching: one Hyperscan database compiled at start, or pure `re` with the same results.

Both engines return, per rule, exactly the matches `rule.regex.finditer(buf)` would return.
The `re` engine does just that. The Hyperscan engine scans once for all rules, then asks `re`
to confirm: at each reported start for rules with a trigger (a literal-ish prefix every match
begins with), else inside the reported regions: start-of-match regions where the rule
compiles with SOM_LEFTMOST, else `[end - max_len, end)`. Hyperscan patterns are supersets of
the `re` patterns (edge lookarounds dropped), so every `re` match lies inside one region, and
the confirming search sees enough text after the region (`max_len`) that no assertion is cut.
"""

from __future__ import annotations

import contextlib
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from itertools import groupby
from operator import itemgetter
from typing import Any, Protocol

from jitgate.inspect.rules import _LOOKAROUND, Rule

try:  # pragma: no cover - exercised by the engine-choice tests
    import hyperscan

    HAVE_HYPERSCAN = True
except ImportError:  # pragma: no cover
    hyperscan = None  # type: ignore[assignment]
    HAVE_HYPERSCAN = False

RuleMatch = tuple[int, re.Match[bytes]]
_LEADING_LOOKAROUNDS = re.compile(rf"^(?:{_LOOKAROUND.pattern})+")


class Engine(Protocol):
    name: str

    def matches(self, buf: bytes) -> list[RuleMatch]:
        """(rule index, match) for every match of every rule, ordered by rule then start."""
        ...


def at_starts(buf: bytes, rule: Rule, starts: Iterable[int]) -> Iterator[re.Match[bytes]]:
    """`rule.regex.finditer(buf)`, given every position where a match may start (sorted or not).

    A trigger is a prefix of its rule's pattern, so every match starts where the trigger
    matches; trying those positions in order and skipping the ones inside the last match gives
    exactly the leftmost, non-overlapping matches `finditer` would.
    """
    match = rule.regex.match
    last_end = -1
    for start in sorted(set(starts)):
        if start < last_end:
            continue
        m = match(buf, start)
        if m is not None:
            yield m
            last_end = m.end()


class ReEngine:
    """The pure-Python path: each rule's regex over the whole buffer.

    Rules with a trigger search for the trigger first (Python's `re` finds a literal prefix
    quickly) and confirm at each place it matches; the others run `finditer`. Same matches.
    """

    name = "re"

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self._triggers = tuple(_trigger(r) for r in self.rules)

    def matches(self, buf: bytes) -> list[RuleMatch]:
        out: list[RuleMatch] = []
        lower: bytes | None = None
        for i, (rule, trigger) in enumerate(zip(self.rules, self._triggers, strict=True)):
            if trigger is None:
                out.extend((i, m) for m in rule.regex.finditer(buf))
                continue
            regex, folded = trigger
            if folded and lower is None:
                lower = buf.lower()
            hay = lower if folded and lower is not None else buf
            starts: list[int] = []
            t = regex.search(hay)
            while t is not None:  # every start, overlapping ones too
                starts.append(t.start())
                t = regex.search(hay, t.start() + 1)
            out.extend((i, m) for m in at_starts(buf, rule, starts))
        return out


def _trigger(rule: Rule) -> tuple[re.Pattern[bytes], bool] | None:
    """The trigger regex, and whether it runs on the lower-cased buffer.

    `re` finds a case-insensitive keyword alternation slowly; the same keywords in lower case
    over `buf.lower()` (same length, same offsets) are found several times faster.
    """
    if not rule.trigger:
        return None
    # Lookbehinds leading the trigger are checked where the rule's regex is matched: the search
    # looks for what follows them.
    text = _LEADING_LOOKAROUNDS.sub("", rule.trigger, count=1)
    if text.startswith("(?i:"):
        body, rest = text[4 : text.index(")")], text[text.index(")") :]
        plain_rest = re.sub(r"\\.", "", rest)  # escapes such as \t are not letters to fold
        if "(" not in body and body == body.lower() and not re.search(r"[A-Za-z]", plain_rest):
            return re.compile(("(?:" + text[4:]).encode("ascii")), True
    return re.compile(text.encode("ascii")), False


def _compiles(pattern: bytes, flags: int) -> bool:
    assert hyperscan is not None
    db = hyperscan.Database()
    try:
        db.compile(expressions=[pattern], ids=[0], elements=1, flags=[flags])
    except hyperscan.error:
        return False
    return True


class HyperscanEngine:
    """One block-mode database for all rules; `re` confirms inside the reported regions."""

    name = "hyperscan"

    def __init__(self, rules: Sequence[Rule]) -> None:
        if hyperscan is None:
            raise RuntimeError("hyperscan is not installed")
        self.rules = tuple(rules)
        som = hyperscan.HS_FLAG_SOM_LEFTMOST
        self._som = tuple(not r.hs_ends and _compiles(r.hs_pattern, som) for r in self.rules)
        for rule, has_som in zip(self.rules, self._som, strict=True):
            if rule.trigger and not has_som:
                raise ValueError(f"rule {rule.name}: its trigger must compile with start of match")
        # A trigger reports where a match may start: the region runs on for the rule's max length.
        # An `hs_ends` pattern reports where one may end (or just after, past a boundary it
        # consumes): the region reaches back as far as both together.
        self._back = tuple(r.max_len + r.hs_max_len if r.hs_ends else r.hs_max_len for r in self.rules)
        # A match never starts more than the rule's max length (or its Hyperscan pattern's, which
        # may consume a boundary byte after the match) before a report's end: a start of match
        # further left (an unbounded `+` in a Hyperscan pattern) is clamped to that.
        self._reach = tuple(max(r.max_len, r.hs_max_len) for r in self.rules)
        self._ahead = tuple(r.max_len if r.trigger else 0 for r in self.rules)
        # One database for the rules, and one of its own for each `hs_alone` rule.
        groups = [[i for i, r in enumerate(self.rules) if not r.hs_alone]]
        groups += [[i] for i, r in enumerate(self.rules) if r.hs_alone]
        self._dbs: list[Any] = []
        for ids in filter(None, groups):
            db = hyperscan.Database()
            db.compile(
                expressions=[self.rules[i].hs_pattern for i in ids],
                ids=ids,
                elements=len(ids),
                flags=[som if self._som[i] else 0 for i in ids],
            )
            self._dbs.append(db)

    @property
    def som_rules(self) -> int:
        return sum(self._som)

    def reports(self, buf: bytes) -> list[tuple[int, int, int]]:
        """(rule index, start (0 for a rule without start of match), end) of every report, sorted."""
        hits: list[tuple[int, int, int]] = []
        add = hits.append

        def on_match(rule_id: int, start: int, end: int, flags: int, context: Any) -> None:
            add((rule_id, start, end))

        for db in self._dbs:
            db.scan(buf, match_event_handler=on_match)
        hits.sort()
        return hits

    def regions(self, buf: bytes) -> dict[int, list[tuple[int, int]]]:
        """Candidate regions per rule index, as reported."""
        hits: dict[int, list[tuple[int, int]]] = defaultdict(list)
        som, back, ahead, reach = self._som, self._back, self._ahead, self._reach
        for rule_id, start, end in self.reports(buf):
            a = max(start, end - reach[rule_id]) if som[rule_id] else max(0, end - back[rule_id])
            hits[rule_id].append((a, end + ahead[rule_id]))
        return hits

    @staticmethod
    def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        spans = sorted(spans)
        out = [spans[0]]
        for a, b in spans[1:]:
            la, lb = out[-1]
            if a < lb:
                if b > lb:
                    out[-1] = (la, b)
            else:
                out.append((a, b))
        return out

    def _confirm(self, buf: bytes, rule: Rule, a: int, b: int) -> Iterator[re.Match[bytes]]:
        endpos = min(len(buf), b + rule.max_len + 1)
        pos = a
        search = rule.regex.search
        not_lead = _NOT_LEAD[rule.hs_lead] if rule.hs_lead is not None else None
        while pos < b:
            if not_lead is not None and not buf[pos:b].translate(None, not_lead):
                return  # no byte left where a match could start
            m = search(buf, pos, endpos)
            if m is None or m.start() >= b:
                return
            yield m
            pos = m.end() if m.end() > m.start() else m.start() + 1

    def matches(self, buf: bytes) -> list[RuleMatch]:
        out: list[RuleMatch] = []
        add = out.append
        rules, som, back, ahead, reach = self.rules, self._som, self._back, self._ahead, self._reach
        # Reports come sorted by rule, then start: one run per rule.
        for rule_id, run in groupby(self.reports(buf), key=itemgetter(0)):
            rule = rules[rule_id]
            if rule.trigger:  # `at_starts` over the run's starts, inlined (one call per report adds up)
                match = rule.regex.match
                last_end = -1
                for _, start, _ in run:
                    if start >= last_end:
                        m = match(buf, start)
                        if m is not None:
                            add((rule_id, m))
                            last_end = m.end() if m.end() > start else start + 1
                continue
            has_som, reach_r, back_r, ahead_r = som[rule_id], reach[rule_id], back[rule_id], ahead[rule_id]
            if rule.hs_run is not None:
                regions = _run_regions(buf, run, back_r, rule.hs_run, rule.hs_run_skip)
            else:
                regions = self._merge([
                    (max(start, end - reach_r) if has_som else max(0, end - back_r), end + ahead_r)
                    for _, start, end in run
                ])
            for a, b in regions:
                out.extend((rule_id, m) for m in self._confirm(buf, rule, a, b))
        return out


class _NotLead(dict[bytes, bytes]):
    """Per set of lead bytes, the bytes to delete so that only lead bytes remain."""

    def __missing__(self, lead: bytes) -> bytes:
        self[lead] = value = bytes(sorted(set(range(256)) - set(lead)))
        return value


_NOT_LEAD = _NotLead()


def _run_regions(
    buf: bytes, reports: Iterable[tuple[int, int, int]], back: int, chars: bytes, skip: int
) -> list[tuple[int, int]]:
    """Merged confirm regions of an `hs_ends` rule whose matches are runs of `chars` up to `skip`
    bytes before each reported end, each led by a byte not in `chars`: a region starts where that
    run starts (no earlier than the window of `back` bytes), so `re` does not search the text
    before it. Reports come sorted by end; so do the regions."""
    regions: list[tuple[int, int]] = []
    last_a, last_b = -1, -1
    for _, _, end in reports:
        stop = end - skip
        if stop <= last_b:  # in the previous region's run: the region grows
            last_b = end
            regions[-1] = (last_a, end)
            continue
        a = max(0, end - back)
        a += len(buf[a:stop].rstrip(chars))
        if a < last_b:
            last_b = end
            regions[-1] = (last_a, end)
            continue
        last_a, last_b = a, end
        regions.append((a, end))
    return regions


class RunProbe:
    """Whether a buffer holds a match of any of `expressions` (a run of one class, literals): one
    Hyperscan pass that stops at the first, so a buffer without any costs a fast scan instead of a
    full rule pass."""

    def __init__(self, expressions: Sequence[bytes]) -> None:
        if hyperscan is None:
            raise RuntimeError("hyperscan is not installed")
        self._db = hyperscan.Database()
        self._db.compile(
            expressions=list(expressions),
            ids=list(range(len(expressions))),
            elements=len(expressions),
            flags=[hyperscan.HS_FLAG_SINGLEMATCH] * len(expressions),
        )

    def __call__(self, buf: bytes) -> bool:
        found: list[int] = []

        def on_match(rule_id: int, start: int, end: int, flags: int, context: Any) -> bool:
            found.append(end)
            return True  # stop: one is enough

        with contextlib.suppress(hyperscan.ScanTerminated):
            self._db.scan(buf, match_event_handler=on_match)
        return bool(found)


def make_engine(rules: Sequence[Rule], prefer: str = "auto") -> Engine:
    """Hyperscan when available (or asked for), else the `re` engine."""
    if prefer == "re" or (prefer == "auto" and not HAVE_HYPERSCAN):
        return ReEngine(rules)
    return HyperscanEngine(rules)
