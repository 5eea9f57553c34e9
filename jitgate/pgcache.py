"""The Postgres path's decision cache: a statement text read and judged once per scope.

A repeated statement (a prepared statement parsed on every new connection, a driver's fixed
introspection query, the same point SELECT with other parameters) costs a libpg_query parse, a
walk and a scope check each time. `DecisionCache.decide` keeps, per (text, schema, scope), what
`jitgate.pgsql.analyze` and `jitgate.pgsql.statement_error` answered: the statements, or the
refusal. The key holds the token's whole scope, so a token of another grant (other operations,
tables or columns) never reuses a decision made for a different one; a hit returns the very
decision a miss computes (both are pure functions of the key). Bounded: at most `size` entries,
least recently used out first, and texts longer than `max_text` bytes are not kept (a cache of
1 MB statements would be a memory bomb). What depends on the session or the token beyond its
scope (an aborted transaction, `max_bytes`, the token's validity, holds) is checked every time.
"""

from __future__ import annotations

from collections import OrderedDict

from jitgate.errors import JitgateError
from jitgate.pgsql import Statement, analyze, statement_error
from jitgate.token import Scope

DEFAULT_SIZE = 2048
DEFAULT_MAX_TEXT = 16 * 1024

Decision = tuple[tuple[Statement, ...], JitgateError | None]


def judge(sql: str, scope: Scope, schema: str) -> Decision:
    """The uncached decision: every statement of `sql` and the first refusal (None: all allowed)."""
    try:
        stmts = tuple(analyze(sql, schema=schema))
    except JitgateError as unread:
        return (), unread
    for stmt in stmts:
        refused = statement_error(stmt, scope, schema=schema)
        if refused is not None:
            return stmts, refused
    return stmts, None


class DecisionCache:
    def __init__(self, size: int = DEFAULT_SIZE, *, max_text: int = DEFAULT_MAX_TEXT) -> None:
        self.size = size
        self.max_text = max_text
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, str, Scope], Decision] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def decide(self, sql: str, scope: Scope, schema: str) -> Decision:
        key = (sql, schema, scope)
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return found
        self.misses += 1
        decision = judge(sql, scope, schema)
        if self.size > 0 and _small(sql, self.max_text):
            self._entries[key] = decision
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return decision


def _small(sql: str, max_text: int) -> bool:
    """`sql` is at most `max_text` bytes of UTF-8 (a character is 1 to 4 bytes: encode only when unsure)."""
    if len(sql) > max_text:
        return False
    return len(sql) * 4 <= max_text or len(sql.encode("utf-8", "replace")) <= max_text
