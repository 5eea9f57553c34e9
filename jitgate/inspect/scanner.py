"""Scanning: rule matches → validated, de-overlapped findings and the edits that mask them.

Text is scanned raw with escape-aware rules (`\\"` quotes of JSON in JSON, `\\n` inside PEM
blocks), which is also how JSON bodies are scanned: a masked span never contains a quote or
cuts an escape, so replacing it inside a string keeps the JSON valid, with the same structure,
count and order. What raw scanning cannot see is decoded and scanned too: JSON strings with
`\\uXXXX` or `\\/` escapes (re-encoded after masking), base64 blobs above a size that decode to
text, and URL-encoded tokens (both masked whole).
"""

from __future__ import annotations

import binascii
import bisect
import json
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from operator import attrgetter
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

from jitgate.inspect import masking, validators
from jitgate.inspect.engine import Engine, RunProbe, make_engine
from jitgate.inspect.masking import Hit
from jitgate.inspect.rules import B64_PREFIXES, DECODER_RULES, MIN_BLOB, PII_RULES, SECRET_RULES, Rule

INJECTED = "injected_credential"
MARKER_RULE = Rule("redacted_marker", "secret", masking.MARKER.pattern.decode("ascii"), trigger=r"\[REDACTED:")
_B64_REST = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_HEAD_CHARS = 4 * 48  # base64 characters decoded first to tell text from binary
_B64_HEAD = re.compile(rb"[A-Za-z0-9+/]{0,%d}" % _HEAD_CHARS)
_URL_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~%+=&/:@-")
_URL_REST = re.compile(rb"[A-Za-z0-9._~%+=&/:@-]*")
_PRINTABLE = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}
_TEXT_BYTES = bytes(sorted(_PRINTABLE | set(range(0x80, 0x100))))
# A JSON string (unrolled: several times faster in `re` than `"(?:[^"\\]|\\.)*"`, same matches).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NUMBER_CHARS = frozenset(b"0123456789+-.eE")
# What may stand outside JSON strings: numbers and the literals, whitespace, the punctuation.
_BARE_CHARS = _NUMBER_CHARS | frozenset(b"truefalsn")
_JSON_SPACE = frozenset(b" \t\r\n")
# The key right before a JSON string value: `"key": ` (no escapes in it), at the end of the window.
_JSON_KEY_BEFORE = re.compile(rb'"([A-Za-z0-9_.-]{1,64})"[ \t]*:[ \t]*\Z')
_BEFORE_VALUE = frozenset(b":,[")
_AFTER_VALUE = frozenset(b",]}")
_JSON_PUNCT = _JSON_SPACE | frozenset(b":,[]{}")


class Edit(NamedTuple):
    """Replace `buf[start:end]` with `replacement`."""

    start: int
    end: int
    replacement: bytes
    anchor: int = -1  # start of the whole match the edit belongs to, when earlier than `start`

    @property
    def first(self) -> int:
        return self.anchor if 0 <= self.anchor < self.start else self.start


@dataclass
class ScanResult:
    findings: list[Hit] = field(default_factory=list)
    edits: list[Edit] = field(default_factory=list)

    @property
    def secrets(self) -> list[Hit]:
        return [f for f in self.findings if f.kind == "secret"]

    def masked(self, buf: bytes) -> bytes:
        if not self.edits:
            return buf
        parts: list[bytes] = []
        last = 0
        for e in sorted(self.edits, key=lambda e: e.start):
            parts.append(buf[last : e.start])
            parts.append(e.replacement)
            last = e.end
        parts.append(buf[last:])
        return b"".join(parts)


class _Candidate(NamedTuple):
    name: str
    kind: str
    start: int
    end: int
    priority: int
    anchor: int
    # Checked only when arbitration would pick the candidate (None: nothing to check).
    rule: Rule | None = None


# Tuples built without the Python-level `__new__` of a NamedTuple (busy bodies make thousands).
_candidate: Callable[[tuple[object, ...]], _Candidate] = partial(tuple.__new__, _Candidate)
_finding: Callable[[tuple[object, ...]], Hit] = partial(tuple.__new__, Hit)
_START = attrgetter("start")


class _Intervals:
    """Accepted, non-overlapping spans, for O(log n) overlap checks."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def overlaps(self, start: int, end: int) -> bool:
        i = bisect.bisect_right(self.starts, start)
        if i > 0 and self.ends[i - 1] > start:
            return True
        return i < len(self.starts) and self.starts[i] < end

    def add(self, start: int, end: int) -> None:
        i = bisect.bisect_right(self.starts, start)
        self.starts.insert(i, start)
        self.ends.insert(i, end)


class Scanner:
    """Detects secrets (always) and the PII types asked for, in one pass of one engine."""

    def __init__(self, key: bytes, *, engine: str = "auto", phone_regions: Sequence[str] | None = None) -> None:
        if len(key) < 16:
            raise ValueError("the masking key must be at least 16 bytes")
        self._tag = masking.Tagger(key)
        self.secret_rules: tuple[Rule, ...] = SECRET_RULES
        self.all_rules: tuple[Rule, ...] = SECRET_RULES + _with_phone_regions(PII_RULES, phone_regions)
        # Each engine also looks for the markers of an earlier masking (its last rule), so no
        # second pass over the text is needed to find them.
        self._secret_engine: Engine = make_engine((*self.secret_rules, MARKER_RULE), engine)
        self._all_engine: Engine = make_engine((*self.all_rules, MARKER_RULE), engine)
        self._decoder_engine: Engine = make_engine(DECODER_RULES, engine)
        # Most bodies hold no run of MIN_BLOB base64 characters and no base64 form of a secret
        # prefix: a quick probe says so, and then only the escape rules run (the base64 rule is
        # most of the decoder pass's cost).
        self._escape_engine: Engine = make_engine(DECODER_RULES[1:], engine)
        self._b64_probe: RunProbe | None = (
            RunProbe([rb"[A-Za-z0-9+/]{%d}" % MIN_BLOB, *(p.encode() for p in B64_PREFIXES)])
            if self._decoder_engine.name == "hyperscan"
            else None
        )
        self.engine_name = self._all_engine.name

    # -- candidates ------------------------------------------------------------------------------

    def _candidates(self, buf: bytes, pii: Collection[str], literals: Sequence[bytes]) -> list[_Candidate]:
        rules, engine = (self.all_rules, self._all_engine) if pii else (self.secret_rules, self._secret_engine)
        out: list[_Candidate] = []
        add = out.append
        marker = len(rules)
        for i, m in engine.matches(buf):
            if i == marker:  # markers of an earlier masking win over anything inside them (idempotence)
                add(_candidate(("", "marker", m.start(), m.end(), -9, m.start(), None)))
                continue
            rule = rules[i]
            if rule.kind == "pii" and rule.name not in pii:
                continue
            start, end = m.span("s") if rule.has_group else m.span()
            if start and buf[start - 1] == 0x5C:
                start = _after_escape(buf, start, end)
            if start < end:
                add(_candidate((rule.name, rule.kind, start, end, rule.priority, m.start(), rule)))
        for lit in literals:
            if len(lit) < 4:
                continue
            pos = buf.find(lit)
            while pos != -1:
                add(_candidate((INJECTED, "secret", pos, pos + len(lit), -1, pos, None)))
                pos = buf.find(lit, pos + len(lit))
        return out

    def _resolve(self, buf: bytes, candidates: list[_Candidate], encoding: str) -> list[Hit]:
        """Non-overlapping findings: secrets before PII, provider formats before generic rules."""
        tag = self._tag
        candidates.sort(key=_START)
        found: list[Hit] = []
        add = found.append
        n = len(candidates)
        i = 0
        while i < n:  # overlapping candidates form clusters; most clusters hold one
            c = candidates[i]
            cluster_end = c.end
            j = i + 1
            while j < n and candidates[j].start < cluster_end:
                cluster_end = max(cluster_end, candidates[j].end)
                j += 1
            if j == i + 1:
                if c.kind != "marker":
                    value = buf[c.start : c.end]
                    if c.rule is None or c.rule.valid(value):
                        add(_finding((c.name, c.kind, c.start, c.end, tag(value), encoding, c.anchor)))
            else:
                for c in _arbitrate(buf, candidates[i:j]):
                    add(_finding((c.name, c.kind, c.start, c.end, tag(buf[c.start : c.end]), encoding, c.anchor)))
            i = j
        return found

    # -- public ----------------------------------------------------------------------------------

    def scan(
        self,
        buf: bytes,
        *,
        pii: Collection[str] = (),
        literals: Sequence[bytes] = (),
        json_strings: bool = False,
        decode: bool = True,
        requote: bool = True,
    ) -> ScanResult:
        """Findings and masking edits for `buf`; `json_strings` when `buf` is JSON text (or holds
        JSON strings: `requote=False` for text that is not JSON as a whole, such as an event stream,
        where a match outside every string is masked as it stands)."""
        findings = self._resolve(buf, self._candidates(buf, pii, literals), "raw")
        result = ScanResult(findings, [Edit(f.start, f.end, masking.marker(f), f.anchor) for f in findings])
        if decode:
            self._decoded(buf, result, pii, literals, json_strings)
        if json_strings and requote and result.edits:
            result.edits = _quote_bare_edits(buf, result.edits)
        return result

    def tag(self, value: bytes) -> str:
        """The keyed tag of a whole value (what a marker of it carries), e.g. a column masked as a whole."""
        return self._tag(value)

    def may_find(self, values: Sequence[bytes], *, pii: Collection[str] = (), literals: Sequence[bytes] = ()) -> bool:
        """False only when `scan` would find nothing in any of `values` (one engine pass for all).

        The values are joined with `\n`. Every rule's edge conditions (lookbehinds, lookaheads,
        the `^`/`$` alternatives) accept a `\n` as they accept the edge of a lone value, so a match
        inside one value is a match in the joined text too; a candidate or a place to decode in
        the joined text means: scan the values one by one.
        """
        if not values:
            return False
        joined = b"\n".join(values)
        if any(c.kind != "marker" for c in self._candidates(joined, pii, literals)):
            return True
        return any(rule_id in (0, 1) for rule_id, _ in self._decoder_engine.matches(joined))

    def may_find_each(
        self, values: Sequence[bytes], *, pii: Collection[str] = (), literals: Sequence[bytes] = ()
    ) -> list[bool]:
        """For each of `values`: False only when `scan` (JSON strings decoded or not) would find
        nothing in it. One engine pass over the values joined with `\n`, as `may_find`.

        A candidate or a place to decode flags every value its span touches (one that straddles a
        separator flags both sides, and is never taken as a finding: the flagged values are then
        scanned alone). JSON escapes flag their value too, for values scanned as JSON text.
        """
        flags = [False] * len(values)
        if not values:
            return flags
        starts: list[int] = []
        pos = 0
        for v in values:
            starts.append(pos)
            pos += len(v) + 1
        joined = b"\n".join(values)
        spans = [(c.start, c.end) for c in self._candidates(joined, pii, literals) if c.kind != "marker"]
        spans.extend(m.span() for _, m in self._decoder_engine.matches(joined))
        last = len(values) - 1
        for start, end in spans:
            first = bisect.bisect_right(starts, start) - 1
            final = bisect.bisect_right(starts, max(start, end - 1)) - 1
            for k in range(max(first, 0), min(final, last) + 1):
                flags[k] = True
        return flags

    def contains_secret(self, buf: bytes, *, literals: Sequence[bytes] = ()) -> ScanResult:
        """The block decision: secrets only, raw first; the decoding pass only when raw is clean.

        Findings only (no masking edits for raw findings): a blocked request is not forwarded.
        """
        result = ScanResult(self._resolve(buf, self._candidates(buf, (), literals), "raw"))
        if not result.findings:
            self._decoded(buf, result, (), literals, json_strings=True)
        return result

    # -- decoded content -------------------------------------------------------------------------

    def _decoded(
        self, buf: bytes, result: ScanResult, pii: Collection[str], literals: Sequence[bytes], json_strings: bool
    ) -> None:
        regions: list[tuple[int, int, list[Hit], bytes]] = []
        starts: tuple[list[int], list[int], list[int]] = ([], [], [])
        if self._b64_probe is None or self._b64_probe(buf):
            for rule_id, m in self._decoder_engine.matches(buf):
                starts[rule_id].append(m.start())
        else:  # no base64 run anywhere: the escape rules alone (rule ids one lower)
            for rule_id, m in self._escape_engine.matches(buf):
                starts[rule_id + 1].append(m.start())
        if json_strings and starts[2]:
            regions.extend(self._json_escaped(buf, starts[2], pii, literals))
        regions.extend(self._blobs(buf, starts[0], pii, literals))
        regions.extend(self._urlencoded(buf, starts[1], pii, literals))
        if not regions:
            return
        taken = _Intervals()
        found: list[Hit] = []
        edits: list[Edit] = []
        for start, end, inner, replacement in sorted(regions, key=lambda r: (r[0], r[0] - r[1])):
            if not taken.overlaps(start, end):
                taken.add(start, end)
                found.extend(inner)
                edits.append(Edit(start, end, replacement))
        # A decoded region supersedes the raw findings inside it (it found them too).
        result.findings = [f for f in result.findings if not taken.overlaps(f.start, f.end)] + found
        result.edits = [e for e in result.edits if not taken.overlaps(e.start, e.end)] + edits
        result.findings.sort(key=lambda f: f.start)

    def _json_escaped(
        self, buf: bytes, escapes: list[int], pii: Collection[str], literals: Sequence[bytes]
    ) -> list[tuple[int, int, list[Hit], bytes]]:
        out: list[tuple[int, int, list[Hit], bytes]] = []
        done_until = -1
        for pos in escapes:
            if pos < done_until or _escaped(buf, pos):
                continue
            bounds = _string_bounds(buf, pos)
            if bounds is None:
                continue
            start, end = bounds
            done_until = end
            try:
                value = json.loads(buf[start:end])
            except ValueError:
                continue
            if not isinstance(value, str):
                continue
            decoded = value.encode("utf-8", "surrogatepass")
            # The string's key goes with it (`"client_secret": "…\/…"`): assignment rules need it.
            key = _JSON_KEY_BEFORE.search(buf, max(0, start - 80), start)
            prefix = key.group(1) + b": " if key is not None else b""
            inner = self.scan(prefix + decoded, pii=pii, literals=literals, decode=True)
            if prefix:
                n = len(prefix)
                inner.findings = [f for f in inner.findings if f.start >= n]
                inner.edits = [Edit(e.start - n, e.end - n, e.replacement) for e in inner.edits if e.start >= n]
            if inner.findings:
                masked = inner.masked(decoded).decode("utf-8", "surrogatepass")
                # The whole string is replaced: each finding's place is the string's.
                found = [Hit(f.type, f.kind, start, end, f.tag, "json-escape") for f in inner.findings]
                out.append((start, end, found, json.dumps(masked, ensure_ascii=False).encode("utf-8", "surrogatepass")))
        return out

    def _blobs(
        self, buf: bytes, starts: list[int], pii: Collection[str], literals: Sequence[bytes]
    ) -> list[tuple[int, int, list[Hit], bytes]]:
        out: list[tuple[int, int, list[Hit], bytes]] = []
        for start in dict.fromkeys(starts):  # a run that is long and prefixed is reported twice
            # The head first: most long runs are images, and an image's head is no text (a run
            # shorter than the head is matched whole, `=` padding included, as below).
            h = _B64_HEAD.match(buf, start)
            assert h is not None
            if h.end() - start < _HEAD_CHARS:
                h = _B64_REST.match(buf, start)
                assert h is not None
            head = _b64(h.group()[:_HEAD_CHARS])
            if head is None or not _is_text(head):
                continue
            m = _B64_REST.match(buf, start)
            assert m is not None
            blob = m.group()
            decoded = _b64(blob)
            if decoded is None or not _is_text(decoded):
                continue
            out.extend(self._whole(m.start(), m.end(), decoded, "base64", pii, literals))
        return out

    def _urlencoded(
        self, buf: bytes, escapes: list[int], pii: Collection[str], literals: Sequence[bytes]
    ) -> list[tuple[int, int, list[Hit], bytes]]:
        out: list[tuple[int, int, list[Hit], bytes]] = []
        done_until = -1
        for pos in escapes:
            if pos < done_until:
                continue
            start = pos
            while start > 0 and buf[start - 1] in _URL_CHARS:
                start -= 1
            start = _after_escape(buf, start, pos)
            m = _URL_REST.match(buf, pos)
            assert m is not None
            end = done_until = m.end()
            token = buf[start:end]
            decoded = unquote_to_bytes(token.replace(b"+", b" "))
            if decoded != token:
                out.extend(self._whole(start, end, decoded, "url", pii, literals))
        return out

    def _whole(
        self, start: int, end: int, decoded: bytes, encoding: str, pii: Collection[str], literals: Sequence[bytes]
    ) -> list[tuple[int, int, list[Hit], bytes]]:
        inner = self.scan(decoded, pii=pii, literals=literals, decode=False)
        if not inner.findings:
            return []
        first = min(inner.findings, key=lambda f: (f.kind != "secret", f.start))
        found = [Hit(f.type, f.kind, start, end, f.tag, encoding) for f in inner.findings]
        return [(start, end, found, masking.marker(first))]


def _with_phone_regions(rules: tuple[Rule, ...], regions: Sequence[str] | None) -> tuple[Rule, ...]:
    """`rules` with the phone rules reading numbers without `+` in `regions` (None: the defaults).

    Raises ValueError for a region `phonenumbers` does not know."""
    if regions is None:
        return rules
    check = validators.phone_in(tuple(regions))
    return tuple(replace(r, validator=check) if r.name == "phone" else r for r in rules)


def _valid(buf: bytes, c: _Candidate) -> bool:
    return c.rule is None or c.rule.valid(buf[c.start : c.end])


def _arbitrate(buf: bytes, cluster: list[_Candidate]) -> list[_Candidate]:
    """Non-overlapping valid picks from overlapping candidates: markers, then secrets before PII,
    provider formats before generic rules, longer before shorter; markers are not findings.

    Greedy in that order over the valid candidates; a candidate that overlaps a pick is dropped
    without running its validator (the same result as validating all first, for less work).
    """
    if len(cluster) == 1:
        c = cluster[0]
        return cluster if c.kind != "marker" and _valid(buf, c) else []
    if len(cluster) == 2:  # the usual pair (a provider key inside a generic assignment): they overlap
        first, second = sorted(cluster, key=_RANK)
        if _valid(buf, first):
            return [] if first.kind == "marker" else [first]
        return [second] if second.kind != "marker" and _valid(buf, second) else []
    taken: list[tuple[int, int]] = []  # a cluster holds a few candidates: a list beats bisection
    picked: list[_Candidate] = []
    for c in sorted(cluster, key=_RANK):
        start, end = c.start, c.end
        for a, b in taken:
            if a < end and start < b:
                break
        else:
            if _valid(buf, c):
                taken.append((start, end))
                if c.kind != "marker":
                    picked.append(c)
    picked.sort(key=_START)
    return picked


def _rank(c: _Candidate) -> tuple[bool, int, int, int]:
    return (c.kind == "pii", c.priority, c.start - c.end, c.start)


_RANK = _rank


def _b64(blob: bytes) -> bytes | None:
    try:  # `base64.b64decode` without its Python-level argument handling
        return binascii.a2b_base64(blob + b"=" * (-len(blob) % 4), strict_mode=False)
    except (binascii.Error, ValueError):
        return None


def _quote_bare_edits(buf: bytes, edits: list[Edit]) -> list[Edit]:
    """In JSON text, a match outside every string lies in a number (`"password": 8412.5e3`):
    replace the whole number with a quoted marker, so the masked body is still JSON.

    Whether an edit lies in a string is decided by the strings before it, but most edits show
    it from their neighbourhood alone (`_clearly_in_string`); the strings are matched only up to
    the last edit that does not, so a body whose findings all sit in prose costs no pass at all.
    """
    out: list[Edit] = []
    strings: Iterator[re.Match[bytes]] | None = None
    current: re.Match[bytes] | None = None
    covered = -1
    for e in sorted(edits, key=lambda e: e.start):
        if _clearly_in_string(buf, e.start):
            out.append(e)
            continue
        if strings is None:
            strings = _JSON_STRING.finditer(buf)
            current = next(strings, None)
        while current is not None and current.end() <= e.start:
            current = next(strings, None)
        if current is not None and current.start() <= e.start:  # in a string, or a whole string
            out.append(e)
            continue
        start, end = e.start, e.end
        while start > 0 and buf[start - 1] in _NUMBER_CHARS:
            start -= 1
        while end < len(buf) and buf[end] in _NUMBER_CHARS:
            end += 1
        if start < covered:  # a second finding in a number already replaced whole
            continue
        out.append(Edit(start, end, b'"' + e.replacement + b'"', e.anchor))
        covered = end
    return out


def _clearly_in_string(buf: bytes, pos: int) -> bool:
    """True when `pos` cannot lie outside the strings of valid JSON text. Outside them, `pos`
    is whitespace, punctuation, or in a number or literal led by `:`, `,`, `[` (or nothing)
    and followed by `,`, `]`, `}` (or nothing), whitespace aside. False means: look it up."""
    c = buf[pos]
    if c == 0x22:  # a quote opens or closes a string
        return True
    if c not in _BARE_CHARS:
        return c not in _JSON_PUNCT
    left = pos
    while left > 0 and buf[left - 1] in _BARE_CHARS:
        left -= 1
    while left > 0 and buf[left - 1] in _JSON_SPACE:
        left -= 1
    if left > 0 and buf[left - 1] not in _BEFORE_VALUE:
        return True
    right = pos
    n = len(buf)
    while right < n and buf[right] in _BARE_CHARS:
        right += 1
    while right < n and buf[right] in _JSON_SPACE:
        right += 1
    return right < n and buf[right] not in _AFTER_VALUE


def _is_text(data: bytes) -> bool:
    """Decoded bytes worth scanning: UTF-8 text, mostly printable (images and keys are not)."""
    head = data[:512]
    # Printable or not ASCII: what is left once those bytes are deleted is the rest (checked
    # first: most blobs are images, and this is cheaper than a failed decode).
    if not head or len(head) - len(head.translate(None, _TEXT_BYTES)) < 0.95 * len(head):
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # a character cut at the end of the sample is fine
            return False
    return True


def _string_bounds(buf: bytes, pos: int) -> tuple[int, int] | None:
    """[opening quote, after closing quote) of the JSON string holding the escape at `pos`."""
    start = buf.rfind(b'"', 0, pos)
    while start > 0 and _escaped(buf, start):
        start = buf.rfind(b'"', 0, start)
    if start < 0:
        return None
    end = pos
    while True:
        end = buf.find(b'"', end)
        if end < 0:
            return None
        if not _escaped(buf, end):
            return start, end + 1
        end += 1


def _after_escape(buf: bytes, start: int, end: int) -> int:
    """Move a span's start off the letter of a backslash escape, so masking never cuts one."""
    while start < end and start > 0 and buf[start - 1] == 0x5C and not _escaped(buf, start - 1):
        start += 5 if buf[start] == 0x75 else 1
    return min(start, end)


def _escaped(buf: bytes, pos: int) -> bool:
    n = 0
    while pos - n - 1 >= 0 and buf[pos - n - 1] == 0x5C:
        n += 1
    return n % 2 == 1


def open_string_start(buf: bytes, cut: int, floor: int = 0) -> int | None:
    """The opening quote of the JSON string `cut` may fall in, or None: the last unescaped quote
    on `cut`'s line (a JSON string holds no raw line break), not before `floor`. A stream is not
    cut inside a string: its escapes can be decoded only once it is whole. The quote found may
    close a string instead; holding back from it then only costs a little more waiting."""
    line = buf.rfind(b"\n", floor, cut) + 1 or floor
    q = buf.rfind(b'"', line, cut)
    while q > line and _escaped(buf, q):
        q = buf.rfind(b'"', line, q)
    if q < max(line, floor) or _escaped(buf, q):
        return None
    return q
